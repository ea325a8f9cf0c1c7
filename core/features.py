"""Feature building: a validated transaction plus per-card state -> the model's input.

Pure code, no Kafka: the live scorer, `evaluate` and the MLflow model all use it. Every
feature is causal: it depends only on this record, the card's earlier records, and labels
that arrived before the record is scored (`observe_label`); never on a later record.

Dense features (always present, one matrix column each):
- amount: the amount as sent.
- log_amount: log(1 + amount); spending is heavy-tailed.
- hour: hour of day of the event time, UTC (0-23).
- day_of_week: Monday=0 .. Sunday=6, UTC.
- is_night: 1 if the hour is 0-5 UTC.
- log_seconds_since_last: log(1 + seconds since the card's previous transaction); capped at
  30 days for a card's first transaction.
- first_seen: 1 for a card's first transaction seen by this scorer.
- log_amount_ratio: log((1 + amount) / (1 + previous amount)); 0 on first sight.
- velocity_1h: exponentially decayed count of the card's transactions, this one included
  (1 h time constant).
- country_changed: 1 if the country differs from the card's previous known country.
- velocity_24h: as velocity_1h with a 24 h time constant.
- log_spend_24h: log(1 + exponentially decayed sum of the card's amounts, 24 h constant).
- amount_zscore: log_amount against the card's running mean and spread of log amounts
  (recent purchases weigh more; once the card has HABIT_AFTER transactions, an outlier moves
  them only as far as OUTLIER_Z spreads); 0 on first sight.
- log_gap_vs_usual: log(1 + seconds since last) minus the card's running mean of it; negative
  when the card transacts faster than usual; 0 until the card has a gap to compare with.
- hour_unusual: 1 - cosine similarity between this hour of day and the card's running mean
  hour (on the 24 h circle, scaled by how regular the card is): 0 at its usual hours, up to
  2 at the opposite hour; 0 on first sight.
- country_new: 1 if the country is none of the card's last few distinct countries.
- merchant_new: 1 if the merchant is none of the card's last few distinct merchants.
- merchant_risk_1d, merchant_risk_7d, merchant_risk_30d: the merchant's smoothed fraud share
  among its labelled transactions of about the last 1, 7 and 30 days that labels reach
  (exponentially decayed in event time on the label clock), counting only labels that have
  arrived; the global share for a merchant without labels. Computed by `core.label_state`,
  which the trainer ships to the scorers inside each snapshot.
- category_risk, country_risk: the same over about 7 days, for the category and the country.
- amount_excess, amount_excess_sq: amount_zscore where positive (0 otherwise), and its square:
  a linear model cannot otherwise make an amount far above the card's habit count more than
  linearly, nor stop a low amount from counting against fraud.
Sparse one-hot features (present only when set): `merchant_category=<v>`, `channel=<v>`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import numpy as np

from core import transaction_fields as tx_field
from core.byte_hash import hash_strings
from core.card_table import CardSlots
from core.contracts import Transaction
from core.features_compiled import card_features
from core.label_state import FEATURES as LABEL_FEATURES
from core.label_state import LabelState
from core.vocabulary import ONE_HOT, Vocabulary

DENSE_FEATURES: tuple[str, ...] = (
    "amount",
    "log_amount",
    "hour",
    "day_of_week",
    "is_night",
    "log_seconds_since_last",
    "first_seen",
    "log_amount_ratio",
    "velocity_1h",
    "country_changed",
    "velocity_24h",
    "log_spend_24h",
    "amount_zscore",
    "log_gap_vs_usual",
    "hour_unusual",
    "country_new",
    "merchant_new",
    *LABEL_FEATURES,
    "amount_excess",
    "amount_excess_sq",
)
# Columns of the label-fed features (after the per-card ones).
LABEL_COLUMNS = slice(17, 17 + len(LABEL_FEATURES))
_ZSCORE = DENSE_FEATURES.index("amount_zscore")
_EXCESS = DENSE_FEATURES.index("amount_excess")
FIRST_SEEN_GAP_S = 30 * 24 * 3600.0
VELOCITY_TAU_S = 3600.0
VELOCITY_DAY_TAU_S = 24 * 3600.0
# Running per-card means weigh the last ~1/HABIT_ALPHA transactions (a plain mean before).
HABIT_ALPHA = 0.05
# Floor on the variance of log amounts: a card that always pays the same is not infinitely
# surprised by a small change.
AMOUNT_VAR_FLOOR = 0.1
# Once a card has this many transactions, an amount beyond OUTLIER_Z spreads from its habit
# moves the habit only as far as OUTLIER_Z spreads (winsorised): a stolen card's spree keeps
# standing out instead of becoming the new habit.
HABIT_AFTER = 5.0
OUTLIER_Z = 2.0
RECENT_COUNTRIES = 4
RECENT_MERCHANTS = 8

_HOUR_COS = np.cos(np.arange(24) * (2 * np.pi / 24))
_HOUR_SIN = np.sin(np.arange(24) * (2 * np.pi / 24))

# Per-card state, one row (slot) per card in two arrays. Numeric columns:
_LAST_TS, _LAST_AMOUNT, _V1, _V24, _S24, _MEAN, _VAR, _GAP_MEAN, _N, _HC, _HS = range(11)
_NUMERIC = 11
_HASH_MASK = 0x7FFFFFFF
# Key columns (31-bit hashes of strings, 0 = none): last known country, recent distinct
# countries, recent distinct merchants (most recent first).
_KEY_COUNTRY = 0
_COUNTRIES = slice(1, 1 + RECENT_COUNTRIES)
_MERCHANTS = slice(1 + RECENT_COUNTRIES, 1 + RECENT_COUNTRIES + RECENT_MERCHANTS)
_KEYS = 1 + RECENT_COUNTRIES + RECENT_MERCHANTS


class FeatureBatch:
    """Features of a batch: a dense matrix plus each row's one-hot keys.

    The keys are held either as tuples of names (`sparse`) or, as the builder makes them, as
    an (n, 2) array of `ONE_HOT` ids, -1 for none (`onehot`); `sparse` is derived on demand.
    """

    __slots__ = ("dense", "_sparse", "ts", "onehot")

    def __init__(
        self,
        dense: np.ndarray,  # shape (n, len(DENSE_FEATURES))
        sparse: list[tuple[str, ...]] | None = None,
        ts: np.ndarray | None = None,
        onehot: np.ndarray | None = None,
    ) -> None:
        if sparse is None and onehot is None:
            raise ValueError("a FeatureBatch needs its one-hot keys (sparse or onehot)")
        self.dense = dense
        self._sparse = sparse
        # Event times (epoch seconds) when built from transactions: the scorer's latency metric.
        self.ts = ts
        self.onehot = onehot

    @property
    def sparse(self) -> list[tuple[str, ...]]:
        if self._sparse is None:
            assert self.onehot is not None
            names = ONE_HOT.names
            self._sparse = [tuple(names[i] for i in row if i >= 0) for row in self.onehot.tolist()]
        return self._sparse

    def __len__(self) -> int:
        return len(self.dense)

    def row_dict(self, i: int) -> dict[str, float]:
        d = dict(zip(DENSE_FEATURES, self.dense[i].tolist(), strict=True))
        for key in self.sparse[i]:
            d[key] = 1.0
        return d

    def dicts(self) -> list[dict[str, float]]:
        rows = self.dense.tolist()
        out = []
        for row, keys in zip(rows, self.sparse, strict=True):
            d = dict(zip(DENSE_FEATURES, row, strict=True))
            for key in keys:
                d[key] = 1.0
            out.append(d)
        return out


def occurrences(slots: np.ndarray) -> np.ndarray:
    """For each record, the number of earlier records of the same slot in the batch."""
    order = np.argsort(slots, kind="stable")
    ranked = slots[order]
    starts = np.r_[0, np.nonzero(np.diff(ranked))[0] + 1]
    rank = np.arange(len(slots)) - np.repeat(starts, np.diff(np.r_[starts, len(slots)]))
    occurrence = np.empty(len(slots), dtype=np.int64)
    occurrence[order] = rank
    return occurrence


class CardStore:
    """Per-card state with a size bound; the least recently seen card is evicted first.

    Cards are known by the 64-bit hash of their id's UTF-8 bytes (`core.byte_hash`): a card
    costs the same whatever its id's length, and the scorer hashes ids straight from the
    consumed bytes. `slots` maps hash -> row in recency order (`core.card_table`, compiled);
    the state itself lives in numpy arrays indexed by row, updated by the feature kernel.
    Two of a million cards share state with probability ~3e-8.
    """

    def __init__(self, max_cards: int) -> None:
        self.max_cards = max_cards
        self.slots = CardSlots(max_cards)
        self.numeric = np.zeros((0, _NUMERIC))
        self.keys = np.zeros((0, _KEYS), dtype=np.int32)

    def __len__(self) -> int:
        return len(self.slots)

    def __contains__(self, card_id: str) -> bool:
        return int(hash_strings([card_id])[0]) in self.slots

    @property
    def evicted(self) -> int:
        return self.slots.evicted

    @property
    def rows(self) -> int:
        """Rows of state ever handed out (the arrays hold at least this many)."""
        return self.slots.next_slot

    def _grow(self, need: int) -> None:
        # Grow by a quarter, not double: a doubled array can leave half of it unused.
        size = max(need, len(self.numeric) + len(self.numeric) // 4, 1024)
        numeric = np.zeros((size, _NUMERIC))
        keys = np.zeros((size, _KEYS), dtype=np.int32)
        numeric[: len(self.numeric)] = self.numeric
        keys[: len(self.keys)] = self.keys
        self.numeric, self.keys = numeric, keys

    def assign(self, card_hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rows of the cards (by id hash) and whether each record is the card's first
        sighting. Marks them most recent."""
        slots, first = self.slots.assign(card_hashes)
        if self.slots.next_slot > len(self.numeric):
            self._grow(self.slots.next_slot)
        return slots, first

    def trim(self) -> None:
        """Evict least recently seen cards down to the bound (called once per batch)."""
        self.slots.trim()

    def clear(self) -> None:
        self.slots.clear()


