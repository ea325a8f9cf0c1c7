"""Reading model snapshots from the compacted `model-updates` topic."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from infra.config import Settings
from infra.kafka import ErrorLogger, common_config
from schemas.snapshot import Snapshot, SnapshotError, decode_snapshot

log = logging.getLogger(__name__)


def _snapshot_consumer(settings: Settings) -> Consumer:
    conf = {
        **common_config(settings),
        # Never commits: every reader replays the compacted topic from the start.
        "group.id": f"fraudstream-model-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.partition.eof": True,
        # A topic recreated after a broker loss starts at offset 0 again: read it all.
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
        "fetch.message.max.bytes": 64 * 1024 * 1024,
        "error_cb": ErrorLogger("model-updates reader"),
    }
    consumer = Consumer(conf)
    md = consumer.list_topics(settings.topics.model_updates, timeout=10)
    partitions = md.topics[settings.topics.model_updates].partitions
    consumer.assign(
        [TopicPartition(settings.topics.model_updates, p, OFFSET_BEGINNING) for p in partitions]
    )
    return consumer


class ModelWatcher:
    """Background thread following `model-updates`; calls `on_snapshot` for each newer version.

    `ready` is set once the topic has been read to its end, so a starting scorer can wait
    for the latest model instead of scoring with an untrained one.
    """

    def __init__(
        self,
        settings: Settings,
        on_snapshot: Callable[[Snapshot], None],
        min_version: int = 0,
    ) -> None:
        self.settings = settings
        self.on_snapshot = on_snapshot
        self.version = min_version
        self.ready = threading.Event()
        self.rejected = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)

    def start(self) -> ModelWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        consumer = _snapshot_consumer(self.settings)
        eof: set[int] = set()
        n_partitions = len(consumer.assignment())
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                if msg.error():
                    if msg.error().code() == KafkaError._PARTITION_EOF:
                        eof.add(msg.partition())
                        if len(eof) >= n_partitions and not self.ready.is_set():
                            self.ready.set()
                    continue
                self._handle(msg.key(), msg.value())
        finally:
            consumer.close()

    def _handle(self, key: bytes | None, value: bytes | None) -> None:
        if key is not None and key.decode("utf-8", "replace") != self.settings.model.name:
            return
        try:
            snapshot = decode_snapshot(value)
        except SnapshotError as exc:
            self.rejected += 1
            log.warning("model-updates: refused a snapshot: %s", exc)
            return
        if snapshot.version <= self.version:
            return
        try:
            self.on_snapshot(snapshot)
        except (SnapshotError, Exception) as exc:  # noqa: BLE001  a bad model must not kill serving
            self.rejected += 1
            log.warning("model-updates: could not load v%d: %s", snapshot.version, exc)
            return
        self.version = snapshot.version


def read_latest_snapshot(settings: Settings, timeout_s: float = 15.0) -> Snapshot | None:
    """The newest valid snapshot of the configured model, or None if there is none."""
    latest: list[Snapshot] = []
    watcher = ModelWatcher(settings, latest.append)
    watcher.start()
    deadline = time.monotonic() + timeout_s
    while not watcher.ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.stop()
    if not watcher.ready.is_set():
        log.warning("model-updates: not read to its end within %.0f s", timeout_s)
    return latest[-1] if latest else None
