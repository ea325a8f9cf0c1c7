"""The compiled batch scorer must agree with River's own predict_proba_one."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from infra.config import ModelSettings
from schemas import Transaction
from scorer.features import FeatureBuilder
from scorer.model import CompiledModel, build_pipeline, predict_one


def _transactions(n: int, seed: int) -> list[Transaction]:
    rng = random.Random(seed)
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    cats = ["grocery", "travel", "jewelry", "fuel"]
    return [
        Transaction(
            transaction_id=f"t{i}",
            card_id=f"c{rng.randrange(50)}",
            amount=round(rng.lognormvariate(3, 1.5), 2),
            merchant_category=rng.choice(cats),
            timestamp=t0 + timedelta(seconds=i * rng.uniform(1, 600)),
            country=rng.choice(["FR", "US", None]),
            channel=rng.choice(["pos", "online", None]),
        )
        for i in range(n)
    ]


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
    fast = compiled.predict_proba(batch)
    reference = np.array([predict_one(pipeline, x) for x in batch.dicts()])
    assert np.max(np.abs(fast - reference)) < 1e-9
    assert fast.std() > 0.01, "the trained model should discriminate"


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
        weights = pipeline["logreg"].weights
        contrib = {k: weights.get(k, 0.0) * v for k, v in scaled.items()}
        assert sum(contrib.values()) + pipeline["logreg"].intercept == pytest.approx(logits[i])
        expected = sorted(((k, v) for k, v in contrib.items() if v > 0), key=lambda kv: -kv[1])
        assert [k for k, _ in reasons[i]] == [k for k, _ in expected[:3]]
        assert [v for _, v in reasons[i]] == pytest.approx([v for _, v in expected[:3]])
