"""Reading model snapshots from the compacted `model-updates` topic.

Every snapshot is checked before its model is built: the Ed25519 signature with the trainer's
public key (an unsigned or tampered snapshot is refused; a reader does not start without the
key), the format (a pickled snapshot of an older fraudstream is refused, never unpickled), the
model name, and how far its version jumps above the one in service. A refused snapshot is
counted (`fraudstream_snapshots_refused_total{reason}`) and logged; the model in service stays.

Warm start: when the topic was read to its end and held no valid snapshot (a new or restarted
broker), the registry's champion is served instead of an untrained model.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from core.snapshot import Snapshot, SnapshotError, decode_snapshot
from infra.config import Settings
from infra.kafka import ErrorLogger, common_config, polled
from infra.signing import verify_key

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from infra.metrics import Metrics

log = logging.getLogger(__name__)


def snapshot_consumer(settings: Settings) -> Consumer:
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


def check_snapshot(
    snapshot: Snapshot,
    key: Ed25519PublicKey,
    model_name: str,
    served: int | None = None,
    max_jump: int | None = None,
) -> None:
    """Everything checked before a snapshot from outside is loaded: signature, format, model
    name and, with a version in service, how far above it this one is. Raises SnapshotError."""
    snapshot.verify(key)
    snapshot.check_compatible()
    if snapshot.model_name != model_name:
        raise SnapshotError(
            f"snapshot v{snapshot.version} is of model {snapshot.model_name[:100]!r}, "
            f"this process serves {model_name!r}",
            "wrong_model",
        )
    if served is not None and max_jump is not None and snapshot.version - served > max_jump:
        raise SnapshotError(
            f"snapshot v{snapshot.version} jumps {snapshot.version - served} versions above "
            f"v{served} in service (at most {max_jump}: snapshot_max_version_jump)",
            "version_jump",
        )


class ModelWatcher:
    """Background thread following `model-updates`; calls `on_snapshot` for each newer version.

    `ready` is set once the topic has been read to its end (and, if it held nothing valid,
    once the registry champion was tried), so a starting scorer can wait for the latest model
    instead of scoring with an untrained one.

    Refusals are counted in `refused` (by reason) and in `metrics.snapshots_refused`; with no
    `metrics` given, those of the object `on_snapshot` is bound to are used if it has any
    (the scorer passes its `_load_snapshot`).
    """

    def __init__(
        self,
        settings: Settings,
        on_snapshot: Callable[[Snapshot], None],
        min_version: int = 0,
        *,
        metrics: Metrics | None = None,
        warm_start: bool | None = None,
    ) -> None:
        self.settings = settings
        self.on_snapshot = on_snapshot
        self.version = min_version
        self.ready = threading.Event()
        self.rejected = 0
        self.refused: Counter[str] = Counter()
        # Where the model in service came from: None (nothing loaded), "topic" or "registry".
        self.source: str | None = None
        # Raises ConfigError without a verification key: never read snapshots unverified.
        self.key = verify_key(settings)
        self.warm_start = settings.registry.warm_start if warm_start is None else warm_start
        self.metrics = metrics if metrics is not None else _metrics_of(on_snapshot)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="model-watcher", daemon=True)
        # The newest checked snapshot not yet loaded, while the topic is read to its end.
        self._pending: Snapshot | None = None

    def start(self) -> ModelWatcher:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        consumer = snapshot_consumer(self.settings)
        eof: set[int] = set()
        n_partitions = len(consumer.assignment())

        def partition_end(partition: int) -> None:
            eof.add(partition)
            if len(eof) >= n_partitions and not self.ready.is_set():
                self._load_pending()
                if self.source is None and self.warm_start:
                    self._warm_start()
                self.ready.set()

        try:
            for msg in polled(consumer, lambda: not self._stop.is_set(), partition_end):
                if msg.error() is None:
                    self._handle(msg.key(), msg.value())
        finally:
            consumer.close()

    def _warm_start(self) -> None:
        from infra.registry import champion_snapshot

        started = time.monotonic()
        try:
            snapshot = champion_snapshot(self.settings)
        except SnapshotError as exc:
            self._refuse(exc, None, "registry champion")
            return
        except Exception as exc:  # noqa: BLE001  registry down: serve what we have
            log.warning("warm start: registry champion unavailable (%s)", exc)
            return
        if snapshot is None:
            log.info(
                "%s is empty and the registry has no champion", self.settings.topics.model_updates
            )
            return
        try:
            self.on_snapshot(snapshot)
        except Exception as exc:  # noqa: BLE001  a bad model must not kill serving
            self._refuse(_as_error(exc), snapshot, "registry champion")
            return
        self.version = snapshot.version
        self.source = "registry"
        log.info(
            "warm start: %s is empty, serving the registry champion (version %s, snapshot v%d, "
            "%d labels learned) after %.1f s",
            self.settings.topics.model_updates,
            snapshot.registry_version,
            snapshot.version,
            snapshot.labels_learned,
            time.monotonic() - started,
        )

    def _handle(self, key: bytes | None, value: bytes | None) -> None:
        # Records keyed by another model's name belong to it (the topic may carry several).
        if key is not None and key.decode("utf-8", "replace") != self.settings.model.name:
            return
        try:
            snapshot = decode_snapshot(value, self.key)
        except SnapshotError as exc:
            self._refuse(exc, None)
            return
        # A champion from the registry only bridges until the trainer publishes: its first
        # snapshot is taken whatever its number (it may have started from zero).
        if snapshot.version <= self.version and self.source != "registry":
            return
        try:
            check_snapshot(
                snapshot,
                self.key,
                self.settings.model.name,
                self.version if self.source is not None else None,
                self.settings.snapshot_max_version_jump,
            )
            if not self.ready.is_set():
                # Catching up: every record is checked, only the newest is loaded (at the
                # end of the topic), not each of the hundreds a long run leaves behind.
                self._pending = snapshot
            else:
                self.on_snapshot(snapshot)
        except Exception as exc:  # noqa: BLE001  a bad model must not kill serving
            self._refuse(_as_error(exc), snapshot)
            return
        self.version = snapshot.version
        self.source = "topic"

    def _load_pending(self) -> None:
        """Load the newest snapshot that passed its checks while catching up."""
        snapshot, self._pending = self._pending, None
        if snapshot is None:
            return
        try:
            self.on_snapshot(snapshot)
        except Exception as exc:  # noqa: BLE001  a bad model must not kill serving
            self._refuse(_as_error(exc), snapshot)
            self.version, self.source = 0, None

    def _refuse(self, exc: SnapshotError, snapshot: Snapshot | None, what: str = "") -> None:
        self.rejected += 1
        self.refused[exc.reason] += 1
        if self.metrics is not None:
            self.metrics.snapshots_refused.labels(exc.reason).inc()
        subject = what or (f"snapshot v{snapshot.version}" if snapshot is not None else "a record")
        serving = f"v{self.version}" if self.source is not None else "the model it has"
        log.warning(
            "model-updates: refused %s (%s): %s; still serving %s",
            subject,
            exc.reason,
            exc,
            serving,
        )


def _as_error(exc: Exception) -> SnapshotError:
    if isinstance(exc, SnapshotError):
        return exc
    return SnapshotError(f"could not load: {exc}", "load_failed")


def _metrics_of(on_snapshot: Callable[[Snapshot], None]) -> Metrics | None:
    from infra.metrics import Metrics

    owner = getattr(on_snapshot, "__self__", None)
    metrics = getattr(owner, "metrics", None)
    return metrics if isinstance(metrics, Metrics) else None


def read_latest_snapshot(
    settings: Settings, timeout_s: float = 15.0, warm_start: bool | None = None
) -> Snapshot | None:
    """The newest valid snapshot of the configured model, or None if there is none.

    With `warm_start` (default: `registry.warm_start`), an empty topic yields the registry's
    champion (`origin == "registry"`, no input offsets) when there is one.
    """
    latest: list[Snapshot] = []
    watcher = ModelWatcher(settings, latest.append, warm_start=warm_start)
    watcher.start()
    # The registry may be slow to answer (a server starting): allow it time on top.
    deadline = time.monotonic() + timeout_s
    if watcher.warm_start:
        deadline += 2 * settings.registry.request_timeout_s
    while not watcher.ready.is_set() and time.monotonic() < deadline:
        time.sleep(0.05)
    watcher.stop()
    if not watcher.ready.is_set():
        log.warning("model-updates: not read to its end within %.0f s", timeout_s)
    return latest[-1] if latest else None