def short_hashes(hashes: np.ndarray) -> np.ndarray:
    """64-bit value hashes (0: none) cut to 31 bits to halve the card state; a collision only
    hides a change among a card's few recent values. 0 stays reserved for none."""
    h = (hashes & np.uint64(_HASH_MASK)).astype(np.int32)
    h[(h == 0) & (hashes != 0)] = 1
    return h


def _epoch(at: datetime | float) -> float:
    return at.timestamp() if isinstance(at, datetime) else float(at)


class FeatureBuilder:
    """Builds features for transactions, updating per-card state as it goes.

    The label-fed features come from `labels` (`core.label_state.LabelState`): `evaluate`
    feeds it through `observe_label` as labels arrive; a scorer points every builder at the
    state of the snapshot it serves. Without labels those features stay at the prior.
    """

    def __init__(
        self,
        max_cards: int = 2_000_000,
        categories: Vocabulary | None = None,
        channels: Vocabulary | None = None,
        labels: LabelState | None = None,
        jit: bool = True,
    ) -> None:
        self.store = CardStore(max_cards)
        # The compiled sequential kernel (core/features_compiled.py); False: the numpy reference.
        self.jit = jit
        # Vocabularies and label state may be shared by the builders of several partitions.
        self.categories = categories or Vocabulary("merchant_category")
        self.channels = channels or Vocabulary("channel")
        self.labels = labels if labels is not None else LabelState()

    def observe_label(self, tx: Transaction, is_fraud: bool) -> None:
        """Feed the label of `tx`, which has just arrived, to the label-fed state."""
        self.labels.observe(
            tx.merchant_id, tx.merchant_category, tx.country, is_fraud, tx.timestamp.timestamp()
        )

    def build(self, transactions: Iterable[Transaction]) -> FeatureBatch:
        """Features of transactions (validated objects), in order."""
        txs = transactions if isinstance(transactions, list) else list(transactions)
        n = len(txs)
        if n == 0:
            return FeatureBatch(np.empty((0, len(DENSE_FEATURES))), [])
        # Columns read with C-level map() loops: a list comprehension costs a Python bytecode
        # loop per column and record.
        ts = np.fromiter(map(datetime.timestamp, map(tx_field.TIMESTAMP, txs)), np.float64, n)
        amount = np.fromiter(map(tx_field.AMOUNT, txs), np.float64, n)
        countries = list(map(tx_field.COUNTRY, txs))
        merchants = list(map(tx_field.MERCHANT_ID, txs))
        categories = list(map(tx_field.CATEGORY, txs))
        channels = list(map(tx_field.CHANNEL, txs))
        onehot = np.empty((n, 2), dtype=np.int64)
        onehot[:, 0] = self.categories.key_ids(categories)
        onehot[:, 1] = self.channels.key_ids(channels)
        return self.build_columns(
            ts, amount, hash_strings(list(map(tx_field.CARD_ID, txs))), hash_strings(countries),
            hash_strings(merchants), hash_strings(categories), onehot,
        )  # fmt: skip

    def build_columns(
        self,
        ts: np.ndarray,
        amount: np.ndarray,
        card_hashes: np.ndarray,
        country_hashes: np.ndarray,
        merchant_hashes: np.ndarray,
        category_hashes: np.ndarray,
        onehot: np.ndarray,
    ) -> FeatureBatch:
        """Features of records given as columns: event times (epoch s), amounts, the 64-bit
        byte hashes (`core.byte_hash`, 0: none) of card id, country, merchant and category,
        and the `ONE_HOT` ids of category and channel."""
        # Python touches each record only to read its fields, find its card's slot and look up
        # its one-hot keys and risks; the per-card arithmetic runs on arrays, in rounds: round
        # r holds each card's r-th record of the batch, so a card's records still see each
        # other in order.
        n = len(ts)
        out = np.empty((n, len(DENSE_FEATURES)), dtype=np.float64)
        if n == 0:
            return FeatureBatch(out, ts=ts, onehot=onehot)
        store = self.store
        slots, first = store.assign(card_hashes)
        country_h = short_hashes(country_hashes)
        merchant_h = short_hashes(merchant_hashes)

        days = np.floor(ts / 86400.0)
        hour = np.floor((ts - days * 86400.0) / 3600.0)
        hour_i = hour.astype(np.int64)
        log_amount = np.log1p(amount)
        out[:, 0] = amount
        out[:, 1] = log_amount
        out[:, 2] = hour
        out[:, 3] = (days + 3.0) % 7.0  # 1970-01-01 was a Thursday; Monday = 0
        out[:, 4] = hour < 6.0
        out[:, 6] = first

        if self.jit:
            card_features(
                out, slots, first, ts, amount, log_amount, _HOUR_COS[hour_i], _HOUR_SIN[hour_i],
                country_h, merchant_h, store.numeric, store.keys, RECENT_COUNTRIES,
                RECENT_MERCHANTS, FIRST_SEEN_GAP_S, VELOCITY_TAU_S, VELOCITY_DAY_TAU_S,
                HABIT_ALPHA, AMOUNT_VAR_FLOOR, HABIT_AFTER, OUTLIER_Z,
            )  # fmt: skip
        else:
            occurrence = occurrences(slots)
            rounds = int(occurrence.max()) + 1
            for r in range(rounds):
                idx = np.nonzero(occurrence == r)[0] if rounds > 1 else np.arange(n)
                self._round(
                    out, idx, slots[idx], first[idx], ts[idx], amount[idx], log_amount[idx],
                    hour_i[idx], country_h[idx], merchant_h[idx],
                )  # fmt: skip
        store.trim()

        block = out[:, LABEL_COLUMNS]
        self.labels.columns(merchant_hashes, category_hashes, country_hashes, block)
        excess = out[:, _EXCESS]
        np.maximum(out[:, _ZSCORE], 0.0, out=excess)
        np.square(excess, out=out[:, _EXCESS + 1])
        return FeatureBatch(out, ts=ts, onehot=onehot)

    def _round(
        self,
        out: np.ndarray,
        idx: np.ndarray,
        slots: np.ndarray,
        first: np.ndarray,
        ts: np.ndarray,
        amount: np.ndarray,
        la: np.ndarray,
        hour: np.ndarray,
        country: np.ndarray,
        merchant: np.ndarray,
    ) -> None:
        """Features and new state of records of distinct cards (at most one per card)."""
        store = self.store
        s = store.numeric[slots]
        k = store.keys[slots]
        seen = ~first
        hc, hs = _HOUR_COS[hour], _HOUR_SIN[hour]
        # Out-of-order events give a negative gap: treat them as simultaneous.
        gap = np.where(seen, np.maximum(ts - s[:, _LAST_TS], 0.0), 0.0)
        e24 = np.exp(gap / -VELOCITY_DAY_TAU_S)
        v1 = np.where(seen, s[:, _V1] * np.exp(gap / -VELOCITY_TAU_S) + 1.0, 1.0)
        v24 = np.where(seen, s[:, _V24] * e24 + 1.0, 1.0)
        s24 = np.where(seen, s[:, _S24] * e24 + amount, amount)
        mean, var, gap_mean = s[:, _MEAN], s[:, _VAR], s[:, _GAP_MEAN]
        d = la - mean
        lg = np.log1p(gap)
        has_gap = seen & (gap_mean >= 0.0)
        out[idx, 5] = np.log1p(np.where(first, FIRST_SEEN_GAP_S, np.minimum(gap, FIRST_SEEN_GAP_S)))
        out[idx, 7] = np.where(seen, la - np.log1p(s[:, _LAST_AMOUNT]), 0.0)
        out[idx, 8] = v1
        out[idx, 10] = v24
        out[idx, 11] = np.log1p(s24)
        out[idx, 12] = np.where(seen, d / np.sqrt(var + AMOUNT_VAR_FLOOR), 0.0)
        out[idx, 13] = np.where(has_gap, lg - gap_mean, 0.0)
        # Clamped: rounding can leave -1e-17 where the hour is exactly the usual one.
        out[idx, 14] = np.where(seen, np.maximum(1.0 - hc * s[:, _HC] - hs * s[:, _HS], 0.0), 0.0)

        has_country = country != 0
        last_country = k[:, _KEY_COUNTRY]
        recent_c = k[:, _COUNTRIES]
        known_c = (recent_c == country[:, None]).any(axis=1)
        out[idx, 9] = seen & has_country & (last_country != 0) & (country != last_country)
        out[idx, 15] = seen & has_country & ~known_c & (recent_c[:, 0] != 0)
        recent_m = k[:, _MERCHANTS]
        has_merchant = merchant != 0
        known_m = (recent_m == merchant[:, None]).any(axis=1)
        out[idx, 16] = seen & has_merchant & ~known_m & (recent_m[:, 0] != 0)

        # New state. Running habits: a plain mean for the first transactions, then exponential.
        a = np.maximum(1.0 / (s[:, _N] + 1.0), HABIT_ALPHA)
        bound = OUTLIER_Z * np.sqrt(var + AMOUNT_VAR_FLOOR)
        d = np.where(seen & (s[:, _N] >= HABIT_AFTER), np.clip(d, -bound, bound), d)
        new = np.empty_like(s)
        new[:, _LAST_TS] = np.where(seen, np.maximum(ts, s[:, _LAST_TS]), ts)
        new[:, _LAST_AMOUNT] = amount
        new[:, _V1] = v1
        new[:, _V24] = v24
        new[:, _S24] = s24
        new[:, _MEAN] = np.where(seen, mean + a * d, la)
        new[:, _VAR] = np.where(seen, (1.0 - a) * (var + a * d * d), 0.0)
        new[:, _GAP_MEAN] = np.where(
            seen, np.where(gap_mean < 0.0, lg, gap_mean + a * (lg - gap_mean)), -1.0
        )
        new[:, _N] = np.where(seen, s[:, _N] + 1.0, 1.0)
        new[:, _HC] = np.where(seen, s[:, _HC] + a * (hc - s[:, _HC]), hc)
        new[:, _HS] = np.where(seen, s[:, _HS] + a * (hs - s[:, _HS]), hs)
        store.numeric[slots] = new

        # A first sighting starts from empty lists; a new value goes in front.
        k[first] = 0
        add_c = has_country & ~(known_c & seen)
        k[:, _KEY_COUNTRY] = np.where(has_country, country, np.where(seen, last_country, 0))
        shifted = np.concatenate([country[:, None], k[:, _COUNTRIES][:, :-1]], axis=1)
        k[:, _COUNTRIES] = np.where(add_c[:, None], shifted, k[:, _COUNTRIES])
        add_m = has_merchant & ~(known_m & seen)
        shifted = np.concatenate([merchant[:, None], k[:, _MERCHANTS][:, :-1]], axis=1)
        k[:, _MERCHANTS] = np.where(add_m[:, None], shifted, k[:, _MERCHANTS])
        store.keys[slots] = k

    def forget(self) -> None:
        """Drop all per-card state (e.g. when this instance's partitions are revoked)."""
        self.store.clear()
