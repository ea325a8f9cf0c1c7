"""Request and response examples shown in the OpenAPI docs (and used by the docs test)."""

from __future__ import annotations

from typing import Any

from core.contracts import Label, Transaction

TRANSACTION: dict[str, Any] = {
    "transaction_id": "tx-0001",
    "card_id": "card-42",
    "amount": 129.9,
    "merchant_category": "electronics",
    "timestamp": "2026-12-07T18:00:00Z",
    "currency": "EUR",
    "merchant_id": "m-981",
    "country": "DE",
    "channel": "online",
}

SCORE: dict[str, Any] = {
    "transaction_id": "tx-0001",
    "card_id": "card-42",
    "score": 0.031,
    "flagged": False,
    "threshold": 0.5,
    "model_version": 12,
    "event_time": "2026-12-07T18:00:00Z",
    "scored_at": "2026-12-07T18:00:00.012Z",
    "features": {"amount": 129.9, "log_amount": 4.87, "log_seconds_since_last": 8.1},
}

LABEL: dict[str, Any] = {"transaction_id": "tx-0001", "is_fraud": True}
LABELS: dict[str, Any] = {
    "labels": [LABEL, {"transaction_id": "tx-0002", "is_fraud": False}],
}


def json_body(schema: dict[str, Any], examples: dict[str, Any]) -> dict[str, Any]:
    """`openapi_extra` for a route that reads its body raw (validated by the wire contract)."""
    return {
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": schema,
                    "examples": {k: {"value": v} for k, v in examples.items()},
                }
            },
        }
    }


TRANSACTION_BODY = json_body(Transaction.model_json_schema(), {"transaction": TRANSACTION})
LABEL_BODY = json_body(
    {
        "oneOf": [
            Label.model_json_schema(),
            {
                "type": "object",
                "properties": {"labels": {"type": "array", "items": Label.model_json_schema()}},
                "required": ["labels"],
            },
        ]
    },
    {"one label": LABEL, "a batch": LABELS},
)
TOKEN_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/x-www-form-urlencoded": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "grant_type": {"type": "string", "enum": ["client_credentials"]},
                        "client_id": {"type": "string"},
                        "client_secret": {"type": "string", "format": "password"},
                        "scope": {"type": "string", "description": "space-separated subset"},
                    },
                    "required": ["grant_type"],
                }
            }
        },
    }
}
