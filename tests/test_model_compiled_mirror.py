"""The compiled batch scorer must agree with River's own predict_proba_one."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
from river import compose, linear_model, preprocessing

from core.contracts import Transaction
from core.features import DENSE_FEATURES, FeatureBuilder
from core.model import (
    Z_CLIP,
    DenseScaler,
    build_pipeline,
    feature_names,
    is_legacy,
    predict_one,
    scaler_stats,
    served_weights,
    upgrade_pipeline,
)
from core.model_compiled import CompiledModel
from core.model_settings import ModelSettings
from tests.records import random_transactions


def _transactions(n: int, seed: int) -> list[Transaction]:
    cats = ["grocery", "travel", "jewelry", "fuel"]
    channels = ["pos", "online", None]
    return random_transactions(random.Random(seed), n, 50, lambda _: cats, lambda _: channels)


def test_untrained_model_scores_the_prior_fraud_rate() -> None:
    pipeline = build_pipeline(ModelSettings(prior_fraud_rate=0.02))
    batch = FeatureBuilder().build(_transactions(10, 0))
    probs = CompiledModel.from_pipeline(pipeline, 0).predict_proba(batch)
    assert np.allclose(probs, 0.02)
    assert predict_one(pipeline, batch.row_dict(0)) == pytest.approx(0.02)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batch_path_agrees_with_river_to_1e_9(seed: int) -> None:
    pipeline = build_pipeline(ModelSettings(learning_rate=0.05))
    builder = FeatureBuilder()
    train = builder.build(_transactions(2000, seed))
    rng = random.Random(seed)
    for x in train.dicts():
        y = x["amount"] > 300 or rng.random() < 0.05
        pipeline.learn_one(x, y, w=3.0 if y else 1.0)
    # Fresh records, including a category and a channel the model never saw.
    test_txs = _transactions(500, seed + 100)
    test_txs.append(
        test_txs[0].model_copy(update={"merchant_category": "never-seen", "channel": "atm"})
    )
    batch = builder.build(test_txs)
    compiled = CompiledModel.from_pipeline(pipeline, 1)
    # The one-hot keys are present and weigh in: the comparison covers their path too.
    assert all(keys for keys in batch.sparse[:-1])
    assert compiled.sparse and any(abs(w) > 1e-6 for w in compiled.sparse.values())
    assert set(compiled.sparse) <= {k for keys in batch.sparse for k in keys}
    fast = compiled.predict_proba(batch)
    reference = np.array([predict_one(pipeline, x) for x in batch.dicts()])
    assert np.max(np.abs(fast - reference)) < 1e-9
    assert fast.std() > 0.01, "the trained model should discriminate"


def _category_fraud(pipeline: compose.Pipeline, seed: int) -> FeatureBuilder:
    """Learn a stream where only the merchant category tells fraud (jewelry) from legit."""
    builder = FeatureBuilder()
    rng = random.Random(seed)
    for x in builder.build(_transactions(3000, seed)).dicts():
        y = x.get("merchant_category=jewelry") == 1.0 and rng.random() < 0.5
        pipeline.learn_one(x, y, w=3.0 if y else 1.0)
    return builder


def test_one_hot_keys_change_the_score_after_learning() -> None:
    pipeline = build_pipeline(ModelSettings(learning_rate=0.05))
    builder = _category_fraud(pipeline, 7)
    weights = pipeline["logreg"].weights
    assert weights["merchant_category=jewelry"] > 0.5
    assert weights["merchant_category=grocery"] < 0.0
    # The same transaction in two categories: only the one-hot differs, and so does the score.
    tx = _transactions(1, 99)[0]
    jewelry = tx.model_copy(update={"merchant_category": "jewelry", "card_id": "fresh-a"})
    grocery = tx.model_copy(update={"merchant_category": "grocery", "card_id": "fresh-b"})
    batch = builder.build([jewelry, grocery])
    a, b = batch.dicts()
    assert {k: v for k, v in a.items() if "=" not in k} == {
        k: v for k, v in b.items() if "=" not in k
    }
    compiled = CompiledModel.from_pipeline(pipeline, 1)
    logits = compiled.logits(batch)
    served, _ = served_weights(pipeline["logreg"])  # the averaged weights score
    expected = served["merchant_category=jewelry"] - served["merchant_category=grocery"]
    assert logits[0] - logits[1] == pytest.approx(expected, abs=1e-9)
    assert expected > 1.0
    p = compiled.predict_proba(batch)
    assert p[0] > 2.0 * p[1]
    assert p == pytest.approx([predict_one(pipeline, a), predict_one(pipeline, b)], abs=1e-9)
    # And it is a reason for the jewelry transaction, with its weight as the contribution.
    reasons = dict(compiled.reasons(batch, top=20)[0])
    assert reasons["merchant_category=jewelry"] == pytest.approx(
        served["merchant_category=jewelry"]
    )


def test_only_dense_features_are_scaled_and_missing_ones_are_skipped() -> None:
    pipeline = build_pipeline()
    for x in FeatureBuilder().build(_transactions(300, 3)).dicts():
        pipeline.learn_one(x, False)
    means, vars_ = scaler_stats(pipeline)
    assert set(means) == set(vars_) == set(DENSE_FEATURES)
    scaler = pipeline["scale"]
    out = scaler.transform_one({"amount": means["amount"], "channel=pos": 1.0})
    assert out == {"amount": 0.0, "channel=pos": 1.0}
    # A dict without some dense features (a Score from an older scorer) learns and scores.
    partial = {"amount": 12.0, "hour": 3.0, "channel=atm": 1.0}
    pipeline.learn_one(partial, True)
    assert 0.0 < predict_one(pipeline, partial) < 1.0
    assert feature_names(pipeline)[: len(DENSE_FEATURES)] == DENSE_FEATURES
    assert "channel=atm" in feature_names(pipeline)


def test_a_constant_feature_with_rounding_noise_is_not_blown_up() -> None:
    pipeline = build_pipeline()
    builder = FeatureBuilder()
    rows = builder.build(_transactions(20, 4)).dicts()
    for k, x in enumerate(rows[:17]):
        # hour_unusual: 0, and once -7e-17 (float noise): variance ~3e-34, not a real spread.
        pipeline.learn_one(x | {"hour_unusual": -6.9e-17 if k == 3 else 0.0}, False)
    assert 0.0 < scaler_stats(pipeline)[1]["hour_unusual"] < 1e-30
    x = rows[18] | {"hour_unusual": 1.96}
    assert pipeline["scale"].transform_one(x)["hour_unusual"] == 0.0
    clone = pipeline.clone(include_attributes=True)
    assert clone["scale"].transform_one(x) == pipeline["scale"].transform_one(x)
    batch = builder.build(_transactions(5, 40))
    compiled = CompiledModel.from_pipeline(pipeline, 1)
    reference = np.array([predict_one(pipeline, d) for d in batch.dicts()])
    assert np.max(np.abs(compiled.predict_proba(batch) - reference)) < 1e-9


def _legacy_pipeline() -> compose.Pipeline:
    """The pipeline shape written before DenseScaler: a plain StandardScaler over everything."""
    fresh = build_pipeline(ModelSettings(learning_rate=0.05))
    return compose.Pipeline(("scale", preprocessing.StandardScaler()), ("logreg", fresh["logreg"]))


def test_legacy_pipeline_still_scores_as_river_and_upgrades_to_the_clipped_scaler() -> None:
    legacy = _legacy_pipeline()
    builder = _category_fraud(legacy, 8)
    assert is_legacy(legacy)
    # The plain scaler zeroed the one-hots: their weights never moved.
    assert all(w == 0.0 for k, w in legacy["logreg"].weights.items() if k not in DENSE_FEATURES)
    batch = builder.build(_transactions(200, 108))
    reference = np.array([predict_one(legacy, x) for x in batch.dicts()])
    old = CompiledModel.from_pipeline(legacy, 1).predict_proba(batch)
    assert np.max(np.abs(old - reference)) < 1e-9
    upgraded = upgrade_pipeline(copy.deepcopy(legacy))
    assert not is_legacy(upgraded) and isinstance(upgraded["scale"], DenseScaler)
    again = np.array([predict_one(upgraded, x) for x in batch.dicts()])
    compiled = CompiledModel.from_pipeline(upgraded, 2)
    assert np.max(np.abs(compiled.predict_proba(batch) - again)) < 1e-9
    # Scores change only where the upgraded scaler clips a standardised value.
    unclipped = (np.abs((batch.dense - compiled.mean) * compiled.inv_std) <= Z_CLIP).all(axis=1)
    assert unclipped.sum() > 100
    assert np.max(np.abs(again - reference)[unclipped]) < 1e-9
    assert upgrade_pipeline(upgraded) is upgraded


def test_a_model_of_another_shape_is_refused_with_a_clear_message() -> None:
    other = compose.Pipeline(
        ("scale", preprocessing.MinMaxScaler()), ("logreg", linear_model.LogisticRegression())
    )
    with pytest.raises(TypeError, match="not a fraudstream model.*scale=MinMaxScaler"):
        CompiledModel.from_pipeline(other, 1)


def test_empty_batch() -> None:
    compiled = CompiledModel.from_pipeline(build_pipeline(), 0)
    assert compiled.predict_proba(FeatureBuilder().build([])).shape == (0,)


def test_reasons_are_the_largest_positive_contributions_and_sum_with_the_rest_to_the_logit() -> (
    None
):
    pipeline = build_pipeline(ModelSettings(learning_rate=0.05))
    builder = FeatureBuilder()
    rng = random.Random(5)
    for x in builder.build(_transactions(1500, 5)).dicts():
        pipeline.learn_one(x, x["amount"] > 300 or rng.random() < 0.05)
    batch = builder.build(_transactions(200, 105))
    compiled = CompiledModel.from_pipeline(pipeline, 1)
    reasons = compiled.reasons(batch, top=3)
    logits = compiled.logits(batch)
    for i, x in enumerate(batch.dicts()):
        scaled = pipeline["scale"].transform_one(x)
        weights, intercept = served_weights(pipeline["logreg"])
        contrib = {k: weights.get(k, 0.0) * v for k, v in scaled.items()}
        assert sum(contrib.values()) + intercept == pytest.approx(logits[i])
        expected = sorted(((k, v) for k, v in contrib.items() if v > 0), key=lambda kv: -kv[1])
        assert [k for k, _ in reasons[i]] == [k for k, _ in expected[:3]]
        assert [v for _, v in reasons[i]] == pytest.approx([v for _, v in expected[:3]])


def test_dense_scaler_matches_rivers_standard_scaler_on_the_dense_part() -> None:
    """DenseScaler inlines StandardScaler's running mean and variance: same statistics, same
    scaled values (1e-12) on the dense features, one-hots passed through, missing keys
    skipped."""
    dense, plain = DenseScaler(), preprocessing.StandardScaler()
    rows = FeatureBuilder().build(_transactions(400, 11)).dicts()
    rng = random.Random(11)
    for k, x in enumerate(rows):
        if k % 7 == 3:  # a Score from an older scorer: some dense features missing
            x = {name: v for name, v in x.items() if rng.random() < 0.7}
        dense.learn_one(x)
        plain.learn_one({name: v for name, v in x.items() if name in DENSE_FEATURES})
        assert dict(dense.counts) == dict(plain.counts)
        for name in plain.means:
            assert abs(dense.means[name] - plain.means[name]) <= 1e-12 * max(
                1.0, abs(plain.means[name])
            )
            assert abs(dense.vars[name] - plain.vars[name]) <= 1e-12 * max(
                1.0, abs(plain.vars[name])
            )
        got = dense.transform_one(x)
        want = plain.transform_one({name: v for name, v in x.items() if name in DENSE_FEATURES})
        assert list(got) == list(x)
        for name, v in got.items():
            if name not in DENSE_FEATURES:
                assert v == x[name]
            elif plain.vars[name] > 1e-12:
                clipped = min(max(want[name], -Z_CLIP), Z_CLIP)
                assert abs(v - clipped) <= 1e-12 * max(1.0, abs(clipped)), name
            else:
                assert v == 0.0
    assert set(dense.means) == set(dense.vars) == set(DENSE_FEATURES)
    with pytest.raises(NotImplementedError):
        dense.learn_many(None)
