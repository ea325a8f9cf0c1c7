"""The model lifecycle in MLflow over a real broker and a local (sqlite) MLflow store:

- every logged snapshot is a registry version with lineage, the champion alias on the model in
  service, old versions deleted beyond `registry.keep_versions`; `models:/<name>@champion`
  loaded with plain MLflow scores feature vectors exactly like the live scorer did;
- warm start: after a broker restart (model-updates empty) a scorer serves the champion at
  once and the trainer continues from it, numbering versions above it;
- guardrails hold back insane snapshots (counted, logged; nothing published);
- `fraudstream model rollback N` serves registry version N again and the trainer learns on
  from it;
- champion and challengers: a challenger that beats the champion is promoted (with
  hysteresis), published and registered as the champion.
"""

from __future__ import annotations

import logging
import math
import pickle
import random
import re
import subprocess
import sys
import threading
import time
import urllib.request
import uuid
from pathlib import Path

import cloudpickle
import mlflow
import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import KafkaError, Producer

from core.model import build_pipeline
from core.snapshot import Snapshot, decode_snapshot
from infra.broker import EmbeddedBroker
from infra.config import Settings, load_settings
from infra.metrics import Metrics
from infra.signing import SIGNING_ENV, VERIFY_ENV
from infra.topics import create_topics
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic, topic_reader, wait_for
from tests.records import score_record, synthetic_features
from trainer.arena import arena_of
from trainer.guardrails import Guardrails, guardrails_of
from trainer.quality import RollingQuality
from trainer.run import Trainer
from trainer.tracking import MlflowLogger

pytestmark = pytest.mark.integration


# -- helpers (also used by test_mlflow_server.py and test_snapshot_security.py) ---------------


def _no_unpickling(*args: object, **kwargs: object) -> object:
    raise AssertionError("something was unpickled")


def log_count(log: Path, pattern: str) -> int:
    return len(re.findall(pattern, log.read_text(errors="replace"))) if log.exists() else 0


def metrics_port(log: Path, procs: dict[Path, subprocess.Popen[bytes]]) -> int:
    pattern = r"metrics on http://127\.0\.0\.1:(\d+)/metrics"
    wait_for("metrics port", lambda: log_count(log, pattern), 30, procs, 0.1)
    return int(re.search(pattern, log.read_text()).group(1))  # type: ignore[union-attr]


def metric(port: int, name: str, labels: str = "") -> float:
    """Sum of the samples of `name` (whose labels contain `labels`) served on `port`."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    total = 0.0
    for m in re.finditer(rf"^{re.escape(name)}(\{{[^}}]*\}})? (\S+)$", text, re.MULTILINE):
        if labels in (m.group(1) or ""):
            total += float(m.group(2))
    return total


class Snapshots:
    """Every record of model-updates, read without joining a group."""

    def __init__(self, settings: Settings) -> None:
        topic = settings.topics.model_updates
        self.consumer = topic_reader(settings, topic, **{"enable.partition.eof": True})
        self.all: list[Snapshot] = []
        self.at_end = False

    def read(self) -> list[Snapshot]:
        """Everything up to the end of the topic now (the first call waits for the end)."""
        deadline = time.monotonic() + 15
        while True:
            batch = self.consumer.consume(1000, 0.1)
            for msg in batch:
                if msg.error() is None:
                    self.all.append(decode_snapshot(msg.value()))
                elif msg.error().code() == KafkaError._PARTITION_EOF:
                    self.at_end = True
            if (self.at_end and not batch) or time.monotonic() > deadline:
                return self.all

    def close(self) -> None:
        self.consumer.close()


def synthetic_pairs(n: int, seed: int, prefix: str) -> list[tuple[str, bytes, bytes]]:
    """(transaction id, Score JSON, Label JSON): fraud has larger amounts and is faster."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        tid = f"{prefix}-{i:05d}"
        fraud = rng.random() < 0.1
        features = synthetic_features(rng, fraud)
        score = score_record(tid, features, card_id=f"card-{i % 50}")
        label = {"transaction_id": tid, "is_fraud": fraud, "source": "investigation"}
        out.append((tid, orjson.dumps(score), orjson.dumps(label)))
    return out


