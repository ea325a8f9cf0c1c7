"""One live evaluation's broker, topics and processes, and the records it publishes and reads.

`LiveRun` starts the embedded broker (or uses the cluster given), creates topics and
consumer groups named with a suffix of this run, starts `score` and `train` as separate
processes and waits until both have joined their groups; it then publishes the stream's
records paced at `rate` records/s, yielding to the broker, and reads every Score back from
`scores`. `close` stops the processes, then the embedded broker, whatever way the run ends.
"""

from __future__ import annotations

import logging
import math
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson
from confluent_kafka import (
    OFFSET_BEGINNING,
    Consumer,
    ConsumerGroupState,
    KafkaException,
    Producer,
    TopicPartition,
)

from core.errors import FraudstreamError
from evaluation.live_records import Records
from evaluation.live_report import Served
from evaluation.run import EvaluateOptions
from evaluation.streams import Stream
from fraudstream.live import Scraper
from fraudstream.up import EMBEDDED_FETCH_WAIT_MS, Child, snapshot_keys
from infra.broker import EmbeddedBroker, free_port
from infra.config import Settings, Topics
from infra.kafka import check_reachable, common_config, make_producer, produce_waiting
from infra.topics import create_topics

# Named as the module of `run_live`: a live run logs as one logger, whichever part writes.
log = logging.getLogger("evaluation.live")

LAG_METRIC = "fraudstream_consumer_lag"
PROGRESS_EVERY_S = 5.0
# Publishing waits while more than this many seconds of records await acknowledgement, and
# after a wait sends at most this much of the schedule at once.
MAX_AHEAD_S = 2.0
MAX_BURST_S = 0.1


class LiveError(FraudstreamError, RuntimeError):
    """The live run could not complete; the message is one line for the CLI."""


@dataclass
class LiveOptions:
    stream: EvaluateOptions = field(default_factory=EvaluateOptions)
    rate: float = 2000.0  # records (transactions and labels) per second
    burn_in_s: float = 0.0
    # Give up reading scores once none came for this long.
    score_timeout_s: float = 120.0
    # The scorer and trainer must have joined their groups within this.
    start_timeout_s: float = 180.0
    mlflow: bool = False
    keep_topics: bool = False
    config: str | None = None


def run_tag() -> str:
    return f"live-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:6]}"


def run_settings(settings: Settings, tag: str, bootstrap: str) -> Settings:
    """The user's settings on this run's broker, topics and consumer groups."""
    topics = Topics(**{k: f"{v}-{tag}" for k, v in settings.topics.model_dump().items()})
    return settings.model_copy(
        update={
            "bootstrap_servers": bootstrap,
            "topics": topics,
            "scorer": settings.scorer.model_copy(
                update={"group_id": f"{settings.scorer.group_id}-{tag}"}
            ),
            "trainer": settings.trainer.model_copy(
                update={"group_id": f"{settings.trainer.group_id}-{tag}"}
            ),
        }
    )


def child_env(settings: Settings, embedded: bool, mlflow: bool) -> dict[str, str]:
    """The environment that gives `score` and `train` this run's settings (over the user's)."""
    env = {k: v for k, v in os.environ.items() if k != "FRAUDSTREAM_METRICS_PORT"}
    env["FRAUDSTREAM_BOOTSTRAP_SERVERS"] = settings.bootstrap
    for name, value in settings.topics.model_dump().items():
        env[f"FRAUDSTREAM_TOPICS__{name.upper()}"] = value
    # The model the offline replay runs (the user's, with evaluate's --learning-rate & co.).
    for name, value in settings.model.model_dump().items():
        env[f"FRAUDSTREAM_MODEL__{name.upper()}"] = str(value)
    env["FRAUDSTREAM_SCORER__GROUP_ID"] = settings.scorer.group_id
    env["FRAUDSTREAM_TRAINER__GROUP_ID"] = settings.trainer.group_id
    if embedded and "fetch_wait_max_ms" not in settings.model_fields_set:
        env["FRAUDSTREAM_FETCH_WAIT_MAX_MS"] = str(EMBEDDED_FETCH_WAIT_MS)  # as `up` does
    if mlflow:
        env["FRAUDSTREAM_REGISTRY__WARM_START"] = "false"
    return env


