"""Rollbacks: `fraudstream model rollback` republishes a registry version on `model-updates`;
the trainer adopts it and learns on from that model.

`RollbackWatcher` follows the topic in a background thread and hands over verified rollback
snapshots (`take`); `adopted` reports one the trainer took over.
"""

from __future__ import annotations

import logging
import threading

from core.snapshot import Snapshot, SnapshotError, decode_snapshot
from infra.config import Settings
from infra.kafka import polled
from infra.metrics import Metrics
from infra.model_updates import check_snapshot, snapshot_consumer
from infra.signing import verify_key
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)


class RollbackWatcher:
    """Background reader of `model-updates` handing over rollback snapshots (`take`)."""

    def __init__(
        self,
        settings: Settings,
        metrics: Metrics | None = None,
        mlflow: MlflowLogger | None = None,
    ) -> None:
        """`metrics`: refused rollbacks are counted there; `mlflow`: adopted ones recorded."""
        self.settings = settings
        self.metrics = metrics
        self.mlflow = mlflow
        # Raises ConfigError without a verification key (or the signing key it derives from).
        self.key = verify_key(settings)
        self.min_version = 0
        self._pending: Snapshot | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollback-watcher", daemon=True)

    def start(self, min_version: int) -> RollbackWatcher:
        """Rollbacks numbered above `min_version` (the version resumed from) are new."""
        self.min_version = min_version
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def take(self) -> Snapshot | None:
        if self._pending is None:
            return None
        with self._lock:
            snapshot, self._pending = self._pending, None
        return snapshot

    def adopted(self, rollback: Snapshot, labels_learned: int) -> None:
        """Report a rollback the trainer took over (it publishes it next, renumbered)."""
        log.info(
            "rollback to registry version %s adopted (published as v%d, %d labels learned)",
            rollback.registry_version,
            rollback.version,
            labels_learned,
        )
        if self.mlflow is not None:
            self.mlflow.record(
                labels_learned,
                {"rollback_to_registry_version": float(rollback.registry_version or 0)},
                {"rollback.last": f"registry version {rollback.registry_version}"},
            )

    def _run(self) -> None:
        try:
            consumer = snapshot_consumer(self.settings)
        except Exception as exc:  # noqa: BLE001  no rollbacks while unreadable; training goes on
            log.warning(
                "rollback watcher: cannot read %s: %s", self.settings.topics.model_updates, exc
            )
            return
        name = self.settings.model.name
        try:
            for msg in polled(consumer, lambda: not self._stop.is_set()):
                err = msg.error()
                if err is not None:
                    log.debug("rollback watcher: %s", err.str())
                    continue
                key = msg.key()
                if key is not None and key.decode("utf-8", "replace") != name:
                    continue
                try:
                    snapshot = decode_snapshot(msg.value())
                except SnapshotError:
                    continue
                if snapshot.origin != "rollback" or snapshot.version <= self.min_version:
                    continue
                try:
                    check_snapshot(
                        snapshot,
                        self.key,
                        name,
                        self.min_version,
                        self.settings.snapshot_max_version_jump,
                    )
                except SnapshotError as exc:
                    if self.metrics is not None:
                        self.metrics.snapshots_refused.labels(exc.reason).inc()
                    log.warning("rollback v%d refused (%s): %s", snapshot.version, exc.reason, exc)
                    continue
                with self._lock:
                    self._pending = snapshot
                self.min_version = snapshot.version
        finally:
            consumer.close()
