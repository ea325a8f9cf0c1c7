"""The msgspec fast path decides exactly like the pydantic contract."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import DecodeError, decode_transaction
from schemas.fast import decode_transaction_fast
from tests.test_properties import _encode, json_values, near_valid


def _same(raw: bytes) -> None:
    try:
        expected = decode_transaction(raw)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            decode_transaction_fast(raw)
        assert info.value.reason == exc.reason
        return
    got = decode_transaction_fast(raw)
    for name in type(expected).model_fields:
        if name != "timestamp":
            assert getattr(got, name) == getattr(expected, name), name
    # The one documented difference: beyond 6 fraction digits msgspec rounds, pydantic
    # truncates; the instant and the zone offset agree otherwise.
    delta = got.timestamp - expected.timestamp
    assert abs(delta.total_seconds()) <= 1e-6
    assert got.timestamp.utcoffset() == expected.timestamp.utcoffset()


@settings(max_examples=1500, deadline=None)
@given(near_valid.map(_encode) | json_values.map(_encode) | st.binary(max_size=100))
def test_fast_path_matches_the_contract(raw: bytes) -> None:
    _same(raw)


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-11-22T12:00:00Z",
        "2026-11-22T12:00:00.123456+02:00",
        "2026-11-22T12:00:00z",
        "2026-11-22 12:00:00Z",
        "2026-11-22T12:00Z",
        "2026-11-22T12:00:00",
        "2026-11-22",
        "20261122T120000Z",
        "2026-11-22T24:00:00Z",
        "2026-02-30T12:00:00Z",
        "2026-11-22T12:00:00.1234567Z",
        "2026-11-22T12:00:00+25:00",
    ],
)
def test_timestamp_forms(timestamp: str) -> None:
    record = {
        "transaction_id": "t",
        "card_id": "c",
        "amount": 1,
        "merchant_category": "m",
        "timestamp": timestamp,
    }
    _same(orjson.dumps(record))


@pytest.mark.parametrize(
    "amount",
    ["0", "-0.0", "1e9", "1000000001", "1" + "0" * 30, "true", '"1"', "null", "1.5", "-1e-300"],
)
def test_amount_forms(amount: str) -> None:
    raw = (
        '{"transaction_id": "t", "card_id": "c", "merchant_category": "m", '
        f'"timestamp": "2026-11-22T12:00:00Z", "amount": {amount}}}'
    )
    _same(raw.encode())
