"""Challengers in snapshots: signed with the champion, restored by a restarted trainer (trained,
not from scratch), and shadow-scored by scorers (`scorer.shadow`) exactly as River scores them."""

from __future__ import annotations

import json
import random
import threading
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.codec import decode_score
from core.features import FeatureBuilder
from core.model import build_pipeline, predict_one
from core.shadow import ShadowModels
from core.snapshot import (
    Snapshot,
    SnapshotError,
    challenger_snapshot,
    decode_snapshot,
    encode_snapshot,
    make_snapshot,
)
from infra.config import Settings, load_settings
from infra.metrics import Metrics
from infra.signing import parse_private_key, sign, verify
from tests.conftest import TEST_SIGNING_KEY, SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, wait_for
from tests.records import score_record
from tests.test_mlflow_lifecycle import Snapshots, publish_pairs, synthetic_pairs
from tests.test_model_compiled_mirror import _transactions
from trainer.arena import Arena, arena_of
from trainer.quality import RollingQuality
from trainer.run import Trainer

KEY = parse_private_key(TEST_SIGNING_KEY, "test key")
PUBLIC = KEY.public_key()
CANDIDATES = [{"name": "steady", "learning_rate": 0.1, "fraud_weight": 3.0}]


def _settings(**challengers: Any) -> Settings:
    return load_settings(challengers={"candidates": CANDIDATES, **challengers})


def _train(pipeline: Any, n: int, seed: int, fraud_weight: float = 1.0) -> Any:
    rng = random.Random(seed)
    for x in FeatureBuilder().build(_transactions(n, seed)).dicts():
        y = x["amount"] > 300 or rng.random() < 0.05
        pipeline.learn_one(x, y, w=fraud_weight if y else 1.0)
    return pipeline


def _trained_arena(settings: Settings, n: int = 300) -> Arena:
    arena = arena_of(settings)
    rng = random.Random(7)
    for x in FeatureBuilder().build(_transactions(n, 7)).dicts():
        arena.learn(x, x["amount"] > 300 or rng.random() < 0.05)
    arena.promotions, arena.labels_since_promotion = 2, 123
    arena.challengers[0].streak = 1
    return arena


def _snapshot(
    arena: Arena | None = None, key: Ed25519PrivateKey | None = KEY, version: int = 1
) -> Snapshot:
    fields = arena.snapshot_fields() if arena is not None else {}
    return make_snapshot(
        _train(build_pipeline(), 200, 1),
        "fraudstream-fraud",
        version,
        300,
        {"scores": {"0": 10}},
        {"scores": {"0": 12}},
        {"roc_auc": 0.9},
        key=key,
        candidate="default",
        **fields,
    )


def _weights(pipeline: Any) -> tuple[dict[str, float], float, dict[str, float]]:
    return (
        dict(pipeline["logreg"].weights),
        pipeline["logreg"].intercept,
        dict(pipeline["scale"].means),
    )


# -- the wire format --------------------------------------------------------------------------


def test_challengers_round_trip_signed() -> None:
    arena = _trained_arena(_settings())
    snap = _snapshot(arena)
    decoded = decode_snapshot(encode_snapshot(snap))
    decoded.verify(PUBLIC)
    [state] = decoded.challengers
    assert state.name == "steady" and state.hyperparameters["learning_rate"] == 0.1
    assert state.labels_seen == 300 and state.streak == 1 and "log_loss" in state.metrics
    assert (decoded.promotions, decoded.labels_since_promotion) == (2, 123)
    [(name, pipeline)] = decoded.load_challengers()
    assert name == "steady"
    assert _weights(pipeline) == _weights(arena.challengers[0].pipeline)
    # A challenger is ~1 KB of JSON: snapshots stay small.
    assert len(encode_snapshot(snap)) < 3 * len(encode_snapshot(_snapshot()))


