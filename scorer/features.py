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


# Per-card state: (last event time, last amount, decayed velocity, last known country).
# A plain tuple: the smallest per-card footprint Python offers without an array store.
CardState = tuple[float, float, float, str | None]


def _assemble(
    amounts: list[float],
    stamps: list[float],
    gaps: list[float],
    prev_amounts: list[float],
    velocities: list[float],
    changed: list[float],
) -> np.ndarray:
    n = len(amounts)
    out = np.empty((n, len(DENSE_FEATURES)), dtype=np.float64)
    if n == 0:
        return out
    amount = np.asarray(amounts)
    ts = np.asarray(stamps)
    gap = np.asarray(gaps)
    first = gap < 0
    days = np.floor(ts / 86400.0)
    hour = np.floor((ts - days * 86400.0) / 3600.0)
    log_amount = np.log1p(amount)
    out[:, 0] = amount
    out[:, 1] = log_amount
    out[:, 2] = hour
    out[:, 3] = (days + 3.0) % 7.0  # 1970-01-01 was a Thursday; Monday = 0
    out[:, 4] = hour < 6.0
    out[:, 5] = np.log1p(np.where(first, FIRST_SEEN_GAP_S, np.minimum(gap, FIRST_SEEN_GAP_S)))
    out[:, 6] = first
    out[:, 7] = log_amount - np.log1p(np.asarray(prev_amounts))
    out[:, 8] = velocities
    out[:, 9] = changed
    return out


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

    def key(self, value: str) -> str:
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
        self.trim()

    def trim(self) -> None:
        """Evict least recently seen cards down to the bound (called once per batch)."""
        excess = len(self.cards) - self.max_cards
        if excess <= 0:
            return
        cards = self.cards
        for key in [k for k, _ in zip(cards, range(excess), strict=False)]:
            del cards[key]
        self.evicted += excess


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
        # The per-record loop does only what needs per-card state; everything that is a pure
        # function of a column (logs, calendar fields) is computed on whole arrays after it.
        amounts: list[float] = []
        stamps: list[float] = []
        gaps: list[float] = []
        prev_amounts: list[float] = []
        velocities: list[float] = []
        changed: list[float] = []
        sparse: list[tuple[str, ...]] = []
        cards = self.store.cards
        pop = cards.pop
        cat_keys, chan_keys = self.categories.keys, self.channels.keys
        cat_key, chan_key = self.categories.key, self.channels.key
        exp = math.exp
        for tx in transactions:
            ts = tx.timestamp.timestamp()
            amount = tx.amount
            country = tx.country
            prev = pop(tx.card_id, None)
            if prev is None:
                gaps.append(-1.0)  # marks a first sighting
                prev_amounts.append(amount)
                velocity = 1.0
                changed.append(0.0)
                cards[tx.card_id] = (ts, amount, velocity, country)
            else:
                last_ts, last_amount, last_velocity, last_country = prev
                # Out-of-order events give a negative gap: treat them as simultaneous.
                gap = ts - last_ts if ts > last_ts else 0.0
                gaps.append(gap)
                prev_amounts.append(last_amount)
                velocity = last_velocity * exp(-gap / VELOCITY_TAU_S) + 1.0
                changed.append(
                    1.0
                    if country is not None and last_country is not None and country != last_country
                    else 0.0
                )
                cards[tx.card_id] = (
                    ts if ts > last_ts else last_ts,
                    amount,
                    velocity,
                    country or last_country,
                )
            amounts.append(amount)
            stamps.append(ts)
            velocities.append(velocity)
            cat = cat_keys.get(tx.merchant_category) or cat_key(tx.merchant_category)
            channel = tx.channel
            if channel is None:
                sparse.append((cat,))
            else:
                sparse.append((cat, chan_keys.get(channel) or chan_key(channel)))
        self.store.trim()
        return FeatureBatch(
            _assemble(amounts, stamps, gaps, prev_amounts, velocities, changed), sparse
        )

    def forget(self) -> None:
        """Drop all per-card state (e.g. when this instance's partitions are revoked)."""
        self.store.cards.clear()
