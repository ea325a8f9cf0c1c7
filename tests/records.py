"""Records the tests publish or feed, as the system's own processes would write them."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from core.contracts import Transaction


def score_record(tid: str, features: Any, **fields: Any) -> dict[str, Any]:
    """A Score as the scorer writes it to `scores` (what the trainer joins with a label);
    `fields` replace or add fields."""
    return {
        "transaction_id": tid,
        "card_id": "card-0",
        "score": 0.01,
        "flagged": False,
        "threshold": 0.5,
        "model_version": 0,
        "event_time": "2026-11-22T12:00:00Z",
        "scored_at": "2026-11-22T12:00:01Z",
        "features": features,
        **fields,
    }


def synthetic_features(rng: random.Random, fraud: bool) -> dict[str, float]:
    """A Score's features where fraud is learnable: larger amounts, faster repeats."""
    amount = rng.lognormvariate(5.5 if fraud else 3.5, 1.0)
    return {
        "amount": amount,
        "log_amount": math.log1p(amount),
        "log_seconds_since_last": rng.uniform(0, 3 if fraud else 8),
        "hour": float(rng.randrange(24)),
        f"merchant_category={rng.choice(['grocery', 'travel', 'online'])}": 1.0,
    }


def random_transactions(
    rng: random.Random,
    n: int,
    cards: int,
    categories: Callable[[int], Sequence[str]],
    channels: Callable[[int], Sequence[str | None]],
) -> list[Transaction]:
    """`n` transactions of `cards` cards with lognormal amounts, some without a country; the
    i-th one's category and channel are drawn from `categories(i)` and `channels(i)`."""
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    return [
        Transaction(
            transaction_id=f"t{i}",
            card_id=f"c{rng.randrange(cards)}",
            amount=round(rng.lognormvariate(3, 1.5), 2),
            merchant_category=rng.choice(categories(i)),
            timestamp=t0 + timedelta(seconds=i * rng.uniform(1, 600)),
            country=rng.choice(["FR", "US", None]),
            channel=rng.choice(channels(i)),
        )
        for i in range(n)
    ]
