"""Generated junk against the decoder and the feature builder: a DecodeError or a valid
model, never another exception; features always finite for anything the decoder accepts."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec import DecodeError, decode_label, decode_transaction
from core.contracts import Transaction
from core.features import DENSE_FEATURES, FeatureBuilder
from core.model import build_pipeline
from core.model_compiled import CompiledModel
from tests.strategies import json_bytes, json_values, near_valid_transactions

timestamps = st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()) | st.text(
    max_size=30
)
near_valid = near_valid_transactions(timestamps)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200) | near_valid.map(json_bytes) | json_values.map(json_bytes))
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
@given(st.lists(near_valid.map(json_bytes), min_size=1, max_size=20))
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
@given(st.binary(max_size=100) | json_values.map(json_bytes))
def test_label_decoder_never_raises_anything_else(raw: bytes) -> None:
    try:
        decode_label(raw)
    except DecodeError:
        pass
