"""What model the scorers serve, for GET /v1/model and /readyz.

Follows `model-updates` with the scorers' own reader (infra/model_updates.py: signature and
checksum checked the same way) and keeps only the snapshot's metadata: the API never loads
the model itself.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from core.snapshot import Snapshot
from infra.config import Settings
from infra.model_updates import ModelWatcher

log = logging.getLogger(__name__)


def describe(snapshot: Snapshot) -> dict[str, Any]:
    """The metadata of a snapshot a caller may see (no model bytes, no offsets)."""
    return {
        "name": snapshot.model_name,
        "version": snapshot.version,
        "created_at": snapshot.created_at.isoformat(),
        "labels_learned": snapshot.labels_learned,
        "label_counts": dict(snapshot.label_counts),
        "quality": dict(snapshot.metrics),
        "lineage": {
            "origin": snapshot.origin,
            "registry_version": snapshot.registry_version,
            "candidate": snapshot.candidate,
            "hyperparameters": dict(snapshot.hyperparameters),
            "promotions": snapshot.promotions,
            "library_versions": dict(snapshot.library_versions),
        },
        "challengers": [
            {"name": c.name, "quality": dict(c.metrics), "labels_seen": c.labels_seen}
            for c in snapshot.challengers
        ],
    }


class ModelInfo:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._current: dict[str, Any] | None = None
        self._watcher = ModelWatcher(settings, self._on_snapshot)

    def _on_snapshot(self, snapshot: Snapshot) -> None:
        info = describe(snapshot)
        with self._lock:
            self._current = info
        log.debug("serving model v%d (%s)", snapshot.version, snapshot.origin)

    def start(self) -> ModelInfo:
        self._watcher.start()
        return self

    def stop(self) -> None:
        self._watcher.stop()

    @property
    def current(self) -> dict[str, Any] | None:
        with self._lock:
            return self._current

    @property
    def caught_up(self) -> bool:
        """`model-updates` was read to its end once."""
        return self._watcher.ready.is_set()


def registry_lineage(settings: Settings, snapshot_version: int) -> dict[str, Any]:
    """Where the served snapshot stands in the Model Registry (blocking): the version logged
    from it if any (the trainer logs one every `trainer.mlflow_every_s`, not every snapshot),
    the newest version and the snapshot it came from, and the champion alias's version."""
    from infra import registry

    versions, aliases = registry.list_versions(settings)
    exact = next(
        (
            int(mv.version)
            for mv in versions
            if registry.snapshot_version_of(mv) == snapshot_version
        ),
        None,
    )
    latest = versions[0] if versions else None
    champion = aliases.get(settings.registry.champion_alias)
    return {
        "version": exact,
        "latest_version": int(latest.version) if latest is not None else None,
        "latest_snapshot_version": registry.snapshot_version_of(latest) if latest else None,
        "champion_version": int(champion) if champion is not None else None,
    }
