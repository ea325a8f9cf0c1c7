"""Publishing snapshots: produced to `model-updates` without waiting, offsets committed once
the broker stored the snapshot that covers them, and runs logged to MLflow."""

from __future__ import annotations

import logging
import time
from functools import partial
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from core.snapshot import Offsets, Snapshot, encode_snapshot
from infra.metrics import Metrics
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)

SNAPSHOT_FAILURE_LOG_S = 60.0


class SnapshotPublisher:
    def __init__(
        self,
        producer: Producer,
        topic: str,
        model_name: str,
        metrics: Metrics,
        consumer: Consumer,
        mlflow: MlflowLogger | None = None,
        mlflow_every_s: float = 30.0,
    ) -> None:
        """`consumer`: the trainer's, whose offsets a stored snapshot's resume offsets become;
        `mlflow_every_s`: how often a logged run carries the model itself."""
        self.producer = producer
        self.topic = topic
        self.key = model_name.encode()
        self.metrics = metrics
        self.consumer = consumer
        self.mlflow = mlflow
        self.mlflow_every_s = mlflow_every_s
        # The latest snapshot published or resumed from: the model in service.
        self.last: Snapshot | None = None
        self._last_mlflow = 0.0
        self._failure_logged = -SNAPSHOT_FAILURE_LOG_S

    def publish(self, snap: Snapshot) -> None:
        """Not waited for: learning goes on while the broker acknowledges (or is down)."""
        try:
            self.producer.produce(
                self.topic,
                encode_snapshot(snap),
                self.key,
                on_delivery=partial(self._published, snap),
            )
        except (BufferError, KafkaException) as exc:
            # Refused at once (too large, queue full): as a failed delivery, the next
            # snapshot supersedes this one.
            err = exc.args[0] if isinstance(exc, KafkaException) else None
            self._published(snap, err or KafkaError(KafkaError._QUEUE_FULL))
        self.last = snap

    def _published(self, snap: Snapshot, err: KafkaError | None, _msg: Any = None) -> None:
        if err is not None:
            # A later snapshot supersedes this one: nothing to retry (counted; one log line
            # per SNAPSHOT_FAILURE_LOG_S while it goes on).
            self.metrics.produce_errors.labels(self.topic, err.name(), "dropped").inc()
            now = time.monotonic()
            if now - self._failure_logged >= SNAPSHOT_FAILURE_LOG_S:
                log.warning("snapshot v%d not published: %s", snap.version, err.str())
                self._failure_logged = now
            return
        # Offsets are committed only once the snapshot that covers them is stored.
        self._commit(snap.resume_offsets)
        self.metrics.snapshots.inc()
        auc = snap.metrics.get("roc_auc")
        log.info(
            "snapshot v%d published (%d labels learned, auc=%s)",
            snap.version,
            snap.labels_learned,
            f"{auc:.3f}" if auc is not None else "n/a",
        )

    def _commit(self, resume: Offsets) -> None:
        offsets = [
            TopicPartition(topic, int(p), off)
            for topic, parts in resume.items()
            for p, off in parts.items()
        ]
        if not offsets:
            return
        try:
            self.consumer.commit(offsets=offsets, asynchronous=True)
        except Exception as exc:  # noqa: BLE001  committed offsets only inform lag; the snapshot rules
            log.warning("offset commit failed: %s", exc)

    def log_model_next(self) -> None:
        """The next run logged carries the model (a promoted champion is registered with the
        snapshot that serves it)."""
        self._last_mlflow = float("-inf")

    def to_mlflow(self, pipeline: Any, final: bool) -> None:
        """Log the latest snapshot as a run; with the model every `mlflow_every_s`, and at
        the final snapshot."""
        snap = self.last
        if self.mlflow is None or snap is None:
            return
        now = time.monotonic()
        with_model = final or now - self._last_mlflow >= self.mlflow_every_s
        self.mlflow.submit(snap, pipeline, with_model)
        if with_model:
            self._last_mlflow = now
