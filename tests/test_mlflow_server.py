"""A real tracking server: `mlflow server` as a process (sqlite backend, local artifact root),
the trainer logging to it over HTTP. The server is stopped mid-run: learning and Kafka
snapshots go on, the failed attempts are counted; when it returns, logging catches up (every
snapshot's metrics, the model in service registered as the champion)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

from infra.broker import free_port
from infra.metrics import Metrics
from infra.registry import champion_snapshot
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic, wait_for
from tests.test_mlflow_lifecycle import (
    Snapshots,
    log_count,
    metric,
    metrics_port,
    publish_pairs,
    synthetic_pairs,
)

pytestmark = pytest.mark.integration


class MlflowServer:
    """`mlflow server` in its own process group (it starts uvicorn workers), on loopback."""

    def __init__(self, root: Path, port: int) -> None:
        self.root = root
        self.port = port
        self.uri = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout_s: float = 60.0) -> None:
        self.starts += 1
        log = (self.root / f"mlflow-server-{self.starts}.log").open("wb")
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "mlflow"),
                "server",
                "--backend-store-uri",
                f"sqlite:///{self.root / 'server.db'}",
                "--artifacts-destination",
                str(self.root / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                "1",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while not self.healthy():
            assert self.proc.poll() is None, self.log_tail()
            if time.monotonic() > deadline:
                self.stop()
                pytest.fail(f"mlflow server not healthy after {timeout_s:.0f} s\n{self.log_tail()}")
            time.sleep(0.2)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.uri}/health", timeout=1) as resp:
                return resp.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, signal.SIGTERM)  # its own group: the server and its workers
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        deadline = time.monotonic() + 10
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self) -> str:
        return (self.root / f"mlflow-server-{self.starts}.log").read_text()[-3000:]


@pytest.fixture
def mlflow_server(tmp_path: Path):
    root = tmp_path / "server"
    root.mkdir()
    server = MlflowServer(root, free_port())
    try:
        yield server
    finally:
        server.stop()


def test_trainer_logs_to_a_tracking_server_keeps_learning_while_it_is_down_and_catches_up(
    make_settings: SettingsFactory, mlflow_server: MlflowServer, tmp_path: Path
) -> None:
    started = time.monotonic()
    mlflow_server.start()
    print(f"\nmlflow server up in {time.monotonic() - started:.1f} s")
    settings = make_settings(partitions=1)
    settings = settings.model_copy(update={"mlflow_tracking_uri": mlflow_server.uri})
    env = settings_env(settings)
    assert env["FRAUDSTREAM_MLFLOW_TRACKING_URI"] == mlflow_server.uri
    env["FRAUDSTREAM_TRAINER__MLFLOW_EVERY_S"] = "0"
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S"] = "3600"
    # A snapshot exactly every 200 labels (one record per loop turn).
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_LABELS"] = "200"
    env["FRAUDSTREAM_TRAINER__BATCH_SIZE"] = "1"
    env["FRAUDSTREAM_TRAINER__MLFLOW_RETRY_MAX_S"] = "2"
    log = tmp_path / "train.log"
    name = settings.model.name
    client = mlflow.MlflowClient(tracking_uri=mlflow_server.uri, registry_uri=mlflow_server.uri)
    tail = Snapshots(settings)

    def champion_labels() -> int:
        try:
            mv = client.get_model_version_by_alias(name, "champion")
        except mlflow.exceptions.MlflowException:
            return 0
        return int(mv.tags["labels_learned"])

    with fraudstream_process(["train", "--metrics-port", "0"], env, log) as train:
        procs = {log: train}
        port = metrics_port(log, procs)
        publish_pairs(settings, synthetic_pairs(400, seed=31, prefix="up"))
        wait_for("a registered version", lambda: champion_labels() == 400, 60, procs)
        assert metric(port, "fraudstream_mlflow_failures_total") == 0

        # Server down: the trainer learns on and publishes snapshots; logging fails, counted.
        mlflow_server.stop()
        publish_pairs(settings, synthetic_pairs(600, seed=32, prefix="down"))
        wait_for(
            "snapshots published while MLflow is down",
            lambda: any(s.labels_learned == 1000 for s in tail.read()),
            60,
            procs,
        )
        wait_for(
            "failed logging attempts counted",
            lambda: metric(port, "fraudstream_mlflow_failures_total") >= 2,
            30,
            procs,
        )
        assert metric(port, "fraudstream_labels_learned_total") == 1000
        assert metric(port, "fraudstream_mlflow_pending") > 0
        assert "mlflow unavailable" in log.read_text()
        outage = [s.version for s in tail.all if s.labels_learned > 400]
        assert len(outage) == 3  # at 600, 800 and 1000 labels

        # Server back: the backlog is logged, the model in service registered.
        mlflow_server.start()
        wait_for("logging caught up", lambda: champion_labels() == 1000, 60, procs)
        wait_for(
            "nothing pending", lambda: metric(port, "fraudstream_mlflow_pending") == 0, 30, procs
        )
        assert log_count(log, r"mlflow reachable again")
        champion = client.get_model_version_by_alias(name, "champion")
        history = client.get_metric_history(champion.run_id, "model_version")
        logged_versions = sorted(int(m.value) for m in history)
        assert logged_versions == sorted(s.version for s in tail.all)
        assert {int(m.step) for m in history} >= {600, 800, 1000}
    assert train.returncode == 0, log.read_text()[-3000:]
    tail.close()

    # Plain MLflow over HTTP (artifacts proxied by the server) loads the champion.
    mlflow.set_tracking_uri(mlflow_server.uri)
    model = mlflow.pyfunc.load_model(f"models:/{name}@champion")
    latest = max(tail.all, key=lambda s: s.version)
    features = [_features(i) for i in range(5)]
    expected = [latest.load_model().predict_proba_one(x).get(True, 0.0) for x in features]
    np.testing.assert_allclose(model.predict(pd.DataFrame(features)), expected, atol=1e-12)
    assert (mlflow_server.root / "artifacts").is_dir()
    # What a warm start would serve, downloaded from the server.
    warm = champion_snapshot(settings)
    assert warm is not None and warm.origin == "registry"
    assert (warm.version, warm.labels_learned) == (latest.version, 1000)


def _features(i: int) -> dict[str, float]:
    return {"amount": 10.0 * (i + 1), "log_amount": float(i), "hour": float(i)}


def test_scorer_scores_at_once_when_the_tracking_server_is_down(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Empty model-updates, registry unreachable: no champion, but no wait either."""
    settings = make_settings(partitions=1)
    env = settings_env(settings)
    env["FRAUDSTREAM_MLFLOW_TRACKING_URI"] = f"http://127.0.0.1:{free_port()}"  # nothing there
    log = tmp_path / "score.log"
    with fraudstream_process(["score", "--metrics-port", "0"], env, log) as score:
        procs = {log: score}
        started = time.monotonic()
        wait_for("scorer assignment", lambda: log_count(log, r"assigned "), 30, procs)
        assert time.monotonic() - started < 20
        assert "warm start: registry champion unavailable" in log.read_text()
        opts = ProduceOptions(rate=2000, count=100, seed=51, label_coverage=0.0)
        run_producer(settings, opts, Metrics(), threading.Event())
        scores = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 100, 30)
        assert len(scores) >= 100
    assert score.returncode == 0, log.read_text()[-3000:]
