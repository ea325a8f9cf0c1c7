"""The served model is the average of the learner's recent weights (`model.average_labels`):
a plain mean at first, then an exponential moving average; learning goes on from the raw
weights; the average travels in the model data and is what every scoring path uses."""

from __future__ import annotations

import math
import random

import pytest

from core.contracts import Transaction
from core.features import FeatureBuilder
from core.model import (
    AveragedLogisticRegression,
    average_rate,
    build_pipeline,
    predict_one,
    served_weights,
)
from core.model_compiled import CompiledModel
from core.model_data import model_data, pipeline_from_data, pipeline_to_data
from core.model_settings import ModelSettings
from tests.records import random_transactions


def _transactions(n: int, seed: int) -> list[Transaction]:
    cats, channels = ["grocery", "travel", "jewelry"], ["pos", "online", None]
    return random_transactions(random.Random(seed), n, 50, lambda _: cats, lambda _: channels)


def _stream(n: int, seed: int) -> list[tuple[dict[str, float], bool]]:
    rng = random.Random(seed)
    rows = FeatureBuilder().build(_transactions(n, seed)).dicts()
    return [(x, x["amount"] > 300 or rng.random() < 0.05) for x in rows]


def test_the_average_is_a_plain_mean_then_an_exponential_one() -> None:
    horizon = 50
    pipeline = build_pipeline(ModelSettings(learning_rate=0.05, average_labels=horizon))
    logreg = pipeline["logreg"]
    assert isinstance(logreg, AveragedLogisticRegression)
    history: list[dict[str, float]] = []
    for x, y in _stream(400, 1):
        pipeline.learn_one(x, y)
        history.append(dict(logreg.weights))
    keys = set(history[-1])
    # The first `horizon` labels: the mean of the weights after each (0 before a key's birth).
    first = {k: sum(h.get(k, 0.0) for h in history[:horizon]) / horizon for k in keys}
    # Then each label moves the average 1/horizon of the way to the new weights.
    expected = dict(first)
    for h in history[horizon:]:
        for k in keys:
            expected[k] += (h.get(k, 0.0) - expected[k]) / horizon
    assert set(logreg.averaged) == keys
    for k in keys:
        assert logreg.averaged[k] == pytest.approx(expected[k], rel=1e-9, abs=1e-12)
    # It is a different model from the raw weights, and it is the one that scores.
    assert max(abs(logreg.averaged[k] - logreg.weights[k]) for k in keys) > 1e-3
    x = _stream(1, 2)[0][0]
    scaled = pipeline["scale"].transform_one(x)
    weights, intercept = served_weights(logreg)
    z = sum(weights.get(k, 0.0) * v for k, v in scaled.items()) + intercept
    assert predict_one(pipeline, x) == pytest.approx(1.0 / (1.0 + math.exp(-z)), rel=1e-12)


def test_average_rate_is_a_mean_until_the_horizon() -> None:
    assert [average_rate(4, n) for n in (1, 2, 4, 5, 100)] == [1.0, 0.5, 0.25, 0.25, 0.25]
    assert average_rate(1, 1000) == 1.0


def test_average_labels_1_serves_the_raw_weights_exactly() -> None:
    pipeline = build_pipeline(ModelSettings(average_labels=1))
    for x, y in _stream(300, 3):
        pipeline.learn_one(x, y)
    logreg = pipeline["logreg"]
    assert logreg.averaged == dict(logreg.weights)
    assert logreg.averaged_intercept == logreg.intercept


def test_the_average_round_trips_through_model_data_and_learning_goes_on_alike() -> None:
    settings = ModelSettings(learning_rate=0.05, average_labels=100)
    stream = _stream(600, 4)
    original = build_pipeline(settings)
    for x, y in stream[:300]:
        original.learn_one(x, y, w=5.0 if y else 1.0)
    data = pipeline_to_data(original)
    assert data.logreg.averaged is not None and data.logreg.averaged.horizon == 100
    rebuilt = pipeline_from_data(model_data(data.model_dump(mode="json")))
    for x, y in stream[300:]:
        for p in (original, rebuilt):
            p.learn_one(x, y, w=5.0 if y else 1.0)
    a, b = original["logreg"], rebuilt["logreg"]
    assert b.averaged.keys() == a.averaged.keys()
    assert max(abs(a.averaged[k] - b.averaged[k]) for k in a.averaged) < 1e-9
    probe = [x for x, _ in _stream(50, 5)]
    compiled = CompiledModel.from_pipeline(rebuilt, 1)
    batch = FeatureBuilder().build(_transactions(50, 5))
    assert compiled.predict_proba(batch) == pytest.approx(
        [predict_one(original, x) for x in probe], abs=1e-9
    )


def test_a_model_written_before_averaging_serves_its_raw_weights() -> None:
    pipeline = build_pipeline(ModelSettings(learning_rate=0.05))
    for x, y in _stream(300, 6):
        pipeline.learn_one(x, y)
    raw = pipeline_to_data(pipeline).model_dump(mode="json")
    del raw["logreg"]["averaged"]  # as fraudstream-model/2 wrote it
    old = pipeline_from_data(model_data(raw))
    assert not isinstance(old["logreg"], AveragedLogisticRegression)
    weights, intercept = served_weights(old["logreg"])
    assert weights == dict(pipeline["logreg"].weights)
    assert intercept == pipeline["logreg"].intercept
    x = _stream(1, 7)[0][0]
    scaled = old["scale"].transform_one(x)
    z = sum(weights.get(k, 0.0) * v for k, v in scaled.items()) + intercept
    assert predict_one(old, x) == pytest.approx(1.0 / (1.0 + math.exp(-z)), rel=1e-12)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"horizon": 0}, "logreg.averaged.horizon"),
        ({"weights": {"amount": math.inf}}, "logreg.averaged.weights.amount"),
        ({"intercept": "x"}, "logreg.averaged.intercept"),
    ],
)
def test_a_malformed_average_is_refused_in_one_line(
    change: dict[str, object], message: str
) -> None:
    raw = pipeline_to_data(build_pipeline()).model_dump(mode="json")
    raw["logreg"]["averaged"] |= change
    with pytest.raises(ValueError, match=message.replace(".", r"\.")) as info:
        model_data(raw)
    assert "\n" not in str(info.value)
