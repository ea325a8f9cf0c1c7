"""Pieces shared by the benchmarks: topics, pre-loading, a passthrough, an output reader."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from core.contracts import Transaction
from fraudstream.benchmark.model import publish_trained_model
from infra.config import Settings, Topics
from infra.kafka import (
    common_config,
    make_consumer,
    make_producer,
    produce_waiting,
    ready_records,
)
from infra.signing import private_pem, public_pem, signing_key, verify_key
from producer.generator import TransactionGenerator

log = logging.getLogger(__name__)


def uid() -> str:
    return uuid.uuid4().hex[:8]


def iso(ts: float) -> str:
    """A Unix time as the ISO 8601 UTC text the records carry."""
    return datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


def create_topics(settings: Settings, names: list[str], partitions: int) -> None:
    admin = AdminClient(common_config(settings))
    for fut in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        fut.result()


def delete_topics(settings: Settings, names: list[str]) -> None:
    """Drop a finished measurement's topics: an in-memory broker that keeps every earlier
    round's records slows down, and the later parts would measure that instead."""
    admin = AdminClient(common_config(settings))
    for fut in admin.delete_topics(names, operation_timeout=30).values():
        try:
            fut.result()
        except Exception as exc:  # noqa: BLE001  best effort: a broker may refuse or lack the API
            log.debug("topic not deleted: %s", exc)


def topics_of(topics: Topics) -> list[str]:
    """The topics `bench_topics` made for one measurement (the source excluded)."""
    return [
        topics.scores, topics.labels, topics.model_updates, topics.transactions_dlq,
        topics.labels_dlq,
    ]  # fmt: skip


def bench_topics(
    settings: Settings, source: str, sink: str, partitions: int, trained_model: bool = True
) -> Topics:
    """Topic names for a scorer reading `source` and writing `sink`; creates the extras and,
    with `trained_model`, publishes the model the bench scorers serve (`model.py`)."""
    topics = Topics(
        transactions=source,
        scores=sink,
        labels=f"{sink}-labels",
        model_updates=f"{sink}-models",
        transactions_dlq=f"{sink}-dlq",
        labels_dlq=f"{sink}-labels-dlq",
    )
    create_topics(settings, [topics.labels, topics.transactions_dlq, topics.labels_dlq], 1)
    create_topics(settings, [topics.model_updates], 1)
    if trained_model:
        publish_trained_model(settings, topics.model_updates)
    return topics


def records(n: int, seed: int = 7) -> list[dict[str, object]]:
    generator = TransactionGenerator(seed=seed, fraud_rate=0.01)
    t0 = datetime.now(UTC)
    return [generator.next(t0 + timedelta(milliseconds=i))[0] for i in range(n)]


def score_and_label(
    tx: Transaction, features: dict[str, float], is_fraud: bool
) -> tuple[bytes, bytes]:
    """A Score for `tx` as a scorer writes it (JSON) and an investigation label for it."""
    score = {
        "transaction_id": tx.transaction_id,
        "card_id": tx.card_id,
        "score": 0.01,
        "flagged": False,
        "threshold": 0.5,
        "model_version": 0,
        "event_time": tx.timestamp,
        "scored_at": datetime.now(UTC),
        "features": features,
    }
    label = {"transaction_id": tx.transaction_id, "is_fraud": is_fraud, "source": "investigation"}
    return orjson.dumps(score), orjson.dumps(label)


def preload(settings: Settings, topic: str, n: int, seed: int = 7) -> None:
    producer = make_producer(settings, "bench loader")
    for i, record in enumerate(records(n, seed)):
        produce_waiting(producer, topic, orjson.dumps(record), str(record["card_id"]).encode())
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)