@pytest.mark.parametrize(
    "change",
    # Another model, another name, other settings, none at all, or one weight altered: the
    # signature covers the challengers whole.
    ["swap_model", "rename", "hyperparameters", "drop", "garble"],
)
def test_tampered_challengers_are_refused(change: str) -> None:
    snap = _snapshot(_trained_arena(_settings()))
    record = orjson.loads(encode_snapshot(snap))
    state = record["challengers"][0]
    if change == "swap_model":
        other = challenger_snapshot("steady", build_pipeline(), state["hyperparameters"])
        state["model"] = other.model.model_dump(mode="json")
    elif change == "rename":
        state["name"] = "other"
    elif change == "hyperparameters":
        state["hyperparameters"]["learning_rate"] = 5.0
    elif change == "drop":
        record["challengers"] = []
    else:
        state["model"]["logreg"]["weights"]["amount"] += 1e-12
    tampered = decode_snapshot(orjson.dumps(record))
    with pytest.raises(SnapshotError) as err:
        tampered.verify(PUBLIC)
    assert err.value.reason == "bad_signature"


def test_snapshots_without_challengers_still_load() -> None:
    """Written before challengers were snapshotted: the fields are absent from the wire and
    from what was signed."""
    record = orjson.loads(encode_snapshot(_snapshot(key=None)))
    for field in ("challengers", "promotions", "labels_since_promotion", "signature"):
        record.pop(field)
    record["signature"] = sign(KEY, orjson.dumps(record, option=orjson.OPT_SORT_KEYS))
    old = decode_snapshot(orjson.dumps(record))
    old.verify(PUBLIC)
    assert old.challengers == [] and old.load_challengers() == []
    assert old.load_model() is not None
    assert ShadowModels.from_snapshot(old) is None

    arena = arena_of(_settings())
    arena.restored(old.candidate, old.hyperparameters)
    arena.restore_challengers(old)
    [c] = arena.challengers
    assert c.name == "steady" and not c.pipeline["logreg"].weights  # untrained, as before


def test_a_reader_that_does_not_know_the_field_verifies_it() -> None:
    """Older scorers sign every field found on the wire, unknown ones included."""
    raw = encode_snapshot(_snapshot(_trained_arena(_settings())))
    record = json.loads(raw)
    payload = {k: v for k, v in record.items() if k != "signature"}
    assert verify(PUBLIC, orjson.dumps(payload, option=orjson.OPT_SORT_KEYS), record["signature"])


# -- the trainer's arena ----------------------------------------------------------------------


def test_arena_restores_its_challengers() -> None:
    settings = _settings()
    arena = _trained_arena(settings)
    snap = decode_snapshot(encode_snapshot(_snapshot(arena)))

    again = arena_of(settings)
    again.restored(snap.candidate, snap.hyperparameters)
    again.restore_challengers(snap)
    [c] = again.challengers
    assert _weights(c.pipeline) == _weights(arena.challengers[0].pipeline)
    assert c.model.learning_rate == 0.1 and c.streak == 1
    assert (again.promotions, again.labels_since_promotion) == (2, 123)
    # It learns on from there (not a shared object: the snapshot's copy).
    x = FeatureBuilder().build(_transactions(1, 99)).row_dict(0)
    again.learn(x, True)
    assert _weights(c.pipeline) != _weights(arena.challengers[0].pipeline)

    # Its settings changed since: it starts untrained under the new ones.
    changed = load_settings(challengers={"candidates": [{**CANDIDATES[0], "learning_rate": 0.2}]})
    fresh = arena_of(changed)
    fresh.restore_challengers(snap)
    assert not fresh.challengers[0].pipeline["logreg"].weights
    # No longer configured: dropped.
    none = arena_of(load_settings())
    none.restore_challengers(snap)
    assert none.challengers == []


