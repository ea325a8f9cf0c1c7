from __future__ import annotations

import orjson
import pytest

from core.codec import DecodeError, decode_label, decode_transaction

GOOD = {
    "transaction_id": "t1",
    "card_id": "c1",
    "amount": 12.5,
    "merchant_category": "grocery",
    "timestamp": "2026-11-22T12:00:00Z",
}


def test_valid_transaction_with_unknown_fields() -> None:
    tx = decode_transaction(orjson.dumps({**GOOD, "extra": {"nested": 1}}))
    assert tx.amount == 12.5 and tx.timestamp.tzinfo is not None


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "empty"),
        (b"\xff\xfe", "not_json"),
        (b"{nope", "not_json"),
        (b"[1, 2]", "not_object"),
        (b'"text"', "not_object"),
        (orjson.dumps({**GOOD, "amount": -1}), "invalid"),
        (orjson.dumps({**GOOD, "amount": 1.8e17}), "invalid"),
        (orjson.dumps({**GOOD, "amount": "12"}), "invalid"),
        (orjson.dumps({k: v for k, v in GOOD.items() if k != "card_id"}), "invalid"),
        (orjson.dumps({**GOOD, "timestamp": "2026-11-22T12:00:00"}), "invalid"),
        (orjson.dumps({**GOOD, "card_id": "x" * 5000}), "invalid"),
        (b'{"transaction_id":"t","card_id":"c","amount":NaN}', "invalid"),
        (b"x" * 100_000, "too_large"),
    ],
)
def test_bad_records_get_a_reason(raw: bytes, reason: str) -> None:
    with pytest.raises(DecodeError) as info:
        decode_transaction(raw)
    assert info.value.reason == reason


def test_nan_and_infinity_amounts_are_rejected() -> None:
    for token in (b"NaN", b"Infinity", b"-Infinity"):
        raw = orjson.dumps(GOOD).replace(b"12.5", token)
        with pytest.raises(DecodeError):
            decode_transaction(raw)


def test_label() -> None:
    label = decode_label(b'{"transaction_id": "t1", "is_fraud": true}')
    assert label.is_fraud is True
    with pytest.raises(DecodeError):
        decode_label(b'{"transaction_id": "t1", "is_fraud": "maybe"}')
