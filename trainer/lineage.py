"""What a logged model and its MLflow run record about where they came from.

The code version (fraudstream's version and, in a git checkout, the commit), the settings as
run parameters without anything that may hold a secret, and a snapshot's lineage: the record
stored with each registry version (as `lineage.json` and as version tags).
"""

from __future__ import annotations

import subprocess
from functools import cache
from pathlib import Path
from typing import Any

from core.snapshot import Snapshot
from infra.config import Settings


@cache
def code_version() -> dict[str, str]:
    """fraudstream's version and, in a git checkout, the commit (and whether it was modified)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        out = {"fraudstream_version": version("fraudstream")}
    except PackageNotFoundError:
        out = {"fraudstream_version": "unknown"}
    root = Path(__file__).resolve().parents[1]
    if (root / ".git").exists():
        try:
            commit = subprocess.run(
                ["git", "-C", str(root), "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            dirty = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
            out["git_commit"] = commit
            out["git_dirty"] = str(bool(dirty)).lower()
        except (OSError, subprocess.SubprocessError):
            pass
    head = out.get("git_commit")
    suffix = f" ({head[:12]}{'+dirty' if out.get('git_dirty') == 'true' else ''})" if head else ""
    out["code_version"] = f"fraudstream {out['fraudstream_version']}{suffix}"
    return out


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    else:
        out[prefix] = str(value)


_KEY_SETTINGS = (
    "snapshot_signing_key",
    "snapshot_signing_key_file",
    "snapshot_verify_key",
    "snapshot_verify_key_file",
)


def config_params(settings: Settings) -> dict[str, str]:
    """The settings as run parameters, without anything that may hold a secret (client
    properties, the tracking URI, the snapshot keys)."""
    exclude = {"kafka", "mlflow_tracking_uri", "metrics_port", "metrics_host", *_KEY_SETTINGS}
    data = settings.model_dump(mode="json", exclude=exclude)
    out: dict[str, str] = {}
    _flatten("", data, out)
    return out


def lineage(settings: Settings, snapshot: Snapshot, features: list[str]) -> dict[str, Any]:
    """What a registry version records about where its model came from."""
    return {
        "snapshot_version": snapshot.version,
        "created_at": snapshot.created_at.isoformat(),
        "origin": snapshot.origin,
        "labels_learned": snapshot.labels_learned,
        "label_counts": snapshot.label_counts,
        "resume_offsets": snapshot.resume_offsets,
        "processed_offsets": snapshot.processed_offsets,
        "metrics": snapshot.metrics,
        "candidate": snapshot.candidate or "default",
        "hyperparameters": snapshot.hyperparameters or settings.model.model_dump(mode="json"),
        "threshold": settings.scorer.threshold,
        "features": features,
        "library_versions": snapshot.library_versions,
        "sha256": snapshot.sha256,
        "signed": snapshot.signature is not None,
        "signer": snapshot.signer,
        "code": code_version(),
        "config": config_params(settings),
    }