def test_arena_restores_the_demoted_champion_after_a_promotion() -> None:
    settings = _settings()
    arena = _trained_arena(settings)
    demoted = _train(build_pipeline(settings.model), 100, 3)
    arena.promote(arena.challengers[0], demoted, RollingQuality(500, 0.5))
    assert arena.champion == "steady" and arena.challengers[0].name == "default"
    snap = decode_snapshot(encode_snapshot(_snapshot(arena)))

    again = arena_of(settings)
    again.restored("steady", snap.challengers[0].hyperparameters)
    again.restore_challengers(snap)
    assert again.champion == "steady"
    [c] = again.challengers
    assert c.name == "default" and _weights(c.pipeline) == _weights(demoted)
    assert again.promotions == 3


def test_a_diverged_challenger_is_reset_not_snapshotted() -> None:
    arena = _trained_arena(_settings())
    arena.challengers[0].pipeline["logreg"]._weights["amount"] = float("nan")
    [state] = arena.snapshot_fields()["challengers"]
    assert arena.challengers[0].quality.seen == 0  # started over
    assert not arena.challengers[0].pipeline["logreg"].weights
    assert state.name == "steady" and state.labels_seen == 0


def test_challenger_metrics_for_mlflow() -> None:
    metrics = _trained_arena(_settings()).run_metrics()
    assert {"challenger.steady.roc_auc", "challenger.steady.log_loss"} <= set(metrics)


# -- shadow scoring ---------------------------------------------------------------------------


def test_shadow_scores_agree_with_river_to_1e_9() -> None:
    settings = _settings()
    arena = _trained_arena(settings, n=2000)
    snap = decode_snapshot(encode_snapshot(_snapshot(arena)))
    shadow = ShadowModels.from_snapshot(snap)
    assert shadow is not None and shadow.names == ("steady",)
    txs = _transactions(300, 42)
    # A category and a channel the challenger never saw.
    txs.append(txs[0].model_copy(update={"merchant_category": "never-seen", "channel": "atm"}))
    batch = FeatureBuilder().build(txs)
    reference = np.array([predict_one(arena.challengers[0].pipeline, x) for x in batch.dicts()])
    scores = shadow.scores(batch)
    assert set(scores) == {"steady"}
    np.testing.assert_allclose(scores["steady"], reference, rtol=0, atol=1e-9)
    assert reference.std() > 0.01  # a trained model, not a constant
    per_record = shadow.per_record(batch)
    assert len(per_record) == len(batch)
    assert per_record[5] == {"steady": pytest.approx(reference[5], abs=1e-9)}
    # The Score wire field: optional, old records parse without it.
    record = score_record("t", batch.row_dict(5))
    assert decode_score(orjson.dumps(record)).challenger_scores is None
    shadowed = decode_score(orjson.dumps({**record, "challenger_scores": per_record[5]}))
    assert shadowed.challenger_scores == per_record[5]


def test_a_challenger_that_is_not_model_data_is_refused_at_snapshot_time() -> None:
    """Another learner, or a diverged one (the arena resets those first), cannot be written as
    data: the snapshot is not made, rather than made with a model no reader can build."""
    from river import linear_model

    with pytest.raises(SnapshotError, match="challenger 'odd': cannot write"):
        challenger_snapshot("odd", linear_model.LogisticRegression(), {})
    nan = _train(build_pipeline(), 100, 2)
    nan["logreg"]._weights["amount"] = float("nan")
    with pytest.raises(SnapshotError, match="challenger 'nan'.*finite"):
        challenger_snapshot("nan", nan, {})
    good = challenger_snapshot("good", _train(build_pipeline(), 100, 1), {})
    snap = make_snapshot(build_pipeline(), "m", 1, 0, {}, {}, {}, challengers=[good], key=None)
    shadow = ShadowModels.from_snapshot(snap)
    assert shadow is not None and shadow.names == ("good",)
    assert ShadowModels.from_snapshot(_snapshot()) is None
    records = shadow.per_record(FeatureBuilder().build(_transactions(5, 3)))
    assert [set(r) for r in records] == [{"good"}] * 5
    assert load_settings().scorer.shadow is False


