"""The msgspec decoders (`core.codec_msgspec`) decide exactly like the pydantic contracts
(`core.codec`): transactions, labels, and the fields of Scores the trainer learns from."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.codec import DecodeError, decode_label, decode_score, decode_transaction, encode
from core.codec_msgspec import decode_label_fast, decode_score_fields, decode_transaction_fast
from core.contracts import Reason, Score
from core.features import DENSE_FEATURES
from tests.strategies import json_bytes, json_scalars, json_values
from tests.test_properties import near_valid, timestamps

R = TypeVar("R")
F = TypeVar("F")


def _decode_both(
    reference: Callable[[bytes], R], fast: Callable[[bytes], F], raw: bytes
) -> tuple[R, F] | None:
    """Both decoders' results, or None when both refused `raw` for the same reason."""
    try:
        expected = reference(raw)
    except DecodeError as exc:
        with pytest.raises(DecodeError) as info:
            fast(raw)
        assert info.value.reason == exc.reason
        return None
    return expected, fast(raw)


def _same_instant(got: datetime, expected: datetime) -> None:
    # The one documented difference: beyond 6 fraction digits msgspec rounds, pydantic
    # truncates; the instant and the zone offset agree otherwise.
    assert abs((got - expected).total_seconds()) <= 1e-6
    assert got.utcoffset() == expected.utcoffset()


def _same(raw: bytes) -> None:
    decoded = _decode_both(decode_transaction, decode_transaction_fast, raw)
    if decoded is None:
        return
    expected, got = decoded
    for name in type(expected).model_fields:
        if name != "timestamp":
            assert getattr(got, name) == getattr(expected, name), name
    _same_instant(got.timestamp, expected.timestamp)


@settings(max_examples=1500, deadline=None)
@given(near_valid.map(json_bytes) | json_values.map(json_bytes) | st.binary(max_size=100))
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


def test_invalid_utf8_in_a_string_is_a_decode_error() -> None:
    # msgspec raises UnicodeDecodeError here, not one of its own errors: it must not escape.
    raw = (
        b'{"transaction_id": "\xff", "card_id": "c", "amount": 1, "merchant_category": "m", '
        b'"timestamp": "2026-11-22T12:00:00Z"}'
    )
    _same(raw)


# -- labels ------------------------------------------------------------------------------------

near_valid_labels = st.fixed_dictionaries(
    {
        "transaction_id": st.text(max_size=10) | st.text(min_size=250, max_size=260) | json_scalars,
        "is_fraud": st.booleans() | json_scalars,
    },
    optional={
        "labeled_at": timestamps | json_scalars,
        "source": st.text(max_size=10) | st.text(min_size=250, max_size=260) | json_scalars,
        "extra": json_values,
    },
)


def _same_label(raw: bytes) -> None:
    decoded = _decode_both(decode_label, decode_label_fast, raw)
    if decoded is None:
        return
    expected, got = decoded
    assert got.transaction_id == expected.transaction_id
    assert got.is_fraud is expected.is_fraud
    assert got.source == expected.source
    if expected.labeled_at is None:
        assert got.labeled_at is None
    else:
        assert got.labeled_at is not None
        _same_instant(got.labeled_at, expected.labeled_at)


