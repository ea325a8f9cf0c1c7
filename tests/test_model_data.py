"""The model as data (`core.model_data`): a pipeline rebuilt from its JSON scores as River's
original to 1e-9 (River, the compiled batch scorer, the fused learner) and, learning on the
same labels, stays with it; data that is not a model is refused with one line."""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import orjson
import pytest
from river import linear_model, optim, preprocessing

from core.features import FeatureBuilder
from core.learner_compiled import FusedModel
from core.model import build_pipeline, predict_one
from core.model_compiled import CompiledModel
from core.model_data import ModelDataError, model_data, pipeline_from_data, pipeline_to_data
from core.model_settings import ModelSettings
from tests.test_model_compiled_mirror import _transactions

TOL = 1e-9


def _max_diff(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _labelled(n: int, seed: int) -> list[tuple[dict[str, Any], bool]]:
    rng = random.Random(seed)
    rows = FeatureBuilder().build(_transactions(n, seed)).dicts()
    return [(x, x["amount"] > 300 or rng.random() < 0.05) for x in rows]


def _learn(pipeline: Any, stream: list[tuple[dict[str, Any], bool]]) -> list[float]:
    """River's probability before each label, then learn it (weighted as the trainer does)."""
    out = []
    for x, y in stream:
        out.append(predict_one(pipeline, x))
        pipeline.learn_one(x, y, w=5.0 if y else 1.0)
    return out


def _through_json(pipeline: Any) -> Any:
    raw = orjson.dumps(pipeline_to_data(pipeline).model_dump(mode="json"))
    return pipeline_from_data(model_data(orjson.loads(raw)))


@pytest.mark.parametrize("settings", [ModelSettings(), ModelSettings(learning_rate=0.05, l2=0.01)])
def test_rebuilt_pipeline_scores_and_learns_on_as_the_original(settings: ModelSettings) -> None:
    original = build_pipeline(settings)
    _learn(original, _labelled(1500, 1))
    rebuilt = _through_json(original)

    probes = _labelled(300, 2)
    want = [predict_one(original, x) for x, _ in probes]
    assert _max_diff([predict_one(rebuilt, x) for x, _ in probes], want) < TOL
    batch = FeatureBuilder().build(_transactions(300, 2))
    compiled = CompiledModel.from_pipeline(rebuilt, 1).predict_proba(batch)
    reference = np.array([predict_one(original, x) for x in batch.dicts()])
    assert np.max(np.abs(compiled - reference)) < TOL

    # Learning on: the optimizer state (step counter, rates, loss weights) came along.
    more = _labelled(1500, 3)
    assert _max_diff(_learn(rebuilt, more), _learn(original, more)) < TOL
    a, b = original["logreg"], rebuilt["logreg"]
    assert a.optimizer.n_iterations == b.optimizer.n_iterations == 3000
    assert abs(a.intercept - b.intercept) < TOL
    assert a.weights.keys() == b.weights.keys()
    assert max(abs(a.weights[k] - b.weights[k]) for k in a.weights) < TOL
    assert pipeline_to_data(rebuilt).scaler == pipeline_to_data(original).scaler


def test_the_fused_learner_learns_on_from_a_rebuilt_pipeline() -> None:
    original = build_pipeline()
    _learn(original, _labelled(1000, 4))
    fused = FusedModel(_through_json(original))
    assert fused.learner is not None  # the compiled learner, not River's fallback
    more = _labelled(1000, 5)
    got = [fused.predict_learn(x, y, 5.0 if y else 1.0) for x, y in more]
    assert _max_diff(got, _learn(original, more)) < TOL


def test_the_data_keeps_key_order() -> None:
    pipeline = build_pipeline()
    _learn(pipeline, _labelled(200, 6))
    data = pipeline_to_data(_through_json(pipeline))
    assert list(data.logreg.weights) == list(pipeline["logreg"].weights)
    assert list(data.scaler.means) == list(pipeline["scale"].means)


def test_other_shapes_are_not_written_as_data() -> None:
    with pytest.raises(ModelDataError, match="not scale=DenseScaler"):
        pipeline_to_data(linear_model.LogisticRegression())
    legacy = build_pipeline()
    legacy.steps["scale"] = preprocessing.StandardScaler()
    with pytest.raises(ModelDataError, match="scale is StandardScaler"):
        pipeline_to_data(legacy)
    adam = build_pipeline()
    adam["logreg"].optimizer = optim.Adam()
    with pytest.raises(ModelDataError, match="optimizer Adam"):
        pipeline_to_data(adam)
    diverged = build_pipeline()
    diverged["logreg"]._weights["amount"] = float("nan")
    with pytest.raises(ModelDataError, match="logreg.weights.amount"):
        pipeline_to_data(diverged)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["scaler"]["means"].update({"evil": 1.0}), "not a dense feature: 'evil'"),
        (lambda d: d["logreg"].update({"intercept": "x"}), "logreg.intercept"),
        (lambda d: d["logreg"]["optimizer"].update({"kind": "adam"}), "optimizer.kind"),
        (lambda d: d["logreg"]["loss"].update({"weight_pos": -1.0}), "loss.weight_pos"),
        (lambda d: d["logreg"]["weights"].update({"k" * 300: 1.0}), "key of 300 characters"),
        (lambda d: d.update({"extra": {}}), "extra"),
        (lambda d: d["logreg"].pop("weights"), "logreg.weights"),
    ],
)
def test_data_that_is_not_a_model_is_refused_with_one_line(change: Any, message: str) -> None:
    raw = pipeline_to_data(build_pipeline()).model_dump(mode="json")
    change(raw)
    with pytest.raises(ModelDataError, match=message) as err:
        model_data(raw)
    assert "\n" not in str(err.value)
