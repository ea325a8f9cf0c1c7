"""Generated junk against the decoder and the feature builder: a DecodeError or a valid
model, never another exception; features always finite for anything the decoder accepts."""

from __future__ import annotations

import math

import numpy as np
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec import DecodeError, decode_label, decode_transaction
from core.contracts import Transaction
from core.features import DENSE_FEATURES, FeatureBuilder
from core.model import build_pipeline
from core.model_compiled import CompiledModel

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)
timestamps = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | st.text(
    max_size=30
)
near_valid = st.fixed_dictionaries(
    {
        "transaction_id": st.text(max_size=10) | json_scalars,
        "card_id": st.sampled_from(["c1", "c2", "c3"]) | json_scalars,
        "amount": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | json_scalars,
        "merchant_category": st.sampled_from(["grocery", "travel"]) | json_scalars,
        "timestamp": timestamps | json_scalars,
    },
    optional={"country": json_scalars, "channel": json_scalars, "extra": json_values},
)


def _encode(obj: object) -> bytes:
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return repr(obj).encode()


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | near_valid.map(_encode) | json_values.map(_encode))
def test_decoder_returns_a_model_or_a_decode_error(raw: bytes) -> None:
    try:
        tx = decode_transaction(raw)
    except DecodeError as exc:
        assert exc.reason in {"empty", "too_large", "not_json", "not_object", "invalid"}
        return
    assert isinstance(tx, Transaction)
    assert math.isfinite(tx.amount) and tx.amount >= 0
    assert tx.timestamp.tzinfo is not None


@settings(max_examples=300, deadline=None)
@given(st.lists(near_valid.map(_encode), min_size=1, max_size=20))
def test_features_and_scores_are_finite_for_every_accepted_record(raws: list[bytes]) -> None:
    accepted = []
    for raw in raws:
        try:
            accepted.append(decode_transaction(raw))
        except DecodeError:
            pass
    batch = FeatureBuilder().build(accepted)
    assert batch.dense.shape == (len(accepted), len(DENSE_FEATURES))
    assert np.isfinite(batch.dense).all()
    probs = CompiledModel.from_pipeline(build_pipeline(), 0).predict_proba(batch)
    assert np.isfinite(probs).all() and ((probs >= 0) & (probs <= 1)).all()


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100) | json_values.map(_encode))
def test_label_decoder_never_raises_anything_else(raw: bytes) -> None:
    try:
        decode_label(raw)
    except DecodeError:
        pass
