"""The fused learner (`core.learner_compiled`) against River's own pipeline: same probabilities
before each label, same parameters after, over long streams with fraud weights, one-hot keys
appearing midway, constant features and missing dense keys; and the hand-over to River objects
(write-back, reload, snapshot round trip)."""

from __future__ import annotations

import math
import random
import sys
import threading
from typing import Any

import pytest
from river import compose, linear_model, optim, preprocessing

from core import learner_compiled
from core.features import FeatureBuilder
from core.learner_compiled import FastLearner, FusedModel, supported
from core.model import VAR_FLOOR, build_pipeline, predict_one, upgrade_pipeline
from core.model_settings import ModelSettings
from core.snapshot import decode_snapshot, encode_snapshot, make_snapshot
from tests.records import random_transactions

TOL = 1e-9
FRAUD_WEIGHT = 5.0

Stream = list[tuple[dict[str, Any], bool]]


def _stream(n: int, seed: int = 1) -> Stream:
    """Serving-time feature dicts with labels. Categories and channels new in the second half
    bring new one-hot keys; `is_night` is held constant (variance 0), `country_changed` is 0
    but once -7e-17 (variance 1e-36: rounding noise, under VAR_FLOOR); a few records lack a
    dense key (an older scorer) and one carries an integer, as orjson parses `1`."""
    rng = random.Random(seed)
    cats, new_cats = ["grocery", "fuel"], ["travel", "jewelry", "electronics"]
    channels: list[str | None] = ["pos", "online", None]
    txs = random_transactions(
        rng,
        n,
        80,
        lambda i: cats + new_cats if i >= n // 2 else cats,
        lambda i: [*channels, "moto"] if i >= n // 2 else channels,
    )
    out: Stream = []
    for i, x in enumerate(FeatureBuilder().build(txs).dicts()):
        x["is_night"] = 1.0
        x["country_changed"] = -7e-17 if i == 100 else 0.0
        if i % 997 == 13:
            del x["hour"]
        if i % 1499 == 7:
            del x["amount"], x["velocity_1h"]
        if i == 40:
            x["first_seen"] = 1  # an int, as orjson gives for `1`
        y = x.get("amount", 0.0) > 300 or rng.random() < 0.03
        out.append((x, y))
    return out


def _river(pipeline: Any, stream: Stream) -> list[float]:
    """What the trainer did before: predict_one, then learn_one with the fraud weight."""
    probs = []
    for x, y in stream:
        probs.append(predict_one(pipeline, x))
        pipeline.learn_one(x, y, w=FRAUD_WEIGHT if y else 1.0)
    return probs


def _fused(model: FusedModel, stream: Stream) -> list[float]:
    return [model.predict_learn(x, y, FRAUD_WEIGHT if y else 1.0) for x, y in stream]


def _state(pipeline: Any) -> dict[str, Any]:
    scaler, logreg = pipeline["scale"], pipeline["logreg"]
    return {
        "counts": dict(scaler.counts),
        "means": dict(scaler.means),
        "vars": dict(scaler.vars),
        "weights": logreg.weights,
        "intercept": {"b": logreg.intercept},
        "averaged": logreg.averaged,
        "averaged_intercept": {"b": logreg.averaged_intercept},
        "iterations": logreg.optimizer.n_iterations,
    }


def _max_diff(a: Any, b: Any) -> float:
    """The largest parameter difference between two pipelines; inf if they differ in shape
    (keys, counts, optimizer iterations)."""
    sa, sb = _state(a), _state(b)
    if sa["counts"] != sb["counts"] or sa["iterations"] != sb["iterations"]:
        return math.inf
    worst = 0.0
    for part in ("means", "vars", "weights", "intercept", "averaged", "averaged_intercept"):
        if set(sa[part]) != set(sb[part]):
            return math.inf
        for k, v in sa[part].items():
            worst = max(worst, abs(v - sb[part][k]))
    return worst