class LiveRun:
    """One live evaluation: owns the broker it started and the processes; `close` stops them."""

    def __init__(self, settings: Settings, options: LiveOptions, log_dir: Path) -> None:
        self.user_settings = settings
        self.options = options
        self.log_dir = log_dir
        self.tag = run_tag()
        self.broker: EmbeddedBroker | None = None
        self.children: dict[str, Child] = {}
        self.settings = settings
        self.scraper: Scraper | None = None
        self.max_scorer_lag = 0.0
        self.sent_at = np.empty(0)  # wall clock each record was handed to the client

    # -- processes ----------------------------------------------------------------------------

    def start(self) -> None:
        settings = self.user_settings
        if settings.embedded:
            self.broker = EmbeddedBroker()
            self.broker.start()
            bootstrap = self.broker.bootstrap
        else:
            bootstrap = settings.bootstrap
        self.settings = run_settings(settings, self.tag, bootstrap)
        check_reachable(self.settings)
        create_topics(self.settings)
        env = child_env(self.settings, self.broker is not None, self.options.mlflow)
        # Signed snapshots, as `fraudstream up`: a key pair for the run on the embedded broker,
        # the configured keys on a cluster.
        env.update(snapshot_keys(self.settings, self.log_dir, self.broker is not None))
        common = ["--config", self.options.config] if self.options.config else []
        train = ["train", *common] + ([] if self.options.mlflow else ["--no-mlflow"])
        for name, args in (("trainer", train), ("scorer", ["score", *common])):
            port = free_port()
            child = Child(
                name, [*args, "--metrics-port", str(port)], port, self.log_dir / f"{name}.log"
            )
            child.start(env)
            self.children[name] = child
        self.scraper = Scraper({n: c.port for n, c in self.children.items()})
        log.info(
            "started %s",
            ", ".join(f"{n} (pid {c.process.pid})" for n, c in self.children.items() if c.process),
        )

    def check_alive(self) -> None:
        for name, child in self.children.items():
            if not child.running():
                code = child.process.returncode if child.process else None
                raise LiveError(f"{name} exited (status {code}): see {child.log_path}")

    def _lags(self) -> dict[str, dict[str, float]]:
        """Consumer lag per process and input topic, from their metrics endpoints (a
        consumer reports it once it has fetched from its partitions)."""
        assert self.scraper is not None
        scrape = self.scraper.scrape()
        out: dict[str, dict[str, float]] = {}
        for name in self.children:
            for labels, value in scrape.samples.get(name, {}).get(LAG_METRIC, []):
                topic = labels.get("topic", "")
                out.setdefault(name, {})[topic] = out.get(name, {}).get(topic, 0.0) + value
        return out

    def wait_ready(self) -> None:
        """Until the scorer's and the trainer's consumer groups are stable (joined).

        Records published before would still be read, but late: the scorer would then score
        them with a model that had learned labels from their future.
        """
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({**common_config(self.settings), "log_level": 0})
        groups = {
            "scorer": self.settings.scorer.group_id,
            "trainer": self.settings.trainer.group_id,
        }
        deadline = time.monotonic() + self.options.start_timeout_s
        while True:
            self.check_alive()
            futures = admin.describe_consumer_groups(list(groups.values()), request_timeout=5)
            missing = []
            for name, group in groups.items():
                try:
                    state = futures[group].result()
                except KafkaException:
                    missing.append(name)
                    continue
                if state.state != ConsumerGroupState.STABLE:
                    missing.append(name)
            if not missing:
                return
            if time.monotonic() > deadline:
                logs = ", ".join(str(self.children[n].log_path) for n in missing)
                raise LiveError(
                    f"{' and '.join(missing)} did not join its consumer group within "
                    f"{self.options.start_timeout_s:.0f} s: see {logs}"
                )
            time.sleep(0.5)

    def note_lag(self) -> float:
        lag = self._lags().get("scorer", {}).get(self.settings.topics.transactions, 0.0)
        self.max_scorer_lag = max(self.max_scorer_lag, lag)
        return lag

    def close(self) -> None:
        """Stop the processes, then the embedded broker; a second Ctrl-C meanwhile is ignored,
        so nothing started is left running."""
        with _signals_ignored():
            for name in ("scorer", "trainer"):
                child = self.children.get(name)
                if child is not None:
                    child.stop(30)
            if not self.options.keep_topics and self.broker is None and self.children:
                _delete_topics(self.settings)
            if self.broker is not None:
                self.broker.stop()

    # -- data -----------------------------------------------------------------------------------

    def publish(self, records: Records) -> float:
        """Publish every record paced at `rate`; returns the seconds it took.

        The pace yields to the broker: with more than `rate` x MAX_AHEAD_S records not yet
        acknowledged, publishing waits, and the schedule is pushed back by whatever time was
        lost (never made up in a burst, which would hand the scorer a block of the stream
        at once). The achieved rate is reported.
        """
        topics = (self.settings.topics.transactions, self.settings.topics.labels)
        producer = make_producer(self.settings, "evaluate-live producer")
        rate = self.options.rate
        keys, values, kinds = records.keys, records.values, records.topics.tolist()
        total = len(records)
        ahead = max(1000, int(rate * MAX_AHEAD_S))
        burst = max(1, int(rate * MAX_BURST_S))
        began = started = time.monotonic()  # `started` is the schedule's origin: it moves
        sent_at = self.sent_at = np.full(total, np.nan)
        sent = 0
        next_check = started
        next_progress = started + PROGRESS_EVERY_S
        try:
            while sent < total:
                if len(producer) > ahead:
                    self._wait_for_broker(producer, ahead)
                now = time.monotonic()
                due = min(total, int((now - started) * rate) + 1)
                if due - sent > burst:  # fell behind: shift the schedule, do not burst
                    started += (due - sent - burst) / rate
                    due = sent + burst
                first = sent
                while sent < due:
                    produce_waiting(producer, topics[kinds[sent]], values[sent], keys[sent])
                    sent += 1
                sent_at[first:sent] = time.time()
                producer.poll(0)
                if now >= next_check:
                    self.check_alive()
                    lag = self.note_lag()
                    next_check = now + 1.0
                    if now >= next_progress:
                        next_progress = now + PROGRESS_EVERY_S
                        log.info("published %d of %d records; scorer lag %.0f", sent, total, lag)
                time.sleep(max(0.0, min(0.01, started + sent / rate - time.monotonic())))
            self._wait_for_broker(producer, 0)
        finally:
            # Whatever is left on an interrupt or error is dropped, and the client closed now,
            # while its broker is up: the traceback would keep it alive past the broker's stop.
            producer.purge(blocking=False)
            producer.flush(0)
            producer.close()
        return time.monotonic() - began

    def _wait_for_broker(self, producer: Producer, most: int) -> None:
        """Until at most `most` records await acknowledgement; LiveError once none was
        acknowledged for `score_timeout_s`."""
        waiting = len(producer)
        progress_at = time.monotonic()
        while waiting > most:
            producer.flush(1.0)
            now = time.monotonic()
            if len(producer) < waiting:
                waiting, progress_at = len(producer), now
            elif now - progress_at > self.options.score_timeout_s:
                raise LiveError(
                    f"{self.settings.bootstrap} acknowledged none of {waiting} records for "
                    f"{self.options.score_timeout_s:.0f} s"
                )
            self.check_alive()

    def collect(self, stream: Stream) -> Served:
        """Read `scores` from the start until every transaction is scored or none comes."""
        index = {tx.transaction_id: i for i, tx in enumerate(stream.transactions)}
        n = len(stream)
        scores = np.full(n, np.nan)
        versions = np.full(n, -1, dtype=np.int64)
        scored_at = np.full(n, np.nan)
        read = duplicates = unknown = scored = 0
        consumer = _reader(self.settings)
        timeout = self.options.score_timeout_s
        last_new = time.monotonic()
        next_progress = last_new + PROGRESS_EVERY_S
        try:
            while scored < n:
                batch = consumer.consume(10_000, 0.5)
                now = time.monotonic()
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    read += 1
                    record = orjson.loads(msg.value() or b"null")
                    i = index.get(record.get("transaction_id"))
                    if i is None:
                        unknown += 1
                    elif versions[i] >= 0:
                        duplicates += 1
                    else:
                        scores[i] = record["score"]
                        versions[i] = record["model_version"]
                        scored_at[i] = _epoch(record.get("scored_at"))
                        scored += 1
                        last_new = now
                if now - last_new > timeout:
                    log.error(
                        "%d of %d transactions not scored: no new score for %.0f s (see %s)",
                        n - scored,
                        n,
                        timeout,
                        self.children["scorer"].log_path,
                    )
                    break
                if now >= next_progress:
                    next_progress = now + PROGRESS_EVERY_S
                    self.check_alive()
                    log.info("scores read: %d of %d transactions scored", scored, n)
        finally:
            consumer.close()
        return Served(scores, versions, read, duplicates, unknown, scored_at)


def _epoch(text: object) -> float:
    if not isinstance(text, str):
        return math.nan
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return math.nan


@contextmanager
def _signals_ignored() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _reader(settings: Settings) -> Consumer:
    """A plain consumer of every `scores` partition from the beginning (no group join)."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            **settings.kafka,
            "group.id": f"evaluate-live-reader-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 100,
        }
    )
    topic = settings.topics.scores
    meta = consumer.list_topics(topic, timeout=10)
    partitions = sorted(meta.topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in partitions])
    return consumer


def _delete_topics(settings: Settings) -> None:
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": settings.bootstrap, **settings.kafka})
    for name, future in admin.delete_topics(list(settings.topics.model_dump().values())).items():
        try:
            future.result(10)
        except Exception as exc:  # noqa: BLE001  cleanup only: say what was left behind
            log.warning("topic %s not deleted: %s", name, exc)