@settings(max_examples=1500, deadline=None)
@given(
    near_valid_labels.map(json_bytes)
    | near_valid.map(json_bytes)
    | json_values.map(json_bytes)
    | st.binary(max_size=100)
)
def test_label_fast_path_matches_the_contract(raw: bytes) -> None:
    _same_label(raw)


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"[]",
        b"{",
        b"{}",
        b'{"transaction_id": "t", "is_fraud": true}',
        b'{"transaction_id": "t", "is_fraud": false, "source": "bank", "x": [1, {"y": 2}]}',
        b'{"transaction_id": "", "is_fraud": true}',
        b'{"transaction_id": 1, "is_fraud": true}',
        b'{"transaction_id": "t", "is_fraud": 1}',
        b'{"transaction_id": "t", "is_fraud": "true"}',
        b'{"transaction_id": "t", "is_fraud": null}',
        b'{"transaction_id": "t"}',
        b'{"is_fraud": true}',
        b'{"transaction_id": "t", "is_fraud": true, "is_fraud": false}',
        b'{"transaction_id": "a", "transaction_id": "b", "is_fraud": true}',
        b'{"transaction_id": "t", "is_fraud": true, "labeled_at": "2026-11-22T12:00:00Z"}',
        b'{"transaction_id": "t", "is_fraud": true, "labeled_at": "2026-11-22T12:00:00"}',
        b'{"transaction_id": "t", "is_fraud": true, "labeled_at": 1700000000}',
        b'{"transaction_id": "t", "is_fraud": true, "labeled_at": null}',
        b'{"transaction_id": "t", "is_fraud": true, "source": null}',
        b'{"transaction_id": "t", "is_fraud": true, "source": 3}',
        b'{"transaction_id": "\\ud800", "is_fraud": true}',
        b'{"transaction_id": "\\u00e9\\n", "is_fraud": true}',
        b'{"transaction_id": "\xff", "is_fraud": true}',
        b'{"transaction_id": "t", "is_fraud": true} x',
        orjson.dumps({"transaction_id": "x" * 256, "is_fraud": True}),
        orjson.dumps({"transaction_id": "x" * 257, "is_fraud": True}),
        orjson.dumps({"transaction_id": "é" * 256, "is_fraud": True}),
        orjson.dumps({"transaction_id": "t", "is_fraud": True, "source": "s" * 257}),
        orjson.dumps({"transaction_id": "t", "is_fraud": True, "pad": "p" * 70_000}),
    ],
)
def test_label_forms(raw: bytes) -> None:
    _same_label(raw)


def test_the_score_decoder_takes_numbers_only() -> None:
    x = {k: round(random.Random(i).uniform(-1e4, 1e4), 6) for i, k in enumerate(DENSE_FEATURES)}
    x["merchant_category=fuel"] = 1.0
    record = {"transaction_id": "t", "score": 0.25, "event_time": "2026-11-22T12:00:00Z"}
    fields = decode_score_fields(orjson.dumps({**record, "features": x, "reasons": []}))
    assert fields is not None
    assert fields.features == x and list(fields.features) == list(x)
    assert fields.score == 0.25 and fields.event_time == "2026-11-22T12:00:00Z"
    ints = decode_score_fields(b'{"features":{"a":1}}')
    assert ints is not None and ints.features == {"a": 1.0}
    for bad in (
        b'{"features":{"a":null}}',
        b'{"features":{"a":"1.5"}}',
        b'{"features":{"a":true}}',
        b'{"features":[1.0]}',
        b'{"score":0.5}',
        b"not json",
        b"",
    ):
        assert decode_score_fields(bad) is None, bad


@pytest.mark.parametrize("seed", range(5))
def test_score_fields_equal_the_contracts_decode_of_a_full_score(seed: int) -> None:
    """A Score as the contract writes it, reasons and challenger scores included: the fields
    the trainer reads are the ones pydantic reads, features in the same order."""
    rng = random.Random(seed)
    features = {k: round(rng.uniform(-1e4, 1e4), 6) for k in DENSE_FEATURES}
    features["channel=web"] = 1.0
    score = Score(
        transaction_id=f"t{seed}",
        card_id="c\u00e9",
        merchant_id=None if seed % 2 else "m1",
        merchant_category="fuel",
        country="FR" if seed % 3 else None,
        score=rng.random(),
        flagged=bool(seed % 2),
        threshold=0.5,
        model_version=seed,
        event_time=datetime(2026, 11, 22, 12, seed, tzinfo=UTC),
        scored_at=datetime(2026, 11, 22, 12, 30, tzinfo=UTC),
        features=features,
        reasons=[Reason(feature="amount", contribution=1.5)],
        challenger_scores={"fast": 0.25} if seed % 2 else None,
    )
    raw = encode(score)
    reference = decode_score(raw)
    fields = decode_score_fields(raw)
    assert fields is not None
    assert list(fields.features.items()) == list(reference.features.items())
    assert fields.score == reference.score
    assert datetime.fromisoformat(fields.event_time) == reference.event_time
    for name in ("merchant_id", "merchant_category", "country"):
        assert getattr(fields, name) == getattr(reference, name), name