def _prob_diff(p: list[float], q: list[float]) -> float:
    assert len(p) == len(q)
    return max(abs(a - b) for a, b in zip(p, q, strict=True))


@pytest.mark.parametrize(
    "settings",
    [
        ModelSettings(),
        ModelSettings(l2=0.01, learning_rate=0.05, prior_fraud_rate=0.2, average_labels=300),
        ModelSettings(average_labels=1),
    ],
    ids=["default", "l2_short_average", "raw_weights"],
)
def test_fused_learner_is_river_over_a_long_stream(settings: ModelSettings) -> None:
    stream = _stream(6000)
    reference = build_pipeline(settings)
    want = _river(reference, stream)
    model = FusedModel(build_pipeline(settings))
    assert model.learner is not None
    got = _fused(model, stream)
    assert _prob_diff(got, want) <= TOL
    learned = model.pipeline  # written back
    assert _max_diff(learned, reference) <= TOL
    # The stream did what it is for: new keys midway, a constant feature, missing keys.
    weights = learned["logreg"].weights
    assert {"merchant_category=travel", "channel=moto"} <= set(weights)
    assert learned["scale"].vars["is_night"] == 0.0
    assert 0.0 < learned["scale"].vars["country_changed"] < VAR_FLOOR
    counts = learned["scale"].counts
    assert counts["hour"] == counts["log_amount"] - 7 and counts["amount"] < len(stream)
    # River's predictions from the written-back objects are the learner's, and the learner's
    # batch predictions (the guardrails' reference sample) are River's.
    probe = [x for x, _ in _stream(200, seed=9)] + [{}, {"merchant_category=unseen": 1.0}]
    want_probe = [predict_one(reference, x) for x in probe]
    assert _prob_diff([predict_one(learned, x) for x in probe], want_probe) <= TOL
    assert _prob_diff(model.predict_many(probe), want_probe) <= TOL


@pytest.mark.parametrize(
    "entry, value",
    [
        (learner_compiled.LR, 0.0051),
        (learner_compiled.INTERCEPT_LR, 0.02),
        (learner_compiled.L2, 1e-4),
        (learner_compiled.CLIP, 0.5),
        (learner_compiled.WEIGHT_POS, 1.5),
    ],
    ids=["learning_rate", "intercept_lr", "l2", "clip", "loss_weight"],
)
def test_a_wrong_replica_is_detected(entry: int, value: float) -> None:
    """The comparison above is sharp enough: one hyperparameter off and it fails."""
    stream = _stream(2000)
    reference = build_pipeline()
    want = _river(reference, stream)
    model = FusedModel(build_pipeline())
    assert model.learner is not None
    model.learner.hp[entry] = value
    got = _fused(model, stream)
    assert _prob_diff(got, want) > TOL
    assert _max_diff(model.pipeline, reference) > TOL


def test_a_different_learning_rate_in_river_is_detected() -> None:
    stream = _stream(2000)
    reference = build_pipeline(ModelSettings(learning_rate=0.006))
    want = _river(reference, stream)
    model = FusedModel(build_pipeline(ModelSettings(learning_rate=0.005)))
    got = _fused(model, stream)
    assert _prob_diff(got, want) > TOL
    assert _max_diff(model.pipeline, reference) > TOL


def test_restore_learn_snapshot_round_trip() -> None:
    """A trainer's life: learn, snapshot, restart from the snapshot, learn on, snapshot:
    the same model as River learning the whole stream in one go."""
    stream = _stream(4000, seed=3)
    reference = build_pipeline()
    want = _river(reference, stream)

    first = FusedModel(build_pipeline())
    got = _fused(first, stream[:2500])
    raw = encode_snapshot(make_snapshot(first.pipeline, "m", 1, 2500, {}, {}, {}))

    restored = FusedModel(upgrade_pipeline(decode_snapshot(raw).load_model()))
    assert restored.learner is not None
    got += _fused(restored, stream[2500:])
    raw = encode_snapshot(make_snapshot(restored.pipeline, "m", 2, 4000, {}, {}, {}))
    final = decode_snapshot(raw).load_model()

    assert _prob_diff(got, want) <= TOL
    assert _max_diff(final, reference) <= TOL