def publish_pairs(settings: Settings, pairs: list[tuple[str, bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap})
    for tid, score, label in pairs:
        producer.produce(settings.topics.scores, score, tid.encode())
        producer.produce(settings.topics.labels, label, tid.encode())
    assert producer.flush(30) == 0


def mlflow_client(settings: Settings) -> mlflow.MlflowClient:
    uri = settings.mlflow_uri()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _ids(msgs: list) -> set[str]:
    return {orjson.loads(m.value())["transaction_id"] for m in msgs}


# -- 1. registry versions, lineage, retention; the champion scores like the scorer -----------


def test_registry_versions_with_lineage_and_champion_scores_like_the_scorer(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(registry={"keep_versions": 2})
    env = settings_env(settings)
    env["FRAUDSTREAM_TRAINER__MLFLOW_EVERY_S"] = "0"  # a model with every snapshot
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S"] = "0.5"
    env["FRAUDSTREAM_REGISTRY__KEEP_VERSIONS"] = "2"
    train_log, score_log = tmp_path / "train.log", tmp_path / "score.log"
    name = settings.model.name
    rounds, per_round = 4, 600
    with (
        fraudstream_process(["train", "--metrics-port", "0"], env, train_log) as train,
        fraudstream_process(["score", "--metrics-port", "0"], env, score_log) as score,
    ):
        procs = {train_log: train, score_log: score}
        for k in range(rounds):
            run_producer(
                settings,
                ProduceOptions(
                    rate=5000, count=per_round, seed=100 + k, label_delay_s=0.0, fraud_rate=0.05
                ),
                Metrics(),
                threading.Event(),
            )
            # One more model logged (and registered) per round.
            wait_for(
                f"model {k + 1} logged",
                lambda k=k: log_count(train_log, r"mlflow: logged model v") >= k + 1,
                60,
                procs,
            )
        train.terminate()
        assert train.wait(60) == 0, train_log.read_text()[-3000:]
        # The trainer's final snapshot is the champion; the scorer serves it: score more.
        tail = Snapshots(settings)
        latest = max(s.version for s in tail.read())
        tail.close()
        wait_for(
            "scorer on the latest model",
            lambda: log_count(score_log, rf"model v{latest} loaded"),
            30,
            procs,
        )
        run_producer(
            settings,
            ProduceOptions(rate=5000, count=300, seed=999, label_coverage=0.0),
            Metrics(),
            threading.Event(),
        )
        scores = read_topic(
            settings,
            settings.topics.scores,
            lambda m: len(_ids(m)) >= rounds * per_round + 300,
            60,
        )
    records = [orjson.loads(m.value()) for m in scores]
    logged = log_count(train_log, r"mlflow: logged model v")
    assert logged > 2, "retention needs more versions than it keeps"

    client = mlflow_client(settings)
    champion = client.get_model_version_by_alias(name, "champion")
    assert champion.tags["snapshot_version"] == str(latest)
    versions = client.search_model_versions(f"name='{name}'")
    # Retention: the newest two (the champion among them), older ones deleted with their files.
    assert len(versions) == 2, [v.version for v in versions]
    assert max(int(v.version) for v in versions) == logged
    assert str(champion.version) == str(logged)
    model_files = list(Path(tmp_path).glob("mlruns/models/*/artifacts/MLmodel"))
    assert len(model_files) == 2, model_files

    # Lineage on the version: snapshot number, labels, offsets covered, features, params, code.
    tags = champion.tags
    snap = next(s for s in tail.all if s.version == latest)
    assert int(tags["labels_learned"]) == snap.labels_learned > 0
    assert int(tags["labels_fraud"]) + int(tags["labels_legit"]) == snap.labels_learned
    assert orjson.loads(tags["processed_offsets"]) == snap.processed_offsets
    assert settings.topics.scores in orjson.loads(tags["resume_offsets"])
    features = orjson.loads(tags["features"])
    assert {"amount", "log_amount", "hour"} <= set(features)
    assert orjson.loads(tags["hyperparameters"])["learning_rate"] == settings.model.learning_rate
    assert float(tags["threshold"]) == settings.scorer.threshold
    assert tags["code_version"].startswith("fraudstream ")
    assert tags["river_version"] and tags["sha256"] == snap.sha256
    assert "roc_auc" in snap.metrics and float(tags["metric.roc_auc"]) == snap.metrics["roc_auc"]

    # The run: config as params, metrics over time with step = labels learned, the code version.
    run = client.get_run(champion.run_id)
    params = run.data.params
    assert params["model.learning_rate"] == str(settings.model.learning_rate)
    assert params["scorer.threshold"] == str(settings.scorer.threshold)
    assert params["registry.keep_versions"] == "2"
    assert "amount" in params["features.dense"].split(",")
    assert "kafka" not in " ".join(params) and "snapshot_signing" not in " ".join(params)
    assert run.data.tags["code_version"].startswith("fraudstream ")
    history = sorted(
        client.get_metric_history(run.info.run_id, "model_version"), key=lambda m: m.step
    )
    assert [int(m.value) for m in history] == sorted(s.version for s in tail.all)
    steps = {s.version: s.labels_learned for s in tail.all}
    assert [m.step for m in history] == [steps[int(m.value)] for m in history]

    # The MLflow model is code and a signed snapshot: nothing of ours is pickled.
    model_dir = model_files[0].parent
    assert not list(model_dir.rglob("*.pkl")) and (model_dir / "pyfunc_model.py").exists()
    assert "loader_module: mlflow.pyfunc.loaders.code_model" in model_files[0].read_text()
    assert (model_dir / "artifacts" / "snapshot.json").exists()

    # Plain MLflow: the champion scores the feature vectors exactly as the scorer did, and
    # loads with unpickling made impossible.
    mlflow.set_tracking_uri(settings.mlflow_uri())
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(SIGNING_ENV)
        mp.delenv(VERIFY_ENV)
        with pytest.raises(Exception, match=VERIFY_ENV):
            mlflow.pyfunc.load_model(f"models:/{name}@champion")
    with pytest.MonkeyPatch.context() as mp:
        for module in (pickle, cloudpickle):
            for fn in ("load", "loads"):
                mp.setattr(module, fn, _no_unpickling)
        mp.delenv(SIGNING_ENV)  # the public key is all it needs
        model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    assert model.metadata.signature is not None
    served = [r for r in records if r["model_version"] == latest]
    assert len(served) >= 300
    probs = model.predict(pd.DataFrame([r["features"] for r in served]))
    np.testing.assert_allclose(probs, [r["score"] for r in served], rtol=0, atol=1e-9)
    # ...and raw transactions in the wire format (an integer amount too).
    raw = pd.DataFrame(
        [
            {
                "transaction_id": "t1",
                "card_id": "c1",
                "amount": 950,
                "merchant_category": "jewelry",
                "timestamp": "2026-11-22T03:10:00Z",
                "country": "BR",
            }
        ]
    )
    p = model.predict(raw)
    assert p.shape == (1,) and 0.0 <= p[0] <= 1.0


# -- 2. warm start: broker restart, then the scorer serves the champion at once ---------------


def _own_settings(bootstrap: str, tmp_path: Path) -> Settings:
    suffix = uuid.uuid4().hex[:8]
    return load_settings(
        bootstrap_servers=bootstrap,
        partitions=2,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        scorer={"group_id": f"scorer-{suffix}"},
        trainer={"group_id": f"trainer-{suffix}", "snapshot_every_s": 0.5},
    )


def test_broker_restart_scorer_serves_champion_at_once_and_trainer_continues(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    del make_settings  # only for its clean FRAUDSTREAM_* environment
    broker = EmbeddedBroker()
    broker.start()
    try:
        settings = _own_settings(broker.bootstrap, tmp_path)
        create_topics(settings)
        env = settings_env(settings)
        first = synthetic_pairs(600, seed=1, prefix="a")
        log1 = tmp_path / "train-1.log"
        with fraudstream_process(["train", "--metrics-port", "0"], env, log1) as train:
            publish_pairs(settings, first)
            tail = Snapshots(settings)
            wait_for(
                "all labels learned",
                lambda: any(s.labels_learned == 600 for s in tail.read()),
                60,
                {log1: train},
            )
            tail.close()
        assert train.returncode == 0, log1.read_text()[-3000:]
        client = mlflow_client(settings)
        champion = client.get_model_version_by_alias(settings.model.name, "champion")
        v_champion = int(champion.tags["snapshot_version"])
        assert v_champion == max(s.version for s in tail.all)
        assert champion.tags["labels_learned"] == "600"

        # The broker loses everything (memory storage): model-updates is empty afterwards.
        port = broker.port
        broker.stop()
        broker = EmbeddedBroker(port=port)
        broker.start()
        create_topics(settings)

        score_log = tmp_path / "score.log"
        with fraudstream_process(["score", "--metrics-port", "0"], env, score_log) as score:
            procs = {score_log: score}
            wait_for("scorer assignment", lambda: log_count(score_log, r"assigned "), 60, procs)
            assert log_count(score_log, r"warm start: .* serving the registry champion")
            run_producer(
                settings,
                ProduceOptions(rate=2000, count=200, seed=5, label_coverage=0.0),
                Metrics(),
                threading.Event(),
            )
            scores = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 200, 60)
            # Served at once: not one score from an untrained model.
            assert {orjson.loads(m.value())["model_version"] for m in scores} == {v_champion}

            # The trainer starts from the champion too and numbers its snapshots above it.
            log2 = tmp_path / "train-2.log"
            with fraudstream_process(["train", "--metrics-port", "0"], env, log2) as train2:
                procs[log2] = train2
                publish_pairs(settings, synthetic_pairs(300, seed=2, prefix="b"))
                tail = Snapshots(settings)
                wait_for(
                    "labels learned on top of the champion",
                    lambda: any(s.labels_learned == 900 for s in tail.read()),
                    60,
                    procs,
                )
                tail.close()
                assert min(s.version for s in tail.all) == v_champion + 1
                assert "warm start" in log2.read_text()
                # The scorer takes the trainer's snapshots from now on.
                newest = max(s.version for s in tail.all)
                wait_for(
                    f"scorer on v{newest}",
                    lambda: log_count(score_log, rf"model v{newest} loaded"),
                    30,
                    procs,
                )
            assert train2.returncode == 0, log2.read_text()[-3000:]
        assert score.returncode == 0, score_log.read_text()[-3000:]
    finally:
        broker.stop()


# -- 3. guardrails ----------------------------------------------------------------------------


def test_guardrail_rules() -> None:
    settings = load_settings(guardrails={"min_labels": 50, "reference_size": 100})
    rng = random.Random(3)

    def sample(fraud: bool) -> dict[str, float]:
        amount = rng.lognormvariate(5.5 if fraud else 3.5, 1.0)
        return {"amount": amount, "log_amount": math.log1p(amount)}

    def rails_for(candidate_ranks_backwards: bool) -> Guardrails:
        rails = guardrails_of(settings)
        for _ in range(300):
            y = rng.random() < 0.2
            # The model in service ranked perfectly; the candidate (its progressive
            # predictions on the same trusted labels) too, or backwards.
            good, bad = (0.8, 0.2) if y else (0.2, 0.8)
            rails.observe(
                sample(y), y, 0.9 if y else 0.1, bad if candidate_ranks_backwards else good
            )
        return rails

    sane = build_pipeline(settings.model)
    assert rails_for(False).check(sane) == []
    rails = rails_for(True)
    assert [code for code, _ in rails.check(sane)] == ["quality"]

    # Scores on the reference sample out of bounds, above and below.
    loud = build_pipeline(settings.model.model_copy(update={"prior_fraud_rate": 0.9}))
    assert [code for code, _ in rails_for(False).check(loud)] == ["flag_rate", "mean_score"]
    mute = build_pipeline(settings.model.model_copy(update={"prior_fraud_rate": 1e-6}))
    assert [code for code, _ in rails_for(False).check(mute)] == ["mean_score_low"]

    # Non-finite parameters.
    broken = build_pipeline(settings.model)
    broken.learn_one({"amount": 1.0}, True)
    broken["logreg"]._weights["amount"] = float("nan")
    held = rails.check(broken)
    assert [code for code, _ in held] == ["non_finite"] and "logreg.weights[amount]" in held[0][1]

    disabled = settings.guardrails.model_copy(update={"enabled": False})
    off = guardrails_of(settings.model_copy(update={"guardrails": disabled}))
    assert off.check(broken) == []


def test_trainer_holds_back_insane_snapshots(
    make_settings: SettingsFactory, caplog: pytest.LogCaptureFixture
) -> None:
    # Every candidate's mean score (at least the 1% prior) is above this bound.
    settings = make_settings(partitions=1, guardrails={"max_mean_score": 0.001})
    settings = settings.model_copy(
        update={
            "trainer": settings.trainer.model_copy(
                update={"snapshot_every_labels": 100, "batch_size": 20}
            )
        }
    )
    publish_pairs(settings, synthetic_pairs(400, seed=7, prefix="g"))
    metrics = Metrics()
    trainer = Trainer(settings, metrics)
    thread = threading.Thread(target=trainer.run, daemon=True)
    with caplog.at_level(logging.WARNING):
        thread.start()
        wait_for("400 labels learned", lambda: trainer.labels_learned == 400, 60)
        trainer.stop()
        thread.join(30)
    held = metrics.registry.get_sample_value(
        "fraudstream_snapshots_held_total", {"reason": "mean_score"}
    )
    assert held is not None and held >= 3
    assert trainer.version == 0, "a held snapshot was published"
    assert "snapshot held back at" in caplog.text and "scorers keep v0" in caplog.text
    tail = Snapshots(settings)  # the trainer flushed on stop: this reads up to the end
    assert tail.read() == []
    tail.close()

    # A model with a NaN weight: held back, and the trainer goes back to the model in service.
    sane = make_settings(partitions=1)
    trainer = Trainer(sane, Metrics())
    try:
        trainer.pipeline.learn_one({"amount": 2.0}, True)
        trainer.pipeline["logreg"]._weights["amount"] = float("inf")
        trainer.state.since_snapshot = 1
        trainer.snapshot()
        assert trainer.version == 0
        assert all(math.isfinite(w) for w in trainer.pipeline["logreg"].weights.values())
        assert trainer.metrics.registry.get_sample_value(
            "fraudstream_snapshots_held_total", {"reason": "non_finite"}
        )
    finally:
        trainer.consumer.close()
        trainer.producer.flush(5)


# -- 4. rollback ------------------------------------------------------------------------------


def test_rollback_serves_an_earlier_version_and_the_trainer_learns_on_from_it(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1)
    env = settings_env(settings)
    env["FRAUDSTREAM_TRAINER__MLFLOW_EVERY_S"] = "0"
    # One snapshot (and registry version) per chunk of 300 labels.
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S"] = "3600"
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_LABELS"] = "300"
    log = tmp_path / "train.log"
    name = settings.model.name
    client = mlflow_client(settings)
    with fraudstream_process(["train", "--metrics-port", "0"], env, log) as train:
        procs = {log: train}
        for k in range(3):
            publish_pairs(settings, synthetic_pairs(300, seed=10 + k, prefix=f"r{k}"))
            wait_for(
                f"registry version {k + 1}",
                lambda k=k: (
                    log_count(log, rf"as registry version {k + 1} in")
                    and log_count(log, rf"logged model v\d+ \({300 * (k + 1)} labels\)")
                ),
                60,
                procs,
            )
        v1 = client.get_model_version(name, "1")
        assert str(client.get_model_version_by_alias(name, "champion").version) == "3"
        labels_v1 = int(v1.tags["labels_learned"])
        assert labels_v1 == 300
        tail = Snapshots(settings)
        before = max(s.version for s in tail.read())

        # A rollback publishes a new snapshot: without the signing key it is refused.
        unsigned = subprocess.run(
            [sys.executable, "-m", "fraudstream.cli", "model", "rollback", "1"],
            env={k: v for k, v in env.items() if k != SIGNING_ENV},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert unsigned.returncode == 2 and SIGNING_ENV in unsigned.stderr
        assert len(unsigned.stderr.strip().splitlines()) == 1, unsigned.stderr

        cli = subprocess.run(
            [sys.executable, "-m", "fraudstream.cli", "model", "rollback", "1"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert cli.returncode == 0, cli.stderr[-3000:]
        assert "rolled back to registry version 1" in cli.stdout
        # The champion alias moved to 1 (and moves on as soon as the trainer logs the model
        # it learns on from version 1: checked at the end).
        assert "champion -> 1" in cli.stdout
        assert client.get_model_version(name, "1").tags["rolled_back_as"] == str(before + 1)

        def adopted() -> Snapshot | None:
            snaps = tail.read()
            return next(
                (s for s in snaps if s.origin == "trainer" and s.version > before + 1), None
            )

        after = wait_for("the trainer's snapshot after the rollback", adopted, 30, procs)
        rolled = [s for s in tail.all if s.origin == "rollback"]
        assert len(rolled) == 1 and rolled[0].version == before + 1
        assert rolled[0].registry_version == 1
        # The trainer learns on from version 1's model: nothing new learned since.
        assert after.labels_learned == labels_v1
        old = next(s for s in tail.all if s.origin == "trainer" and s.labels_learned == 300)
        a, b = after.load_model()["logreg"], old.load_model()["logreg"]
        assert a.weights == pytest.approx(b.weights, abs=1e-12)
        assert "rollback to registry version 1 adopted" in log.read_text()
        # ...then learns new labels on top of it (in the final snapshot).
        publish_pairs(settings, synthetic_pairs(100, seed=20, prefix="r-after"))
        port = metrics_port(log, procs)
        wait_for(
            "labels learned after the rollback",
            lambda: metric(port, "fraudstream_labels_learned_total") >= 1000,
            30,
            procs,
        )
        train.terminate()
        assert train.wait(60) == 0, log.read_text()[-3000:]
        assert max(s.labels_learned for s in tail.read()[-1:]) == labels_v1 + 100
        tail.close()
    # The adopted model, logged again, is the champion once more.
    champion = client.get_model_version_by_alias(name, "champion")
    assert int(champion.version) > 3
    assert int(champion.tags["labels_learned"]) == labels_v1 + 100


# -- 5. champion and challengers --------------------------------------------------------------


def _quality(auc_high: bool, n: int = 60) -> RollingQuality:
    """A rolling quality whose ROC AUC is 1 (`auc_high`) or 0."""
    q = RollingQuality(500, 0.5)
    for i in range(n):
        y = i % 5 == 0
        q.update(y, (0.9 if y else 0.1) if auc_high else (0.1 if y else 0.9))
    return q


def test_arena_promotes_by_margin_over_consecutive_checks_with_hysteresis() -> None:
    settings = load_settings(
        challengers={
            "candidates": [{"name": "steady", "learning_rate": 0.1}],
            "margin": 0.05,
            "checks": 2,
            "min_labels": 20,
        }
    )
    arena = arena_of(settings)
    assert arena.champion == "default" and [c.name for c in arena.challengers] == ["steady"]
    assert arena.challengers[0].model.learning_rate == 0.1
    arena.labels_since_promotion = 100
    champion = _quality(auc_high=False)
    arena.challengers[0].quality = _quality(auc_high=True)
    assert arena.check(champion) is None  # ahead once: not yet
    assert arena.check(_quality(auc_high=True)) is None  # not ahead: the streak restarts
    assert arena.check(champion) is None
    winner = arena.check(champion)
    assert winner is not None and winner.name == "steady"
    pipeline, quality, promotion = arena.promote(winner, "old-pipeline", champion)
    assert (arena.champion, arena.promotions) == ("steady", 1)
    assert arena.fraud_weight == settings.model.fraud_weight
    assert quality is winner.quality and pipeline is winner.pipeline
    assert [(c.name, c.pipeline) for c in arena.challengers] == [("default", "old-pipeline")]
    assert "'steady' promoted over 'default'" in promotion.describe()

    # Hysteresis: the demoted champion, now far ahead, waits `min_labels` labels first.
    arena.challengers[0].quality = _quality(auc_high=True)
    assert arena.check(_quality(auc_high=False)) is None
    assert arena.check(_quality(auc_high=False)) is None
    arena.labels_since_promotion = 20
    assert arena.check(_quality(auc_high=False)) is None
    assert arena.check(_quality(auc_high=False)).name == "default"

    # A restored champion takes its slot back from the configured candidates.
    again = arena_of(settings)
    again.restored("steady")
    assert again.champion == "steady" and [c.name for c in again.challengers] == ["default"]
    assert arena_of(load_settings()).check(champion) is None  # no challengers: nothing to do


def test_trainer_promotes_a_better_challenger_and_publishes_and_registers_it(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    # The configured model learns with a step far too large; the challenger with a sane one.
    settings = make_settings(
        partitions=1,
        model={"learning_rate": 10.0},
        guardrails={"enabled": False},
        challengers={
            "candidates": [{"name": "steady", "learning_rate": 0.1}],
            "margin": 0.03,
            "checks": 2,
            "min_labels": 300,
        },
    )
    settings = settings.model_copy(
        update={
            "trainer": settings.trainer.model_copy(
                update={"snapshot_every_labels": 100, "batch_size": 20, "mlflow_every_s": 0}
            )
        }
    )
    publish_pairs(settings, synthetic_pairs(1500, seed=5, prefix="c"))
    metrics = Metrics()
    logger = MlflowLogger(settings, {"model.learning_rate": 10.0})
    trainer = Trainer(settings, metrics, logger)
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    wait_for("1500 labels learned", lambda: trainer.labels_learned == 1500, 60)
    trainer.stop()
    thread.join(60)
    assert not thread.is_alive()
    assert metrics.registry.get_sample_value("fraudstream_promotions_total") == 1
    assert trainer.arena.champion == "steady"
    tail = Snapshots(settings)
    snaps = tail.read()
    tail.close()
    first = next(i for i, s in enumerate(snaps) if s.candidate == "steady")
    assert first > 0 and all(s.candidate == "default" for s in snaps[:first])
    assert all(s.candidate == "steady" for s in snaps[first:])
    assert snaps[-1].hyperparameters["learning_rate"] == 0.1
    assert snaps[-1].metrics["roc_auc"] > snaps[first - 1].metrics["roc_auc"]
    # Snapshots carry the challengers: before the promotion "steady", after it the demoted one.
    assert [c.name for c in snaps[first - 1].challengers] == ["steady"]
    [demoted] = snaps[-1].challengers
    assert demoted.name == "default" and demoted.hyperparameters["learning_rate"] == 10.0
    assert snaps[-1].promotions == 1 and dict(snaps[-1].load_challengers())["default"]

    client = mlflow_client(settings)
    champion = client.get_model_version_by_alias(settings.model.name, "champion")
    assert champion.tags["candidate"] == "steady"
    run = client.get_run(champion.run_id)
    assert "'steady' promoted over 'default'" in run.data.tags["promotion.last"]
    assert client.get_metric_history(run.info.run_id, "promotions")[-1].value == 1
    assert client.get_metric_history(run.info.run_id, "challenger.default.roc_auc")
    assert client.get_metric_history(run.info.run_id, "challenger.default.log_loss")
