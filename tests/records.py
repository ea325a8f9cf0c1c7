"""Wire records the tests publish as the system's own processes would write them."""

from __future__ import annotations

from typing import Any


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
