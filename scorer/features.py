"""Feature building: a validated transaction plus per-card state -> the model's input.

Pure code, no Kafka: the live scorer, `evaluate` and the MLflow model all use it. Every
feature is causal (only this record and the card's earlier records).

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
- velocity_1h: exponentially decayed count of the card's transactions (1 h time constant).
- country_changed: 1 if the country differs from the card's previous known country.
Sparse one-hot features (present only when set): `merchant_category=<v>`, `channel=<v>`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from schemas import Transaction

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
)
FIRST_SEEN_GAP_S = 30 * 24 * 3600.0
VELOCITY_TAU_S = 3600.0
# Distinct categorical values turned into their own feature; later ones share "other",
# so hostile input cannot grow the model without bound.
MAX_CATEGORY_VALUES = 100


class CardState(NamedTuple):
    last_ts: float
    last_amount: float
    velocity: float
    country: str | None


@dataclass(slots=True)
class FeatureBatch:
    """Features of a batch: a dense matrix plus each row's one-hot keys."""

    dense: np.ndarray  # shape (n, len(DENSE_FEATURES))
    sparse: list[tuple[str, ...]]

    def __len__(self) -> int:
        return len(self.sparse)

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


@dataclass
class Vocabulary:
    """Bounded map from categorical value to its one-hot key."""

    prefix: str
    limit: int = MAX_CATEGORY_VALUES
    keys: dict[str, str] = field(default_factory=dict)

    def key(self, value: str | None) -> str | None:
        if value is None:
            return None
        k = self.keys.get(value)
        if k is None:
            k = f"{self.prefix}={value}" if len(self.keys) < self.limit else f"{self.prefix}=other"
            if len(self.keys) < self.limit:
                self.keys[value] = k
        return k


class CardStore:
    """Per-card state with a size bound; the least recently seen card is evicted first."""

    def __init__(self, max_cards: int) -> None:
        self.max_cards = max_cards
        self.cards: dict[str, CardState] = {}
        self.evicted = 0

    def __len__(self) -> int:
        return len(self.cards)

    def pop(self, card_id: str) -> CardState | None:
        return self.cards.pop(card_id, None)

    def put(self, card_id: str, state: CardState) -> None:
        # Re-inserting keeps dict order = recency order, so eviction takes the oldest.
        self.cards[card_id] = state
        if len(self.cards) > self.max_cards:
            del self.cards[next(iter(self.cards))]
            self.evicted += 1


class FeatureBuilder:
    """Builds features for transactions, updating per-card state as it goes."""

    def __init__(
        self,
        max_cards: int = 2_000_000,
        categories: Vocabulary | None = None,
        channels: Vocabulary | None = None,
    ) -> None:
        self.store = CardStore(max_cards)
        # Vocabularies may be shared by the builders of several partitions.
        self.categories = categories or Vocabulary("merchant_category")
        self.channels = channels or Vocabulary("channel")

    def build(self, transactions: Iterable[Transaction]) -> FeatureBatch:
        rows: list[tuple[float, ...]] = []
        sparse: list[tuple[str, ...]] = []
        pop, put = self.store.pop, self.store.put
        cat_key, chan_key = self.categories.key, self.channels.key
        log1p, exp = math.log1p, math.exp
        for tx in transactions:
            ts_dt = tx.timestamp
            ts = ts_dt.timestamp()
            utc = ts_dt.utctimetuple()
            hour = utc.tm_hour
            amount = tx.amount
            log_amount = log1p(amount)
            prev = pop(tx.card_id)
            if prev is None:
                gap, first, ratio, velocity, changed = FIRST_SEEN_GAP_S, 1.0, 0.0, 1.0, 0.0
                country = tx.country
            else:
                # Out-of-order events give a negative gap: treat them as simultaneous.
                gap = max(ts - prev.last_ts, 0.0)
                first = 0.0
                ratio = log_amount - log1p(prev.last_amount)
                velocity = prev.velocity * exp(-gap / VELOCITY_TAU_S) + 1.0
                country = tx.country or prev.country
                changed = (
                    1.0
                    if tx.country is not None
                    and prev.country is not None
                    and tx.country != prev.country
                    else 0.0
                )
            last_ts = max(ts, prev.last_ts) if prev is not None else ts
            put(tx.card_id, CardState(last_ts, amount, velocity, country))
            rows.append(
                (
                    amount,
                    log_amount,
                    float(hour),
                    float(utc.tm_wday),
                    1.0 if hour < 6 else 0.0,
                    log1p(min(gap, FIRST_SEEN_GAP_S)),
                    first,
                    ratio,
                    velocity,
                    changed,
                )
            )
            keys = [cat_key(tx.merchant_category)]
            ch = chan_key(tx.channel)
            if ch is not None:
                keys.append(ch)
            sparse.append(tuple(k for k in keys if k is not None))
        dense = np.array(rows, dtype=np.float64).reshape(len(rows), len(DENSE_FEATURES))
        return FeatureBatch(dense, sparse)

    def forget(self) -> None:
        """Drop all per-card state (e.g. when this instance's partitions are revoked)."""
        self.store.cards.clear()
