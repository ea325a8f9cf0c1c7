"""The compiled Score writer writes what the reference batch encoder writes."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest

from core.contracts import Score
from core.features import DENSE_FEATURES, FeatureBatch
from core.model_compiled import CompiledModel
from core.score_encode import ScoreEncoder
from core.score_encode_compiled import ScoreWriter, round_features
from core.vocabulary import ONE_HOT
from tests.test_score_encode_mirror import hostile_columns, hostile_entities

K = len(DENSE_FEATURES)


def _batch(n: int, seed: int) -> tuple[list[str], list[str], list[datetime], np.ndarray, list]:
    rng = np.random.default_rng(seed)
    tids, cards, times, sparse = hostile_columns(n)
    dense = rng.normal(scale=20.0, size=(n, K))
    dense[:, 0] = rng.uniform(0, 1e9, n)
    dense[::5, 3] = 0.0
    return tids, cards, times, dense, sparse


@pytest.mark.parametrize("shadow", [False, True])
def test_records_match_the_reference_encoder(shadow: bool) -> None:
    n = 500
    tids, cards, times, dense, sparse = _batch(n, 3)
    rng = np.random.default_rng(4)
    compiled = CompiledModel(
        version=7,
        mean=rng.normal(size=K),
        inv_std=np.abs(rng.normal(size=K)) / 20,
        weight=rng.normal(size=K),
        intercept=-1.0,
        sparse={"merchant_category=grocery": 1.7, 'channel=we"b': -0.4},
    )
    compiled.inv_std[0] = 1e-9  # amounts up to 1e9 would flag everything
    assert round_features(dense)
    probs = compiled.predict_proba(FeatureBatch(dense, sparse))
    contrib = compiled.scaled(dense) * compiled.weight
    challengers = {"fast": probs / 2, 'we"ird': probs / 3} if shadow else None
    now = datetime.now(UTC)
    entities = hostile_entities(n)
    reference = ScoreEncoder(reasons=3)
    want = reference.encode(
        tids, cards, times, probs, 0.5, 7, now, dense, sparse,
        reference.reason_columns(contrib, sparse, compiled.sparse), challengers, entities,
    )  # fmt: skip
    got = ScoreWriter(reasons=3).write(
        tids, cards, times, probs, 0.5, 7, now, dense, sparse, contrib, compiled.sparse,
        challengers, entities,
    )  # fmt: skip
    assert len(got) == n
    flagged = 0
    for raw, ref in zip(got, want, strict=True):
        a, b = orjson.loads(raw), orjson.loads(ref)
        Score.model_validate_json(raw)
        ra, rb = a.pop("reasons"), b.pop("reasons")
        assert a == b
        assert [r["feature"] for r in ra] == [r["feature"] for r in rb]
        for x, y in zip(ra, rb, strict=True):
            assert abs(x["contribution"] - y["contribution"]) <= 5e-7
        flagged += a["flagged"]
    assert 0 < flagged < n


def test_no_reasons_and_empty_batch() -> None:
    writer = ScoreWriter(reasons=3)
    now = datetime.now(UTC)
    assert writer.write([], [], [], np.zeros(0), 0.5, 1, now, np.zeros((0, K)), [], None, {}) == []
    dense = np.ones((2, K))
    out = writer.write(["a", "b"], ["c", "d"], [now, now], np.array([0.2, 0.9]), 0.5, 1, now,
                       dense, [(), ("channel=pos",)], None, {})  # fmt: skip
    records = [orjson.loads(r) for r in out]
    assert [r["reasons"] for r in records] == [[], []]
    assert records[1]["features"]["channel=pos"] == 1.0
    assert [r["flagged"] for r in records] == [False, True]


def test_round_features_refuses_what_it_cannot_write_exactly() -> None:
    for bad in (np.nan, np.inf, -np.inf, 2e10):
        dense = np.ones((3, K))
        dense[1, 2] = bad
        before = dense.copy()
        assert not round_features(dense)
        assert np.array_equal(dense, before, equal_nan=True)


def test_one_hot_ids_write_the_same_records_as_key_names() -> None:
    """The scorer passes one-hot keys as ONE_HOT ids (what the builder makes); any other
    caller as names: both must give the same bytes."""
    n = 300
    tids, cards, times, dense, sparse = _batch(n, 5)
    assert round_features(dense)
    ids = np.full((n, 2), -1, dtype=np.int64)
    for i, keys in enumerate(sparse):
        for slot, key in enumerate(keys):
            ids[i, slot] = ONE_HOT.id_of(key)
    weights = {"merchant_category=grocery": 2.5, 'channel=we"b': 0.3}
    contrib = dense * 0.01
    probs = np.linspace(0.0, 1.0, n)
    now = datetime.now(UTC)
    args = (tids, cards, times, probs, 0.5, 3, now, dense)
    by_name = ScoreWriter(reasons=3).write(*args, sparse, contrib, weights)
    by_id = ScoreWriter(reasons=3).write(*args, ids, contrib, weights)
    assert by_id == by_name
    assert any(b'"channel=we\\"b":1.0' in r for r in by_id)
    assert any(b'"feature":"merchant_category=grocery"' in r for r in by_id)
