"""The broker stops and starts again under load: producer, scorer and trainer survive,
reconnect and carry on. (A memory-backed broker loses its data; the processes must not.)"""

from __future__ import annotations

import re

import orjson
import pytest

from infra.broker import EmbeddedBroker
from infra.config import load_settings
from infra.signing import SIGNING_ENV, VERIFY_ENV
from infra.topics import create_topics
from tests.conftest import TEST_SIGNING_KEY, TEST_VERIFY_KEY, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic, wait_for

pytestmark = pytest.mark.integration


_DISCONNECTED = re.compile(r"(?i)connection refused|transport failure|disconnected")


def test_processes_survive_a_broker_restart(tmp_path, monkeypatch) -> None:
    for key in [k for k in __import__("os").environ if k.startswith("FRAUDSTREAM_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv(SIGNING_ENV, TEST_SIGNING_KEY)  # snapshots are signed
    monkeypatch.setenv(VERIFY_ENV, TEST_VERIFY_KEY)
    broker = EmbeddedBroker()
    broker.start()
    settings = load_settings(
        bootstrap_servers=broker.bootstrap,
        partitions=2,
        mlflow_tracking_uri=f"sqlite:///{tmp_path}/mlflow.db",
        trainer={"snapshot_every_s": 1.0},
    )
    create_topics(settings)
    env = settings_env(settings)
    logs = {n: tmp_path / f"{n}.log" for n in ("score", "train", "produce")}
    try:
        with (
            fraudstream_process(
                ["train", "--no-mlflow", "--metrics-port", "0"], env, logs["train"]
            ) as train,
            fraudstream_process(["score", "--metrics-port", "0"], env, logs["score"]) as score,
            fraudstream_process(
                ["produce", "--rate", "200", "--duration", "60", "--label-delay", "0.5"],
                env,
                logs["produce"],
            ) as produce,
        ):
            first = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 200, 60)
            assert len(first) >= 200, "nothing scored before the outage"

            broker.stop()
            # Down until every process has noticed (and logged) the outage.
            wait_for(
                "every process to notice the outage",
                lambda: all(_DISCONNECTED.search(path.read_text()) for path in logs.values()),
                60,
            )
            broker.start()
            # Memory storage: the topics are gone with the old broker; an operator recreates them.
            create_topics(settings)

            # New transactions produced after the restart are scored, and labels learned again.
            after = read_topic(
                settings,
                settings.topics.scores,
                lambda m: (
                    len(m) >= 200 and any(orjson.loads(x.value())["model_version"] >= 1 for x in m)
                ),
                90,
            )
            snapshots = read_topic(
                settings, settings.topics.model_updates, lambda m: len(m) >= 1, 60
            )
            for name, proc in (("train", train), ("score", score), ("produce", produce)):
                assert proc.poll() is None, f"{name} died:\n{logs[name].read_text()[-3000:]}"
        assert len(after) >= 200, "the scorer did not carry on after the restart"
        assert snapshots, "the trainer did not publish after the restart"
        assert max(orjson.loads(m.value())["model_version"] for m in after) >= 1
        for name, path in logs.items():
            text = path.read_text()
            assert "Traceback" not in text, f"{name}:\n{text[-3000:]}"
            # Connection errors are logged once per condition, not once per message.
            refused = len(_DISCONNECTED.findall(text))
            assert refused < 20, f"{name} logged {refused} connection errors"
    finally:
        broker.stop()