def test_reading_the_pipeline_hands_it_over() -> None:
    """Whoever reads `pipeline` gets the learned state, and whatever they change in it (a
    rollback test sets weights) is what the learner goes on from."""
    stream = _stream(3000, seed=4)
    reference = build_pipeline()
    model = FusedModel(build_pipeline())
    want: list[float] = []
    got: list[float] = []
    for i in range(0, len(stream), 500):
        chunk = stream[i : i + 500]
        want += _river(reference, chunk)
        got += _fused(model, chunk)
        pipeline = model.pipeline
        assert _max_diff(pipeline, reference) <= TOL
        assert model.pipeline is pipeline  # the same River object, updated in place
        if i == 1000:
            for p in (pipeline, reference):
                p["logreg"]._weights["amount"] = 0.25
                p["logreg"].intercept = -3.0
                p["scale"].means["hour"] = 11.0
            probe = [x for x, _ in stream[:50]]
            want_probe = [predict_one(reference, x) for x in probe]
            assert _prob_diff(model.predict_many(probe), want_probe) <= TOL
    assert _prob_diff(got, want) <= TOL
    assert _max_diff(model.pipeline, reference) <= TOL


def test_a_reader_in_another_thread_costs_no_label() -> None:
    """A thread reading `pipeline` while the trainer learns (as tests poll a running trainer)
    sees whole labels only, and none is lost when the learner reloads after it."""
    stream = _stream(5000, seed=6)
    reference = build_pipeline()
    want = _river(reference, stream)
    model = FusedModel(build_pipeline())
    done = threading.Event()
    reads: list[int] = []
    errors: list[BaseException] = []

    def read() -> None:
        try:
            while not done.is_set():
                reads.append(len(model.pipeline["logreg"].weights))
        except BaseException as exc:  # noqa: BLE001  reported by the test below
            errors.append(exc)

    reader = threading.Thread(target=read)
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # hand the GIL over as often as possible
    try:
        reader.start()
        got = _fused(model, stream)
    finally:
        done.set()
        reader.join()
        sys.setswitchinterval(interval)
    assert not errors and reads
    assert _prob_diff(got, want) <= TOL
    assert _max_diff(model.pipeline, reference) <= TOL


def test_records_river_alone_takes_and_other_pipelines_learn_through_river() -> None:
    stream = _stream(1500, seed=5)
    # A feature River takes but the compiled path is not given (a bool, which msgspec refuses).
    odd = [
        (dict(x, is_night=True), y) if i % 100 == 0 else (x, y) for i, (x, y) in enumerate(stream)
    ]
    reference = build_pipeline()
    want = _river(reference, odd)
    model = FusedModel(build_pipeline())
    got = [
        (model.learn_any if i % 100 == 0 else model.predict_learn)(x, y, FRAUD_WEIGHT if y else 1.0)
        for i, (x, y) in enumerate(odd)
    ]
    assert _prob_diff(got, want) <= TOL
    assert _max_diff(model.pipeline, reference) <= TOL

    legacy = compose.Pipeline(
        ("scale", preprocessing.StandardScaler()),
        ("logreg", linear_model.LogisticRegression(optimizer=optim.SGD(0.005))),
    )
    adam = build_pipeline()
    adam["logreg"].optimizer = optim.Adam()
    for pipeline in (legacy, adam):
        assert not supported(pipeline)
        twin = FusedModel(pipeline)
        assert twin.learner is None
        clone = pipeline.clone()
        assert _fused(twin, stream[:300]) == _river(clone, stream[:300])
    with pytest.raises(TypeError):
        FastLearner(legacy)
