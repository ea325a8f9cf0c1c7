"""SIGTERM: in-flight scores flushed, offsets committed for exactly what was scored, a final
snapshot taken, exit status 0, within a bounded time."""

from __future__ import annotations

import signal
import threading
import time
import uuid

import orjson
import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from core.snapshot import decode_snapshot
from infra.broker import free_port
from infra.metrics import Metrics
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, metric_total, read_topic, wait_for

pytestmark = pytest.mark.integration

STOP_BOUND_S = 30.0


def _stop(proc) -> float:
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    proc.wait(STOP_BOUND_S)
    return time.monotonic() - t0


def test_scorer_sigterm_under_load_commits_exactly_what_it_scored(
    make_settings: SettingsFactory, tmp_path
) -> None:
    settings = make_settings(partitions=2)
    env = settings_env(settings)
    stop_producing = threading.Event()
    producer = threading.Thread(
        target=run_producer,
        args=(settings, ProduceOptions(rate=5000, count=40_000, label_coverage=0.0), Metrics()),
        kwargs={"stop": stop_producing},
    )
    with fraudstream_process(["score", "--metrics-port", "0"], env, tmp_path / "s.log") as score:
        producer.start()
        read_topic(settings, settings.topics.scores, lambda m: len(m) >= 5000, 60)
        took = _stop(score)
        stop_producing.set()
        producer.join(30)
    assert score.returncode == 0, (tmp_path / "s.log").read_text()[-2000:]
    print(f"scorer stopped {took:.2f} s after SIGTERM")

    reader = Consumer(
        {"bootstrap.servers": settings.bootstrap, "group.id": settings.scorer.group_id}
    )
    committed = reader.committed(
        [TopicPartition(settings.topics.transactions, p) for p in range(2)], timeout=10
    )
    reader.close()
    # A partition with nothing committed reports a negative sentinel offset.
    upto = {tp.partition: max(tp.offset, 0) for tp in committed}
    txs = read_topic(settings, settings.topics.transactions, lambda m: False, 8)
    scores = read_topic(settings, settings.topics.scores, lambda m: False, 8)
    scored = {orjson.loads(m.value())["transaction_id"] for m in scores}
    below = [
        orjson.loads(m.value())["transaction_id"] for m in txs if m.offset() < upto[m.partition()]
    ]
    assert sum(upto.values()) > 0, "nothing committed"
    assert len(below) == sum(upto.values())
    assert set(below) <= scored, "an offset was committed for a transaction without a score"
    # Scores were flushed: nothing scored beyond what was committed plus what was consumed.
    assert len(scored) >= len(below)


def test_trainer_sigterm_takes_a_final_snapshot_of_every_label(
    make_settings: SettingsFactory, tmp_path
) -> None:
    settings = make_settings(partitions=1)
    env = {**settings_env(settings), "FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S": "3600"}
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_LABELS"] = "1000000"
    outside = Producer({"bootstrap.servers": settings.bootstrap})
    n = 3000
    for i in range(n):
        tid = f"t-{uuid.uuid4().hex}"
        score = {"transaction_id": tid, "features": {"amount": float(i % 97), "x": i % 2}}
        outside.produce(settings.topics.scores, orjson.dumps(score), tid.encode())
        label = {"transaction_id": tid, "is_fraud": i % 10 == 0, "source": "investigation"}
        outside.produce(settings.topics.labels, orjson.dumps(label), tid.encode())
    outside.flush(30)
    port = free_port()
    log = tmp_path / "t.log"
    with fraudstream_process(
        ["train", "--no-mlflow", "--metrics-port", str(port)], env, log
    ) as train:
        # Every label read and learned; no snapshot is due before the stop.
        wait_for(
            f"the trainer to learn {n} labels",
            lambda: metric_total(port, "fraudstream_labels_learned_total") >= n,
            120,
        )
        took = _stop(train)
    assert train.returncode == 0, log.read_text()[-2000:]
    print(f"trainer stopped {took:.2f} s after SIGTERM")
    snaps = read_topic(settings, settings.topics.model_updates, lambda m: len(m) >= 1, 20)
    assert len(snaps) == 1, "exactly the final snapshot"
    final = decode_snapshot(snaps[-1].value())
    assert final.labels_learned == n
    assert final.resume_offsets[settings.topics.labels]["0"] == n