# -- over a real broker: a trainer killed and restarted ---------------------------------------


def _reference(settings: Settings, pairs: list[tuple[str, bytes, bytes]]) -> Any:
    """The challenger trained offline on `pairs` in order, as the trainer's arena trains it."""
    model = settings.model.model_copy(
        update={k: v for k, v in CANDIDATES[0].items() if k != "name"}
    )
    pipeline = build_pipeline(model)
    for _tid, score, label in pairs:
        x, y = orjson.loads(score)["features"], orjson.loads(label)["is_fraud"]
        predict_one(pipeline, x)
        pipeline.learn_one(x, y, w=model.fraud_weight if y else 1.0)
    return pipeline


def _assert_same(pipeline: Any, reference: Any) -> None:
    got, want = _weights(pipeline), _weights(reference)
    assert got[0].keys() == want[0].keys() and got[0]
    for k, v in want[0].items():
        assert got[0][k] == pytest.approx(v, rel=1e-12, abs=1e-12)
    assert got[1] == pytest.approx(want[1], rel=1e-12)


@pytest.mark.integration
def test_a_restarted_trainer_goes_on_with_its_challengers_trained(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(
        partitions=1,
        guardrails={"enabled": False},
        # Never promoted here: the challenger stays a challenger.
        challengers={"candidates": CANDIDATES, "min_labels": 1_000_000},
    )
    settings = settings.model_copy(
        update={
            "trainer": settings.trainer.model_copy(
                update={"snapshot_every_labels": 100, "snapshot_every_s": 0.5}
            )
        }
    )
    env = settings_env(settings)
    env["FRAUDSTREAM_CHALLENGERS__CANDIDATES"] = json.dumps(CANDIDATES)
    env["FRAUDSTREAM_CHALLENGERS__MIN_LABELS"] = "1000000"
    env["FRAUDSTREAM_GUARDRAILS__ENABLED"] = "false"
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_LABELS"] = "100"
    first = synthetic_pairs(400, seed=11, prefix="k")
    second = synthetic_pairs(300, seed=12, prefix="l")

    log1 = tmp_path / "train-1.log"
    tail = Snapshots(settings)
    try:
        with fraudstream_process(["train", "--no-mlflow"], env, log1) as train:
            publish_pairs(settings, first)
            wait_for(
                "400 labels in a snapshot",
                lambda: any(s.labels_learned == 400 for s in tail.read()),
                90,
                {log1: train},
            )
            train.kill()  # SIGKILL: no final snapshot, no clean shutdown
            train.wait(30)
        last = max(tail.read(), key=lambda s: s.version)
    finally:
        tail.close()
    assert last.labels_learned == 400
    [(name, saved)] = last.load_challengers()
    assert name == "steady"
    _assert_same(saved, _reference(settings, first))

    trainer = Trainer(settings, Metrics())
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    try:
        # Restored trained, the very weights it had: not untrained, not retrained.
        wait_for(
            "the challenger restored",
            lambda: (
                trainer.labels_learned == 400
                and [c.name for c in trainer.arena.challengers] == ["steady"]
                and _weights(trainer.arena.challengers[0].pipeline) == _weights(saved)
            ),
            30,
        )
        publish_pairs(settings, second)
        wait_for("700 labels learned", lambda: trainer.labels_learned == 700, 90)
    finally:
        trainer.stop()
        thread.join(60)
    assert not thread.is_alive()
    # It went on learning from there: as one challenger trained on all 700 labels in order.
    _assert_same(trainer.arena.challengers[0].pipeline, _reference(settings, first + second))
    tail = Snapshots(settings)
    final = max(tail.read(), key=lambda s: s.version)
    tail.close()
    assert final.labels_learned == 700 and final.challengers[0].labels_seen == 300