def passthrough_loop(
    settings: Settings,
    source: str,
    sink: str,
    group: str,
    stop: Callable[[], bool],
    limit: int | None = None,
) -> float:
    """Consume -> produce the same bytes, commit after delivery: the physical ceiling. The
    client calls are the scorer's (batch consume, positional produce with a callback).

    Runs until `stop()` or until `limit` records are delivered; returns records/s from the
    first record consumed to the last delivered.
    """
    consumer: Consumer = make_consumer(settings, group, "bench passthrough")
    producer = make_producer(settings, "bench passthrough")
    consumer.subscribe([source])
    delivered = 0
    seen = 0
    pending: list[tuple[int, dict[tuple[str, int], int]]] = []
    batch = settings.scorer.batch_size
    timeout = settings.scorer.poll_timeout_s

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    first_at = 0.0
    try:
        while not stop() and (limit is None or delivered < limit):
            msgs = consumer.consume(batch, timeout)
            positions: dict[tuple[str, int], int] = {}
            for msg in msgs:
                if msg.error() is not None:
                    continue
                if seen == 0:
                    first_at = time.perf_counter()
                seen += 1
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1  # type: ignore[index, operator]
                while True:
                    try:
                        producer.produce(sink, msg.value(), msg.key(), -1, on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
            if positions:
                pending.append((seen, positions))
            producer.poll(0)
            while pending and pending[0][0] <= delivered:
                _, pos = pending.pop(0)
                offsets = [TopicPartition(t, p, o) for (t, p), o in pos.items()]
                consumer.commit(offsets=offsets, asynchronous=True)
        producer.flush(30)
        return delivered / (time.perf_counter() - first_at) if first_at else 0.0
    finally:
        consumer.close()


class OutputReader:
    """Reads a sink topic in a thread; records (arrival time, value) of every record."""

    def __init__(self, settings: Settings, topic: str, keep_values: bool = True) -> None:
        self.settings = settings
        self.topic = topic
        self.keep_values = keep_values
        self.arrivals: list[tuple[float, bytes | None]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> OutputReader:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        consumer = Consumer(
            {
                **common_config(self.settings),
                "group.id": f"bench-reader-{uid()}",
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "session.timeout.ms": self.settings.session_timeout_ms,
                "fetch.wait.max.ms": self.settings.fetch_wait_max_ms,
            }
        )
        consumer.subscribe([self.topic])
        try:
            while not self._stop.is_set():
                msgs = ready_records(consumer, 0.05)
                now = time.time()
                for m in msgs:
                    self.arrivals.append((now, m.value() if self.keep_values else None))
        finally:
            consumer.close()

    def wait_for(self, n: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while len(self.arrivals) < n and time.monotonic() < deadline:
            time.sleep(0.05)
        return len(self.arrivals) >= n


def topic_env(
    settings: Settings, topics: Topics, group: str, *, signs: bool = False
) -> dict[str, str]:
    """The environment of a target process: the bench's own settings (whatever file or
    environment they came from: client settings, batch sizes, the snapshot verification key),
    on `topics`. Only a target that `signs` (a trainer) gets the private key."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    exclude = {"kafka", "topics", "snapshot_signing_key", "snapshot_signing_key_file"}
    for name, value in settings.model_dump(exclude=exclude).items():
        if name == "snapshot_verify_key" and value is None:
            value = public_pem(verify_key(settings))
        if value is None:
            continue
        text = orjson.dumps(value).decode() if isinstance(value, dict | list) else str(value)
        env[f"FRAUDSTREAM_{name.upper()}"] = text
    env["FRAUDSTREAM_BOOTSTRAP_SERVERS"] = settings.bootstrap
    for name, value in topics.model_dump().items():
        env[f"FRAUDSTREAM_TOPICS__{name.upper()}"] = value
    env["FRAUDSTREAM_SCORER__GROUP_ID"] = group
    private = signing_key(settings) if signs else None
    if private is not None:
        env["FRAUDSTREAM_SNAPSHOT_SIGNING_KEY"] = private_pem(private)
    for key, value in settings.kafka.items():
        if key != "logger":
            env["FRAUDSTREAM_KAFKA_" + key.upper().replace(".", "_")] = str(value)
    return env


def spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        return subprocess.Popen(
            [sys.executable, "-m", *args], stdout=out, stderr=subprocess.STDOUT, env=env
        )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass
class Measurement:
    """One measurement's topics, the environment of its target processes, and the processes
    it spawned (`measurement()` stops them and drops the topics)."""

    topics: Topics
    env: dict[str, str]
    group: str
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def spawn(
        self, args: list[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = spawn(args, self.env if env is None else env, log)
        self.processes.append(proc)
        return proc


@contextmanager
def measurement(
    settings: Settings,
    name: str,
    partitions: int,
    *,
    source: str | None = None,
    trained_model: bool = True,
    signs: bool = False,
) -> Iterator[Measurement]:
    """Fresh topics named after `name` (reading `source` when given, else a fresh one) and a
    target environment on them (`topic_env`); on exit the spawned processes are stopped, the
    latest first, and the topics made here are dropped."""
    own_source = source is None
    source = source or f"{name}-tx-{uid()}"
    sink, group = f"{name}-scores-{uid()}", f"{name}-{uid()}"
    create_topics(settings, [source, sink] if own_source else [sink], partitions)
    topics = bench_topics(settings, source, sink, partitions, trained_model)
    run = Measurement(topics, topic_env(settings, topics, group, signs=signs), group)
    try:
        yield run
    finally:
        for proc in reversed(run.processes):
            stop(proc)
        delete_topics(settings, [source, *topics_of(topics)] if own_source else topics_of(topics))


def percentile_ms(seconds: list[float] | np.ndarray, q: float) -> float:
    """The `q`th percentile of durations in seconds, in milliseconds (NaN when there are none)."""
    return float(np.percentile(seconds, q) * 1000) if len(seconds) else float("nan")
