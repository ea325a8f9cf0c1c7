"""Registering a logged model: a new version of `registry.name`, aliased champion, retention.

Each logged model is registered as a new version of `registry.name`, aliased `champion` (it is
the model scorers serve), with its lineage as version tags; versions beyond
`registry.keep_versions` are deleted. A snapshot already registered by an earlier trainer run
(same snapshot version and sha256) is not registered twice.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from core.snapshot import Snapshot
from infra.config import Settings
from infra.registry import TAG_SNAPSHOT_VERSION, apply_retention, registry_name

log = logging.getLogger(__name__)


def version_tags(info: dict[str, Any]) -> dict[str, str]:
    """A registry version's tags, from the model's lineage (`trainer.lineage.lineage`)."""
    counts = info["label_counts"]
    tags = {
        TAG_SNAPSHOT_VERSION: str(info["snapshot_version"]),
        "origin": info["origin"],
        "candidate": info["candidate"],
        "labels_learned": str(info["labels_learned"]),
        "labels_fraud": str(counts.get("fraud", "")),
        "labels_legit": str(counts.get("legit", "")),
        "resume_offsets": orjson.dumps(info["resume_offsets"]).decode(),
        "processed_offsets": orjson.dumps(info["processed_offsets"]).decode(),
        "hyperparameters": orjson.dumps(info["hyperparameters"]).decode(),
        "threshold": str(info["threshold"]),
        "features": orjson.dumps(info["features"]).decode(),
        "n_features": str(len(info["features"])),
        "river_version": info["library_versions"].get("river", ""),
        "sha256": info["sha256"],
        "signed": str(info["signed"]).lower(),
        "signer": info["signer"] or "",
        **{k: v for k, v in info["code"].items()},
    }
    tags.update({f"metric.{k}": repr(v) for k, v in info["metrics"].items()})
    return tags


def already_registered(settings: Settings, client: Any, snapshot: Snapshot) -> bool:
    """A snapshot resumed from and logged by an earlier trainer run: not logged twice."""
    if not settings.registry.enabled:
        return False
    name = registry_name(settings)
    found = client.search_model_versions(
        f"name='{name}' and tags.{TAG_SNAPSHOT_VERSION}='{snapshot.version}'"
    )
    return any((mv.tags or {}).get("sha256") == snapshot.sha256 for mv in found)


def register(
    settings: Settings,
    client: Any,
    run_id: str | None,
    logged: Any,
    snapshot: Snapshot,
    info: dict[str, Any],
) -> str:
    """Register the logged model `logged` as the champion version; its registry version."""
    name = registry_name(settings)
    try:
        client.create_registered_model(
            name, description="fraudstream fraud model: one version per logged snapshot"
        )
    except Exception as exc:
        if getattr(exc, "error_code", None) != "RESOURCE_ALREADY_EXISTS":
            raise
    auc = snapshot.metrics.get("roc_auc")
    mv = client.create_model_version(
        name,
        source=logged.model_uri,
        run_id=run_id,
        tags=version_tags(info),
        description=(
            f"snapshot v{snapshot.version}: {snapshot.labels_learned} labels learned"
            + (f", rolling ROC AUC {auc:.3f}" if auc is not None else "")
        ),
        model_id=logged.model_id,
    )
    # The snapshot was published: it is the model in service.
    client.set_registered_model_alias(name, settings.registry.champion_alias, mv.version)
    try:
        apply_retention(settings, client)
    except Exception as exc:  # noqa: BLE001  retried after the next version
        log.warning("registry retention failed: %s", exc)
    return str(mv.version)
