"""The MLflow Model Registry side of the model lifecycle.

Every model the trainer logs becomes a version of one registered model (`registry.name`,
default `model.name`). The version carries the snapshot it was made from as the artifact
`artifacts/snapshot.json` (the exact signed `model-updates` record) and its lineage as tags.
The alias `champion` points at the version in service.

This module maps registry versions to the Kafka numbering: the tag `snapshot_version` is the
`model-updates` version; a warm start continues above the highest one recorded, so versions
keep increasing after a broker loss.

mlflow is imported lazily: scorers import this module, and only need mlflow for a warm start.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlparse

from core.errors import FraudstreamError
from core.snapshot import Snapshot, SnapshotError, decode_snapshot
from infra.config import Settings

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

log = logging.getLogger(__name__)

SNAPSHOT_ARTIFACT = "artifacts/snapshot.json"
TAG_SNAPSHOT_VERSION = "snapshot_version"


class RegistryError(FraudstreamError, RuntimeError):
    """A registry operation that cannot be done (one line for the operator)."""


def registry_name(settings: Settings) -> str:
    return settings.registry.name or settings.model.name


def configure_http(settings: Settings) -> None:
    """Bound MLflow's HTTP retries: its default retries for minutes while a server is down.
    Explicit MLFLOW_HTTP_REQUEST_* variables still win."""
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", str(settings.registry.request_timeout_s))


def sqlite_path(uri: str) -> Path | None:
    """The database file of a `sqlite:///` tracking URI, else None."""
    prefix = "sqlite:///"  # then a relative path, or an absolute one (four slashes)
    if not uri.startswith(prefix):
        return None
    path = unquote(uri[len(prefix) :].split("?", 1)[0])
    return Path(path) if path and path != ":memory:" else None


def store_exists(uri: str) -> bool:
    """False for a local store that was never created: nothing registered, nothing to ask.
    (Opening a missing sqlite store would create it, and two processes creating one at
    the same time race on its schema.)"""
    path = sqlite_path(uri)
    if path is not None:
        return path.exists()
    if uri.startswith("file:"):
        return Path(unquote(urlparse(uri).path)).exists()
    if ":" not in uri and not uri.startswith("databricks"):  # a plain directory path
        return Path(uri).exists()
    return True


def default_artifact_location(uri: str) -> str | None:
    """Artifacts of a local sqlite store go next to the database (`<dir>/mlruns`), not under
    whatever the working directory happens to be; a server decides for itself."""
    path = sqlite_path(uri)
    if path is None:
        return None
    return (path.parent / "mlruns").resolve().as_uri()


def client(settings: Settings) -> MlflowClient:
    from mlflow import MlflowClient

    configure_http(settings)
    uri = settings.mlflow_uri()
    return MlflowClient(tracking_uri=uri, registry_uri=uri)


def _not_found(exc: Exception) -> bool:
    return getattr(exc, "error_code", None) == "RESOURCE_DOES_NOT_EXIST"


def snapshot_version_of(mv: ModelVersion) -> int | None:
    value = (mv.tags or {}).get(TAG_SNAPSHOT_VERSION)
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None


def download_snapshot(
    settings: Settings, mlflow_client: MlflowClient, mv: ModelVersion
) -> Snapshot:
    """The `model-updates` snapshot a registry version was logged from (not yet verified)."""
    import mlflow

    base = mlflow_client.get_model_version_download_uri(mv.name, mv.version)
    uri = settings.mlflow_uri()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            path = mlflow.artifacts.download_artifacts(
                artifact_uri=f"{base.rstrip('/')}/{SNAPSHOT_ARTIFACT}",
                dst_path=tmp,
                tracking_uri=uri,
                registry_uri=uri,
            )
        except Exception as exc:
            raise RegistryError(
                f"registry version {mv.version} of {mv.name} has no {SNAPSHOT_ARTIFACT} "
                f"(not logged by this fraudstream, or its artifacts were deleted): {exc}"
            ) from None
        return decode_snapshot(Path(path).read_bytes())


def highest_snapshot_version(mlflow_client: MlflowClient, name: str) -> int:
    versions = mlflow_client.search_model_versions(f"name='{name}'")
    return max((snapshot_version_of(v) or 0 for v in versions), default=0)


def champion_version(settings: Settings, mlflow_client: MlflowClient) -> ModelVersion | None:
    try:
        return mlflow_client.get_model_version_by_alias(
            registry_name(settings), settings.registry.champion_alias
        )
    except Exception as exc:
        if _not_found(exc):
            return None
        raise


def champion_snapshot(settings: Settings) -> Snapshot | None:
    """The registry's champion as a snapshot to serve at once, or None when there is none.

    Verified like a `model-updates` record (signature, format, model name).
    Its input offsets are dropped: they belong to the topics it was trained on, which are
    gone (this is used when `model-updates` is empty). Its version is the highest snapshot
    version the registry records, so the trainer's next snapshots number above everything a
    scorer may have seen. Raises on a registry that is unreachable or a champion refused.
    """
    from infra.model_updates import check_snapshot
    from infra.signing import verify_key

    key = verify_key(settings)
    uri = settings.mlflow_uri()
    if not store_exists(uri):
        return None
    mlflow_client = client(settings)
    mv = champion_version(settings, mlflow_client)
    if mv is None:
        return None
    snapshot = download_snapshot(settings, mlflow_client, mv)
    check_snapshot(snapshot, key, settings.model.name)
    top = highest_snapshot_version(mlflow_client, registry_name(settings))
    return snapshot.model_copy(
        update={
            "version": max(snapshot.version, top),
            "resume_offsets": {},
            "processed_offsets": {},
            "origin": "registry",
            "registry_version": int(mv.version),
        }
    )


def list_versions(settings: Settings) -> tuple[list[ModelVersion], dict[str, str]]:
    """Registry versions, newest first, and the aliases (alias -> version)."""
    if not store_exists(settings.mlflow_uri()):
        return [], {}
    mlflow_client = client(settings)
    name = registry_name(settings)
    try:
        aliases = dict(mlflow_client.get_registered_model(name).aliases or {})
    except Exception as exc:
        if _not_found(exc):
            return [], {}
        raise
    versions = sorted(
        mlflow_client.search_model_versions(f"name='{name}'"),
        key=lambda v: int(v.version),
        reverse=True,
    )
    return versions, {k: str(v) for k, v in aliases.items()}


def _logged_model_id(mv: ModelVersion) -> str | None:
    model_id = getattr(mv, "model_id", None)
    if model_id:
        return str(model_id)
    source = mv.source or ""
    if source.startswith("models:/m-"):
        return source[len("models:/") :].split("/")[0]
    return None


def delete_version(mlflow_client: MlflowClient, mv: ModelVersion) -> None:
    """Delete a registry version and the files of the model behind it."""
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    mlflow_client.delete_model_version(mv.name, mv.version)
    model_id = _logged_model_id(mv)
    if model_id is None:
        return
    try:
        logged = mlflow_client.get_logged_model(model_id)
        tracking_uri = mlflow_client.tracking_uri
        get_artifact_repository(
            logged.artifact_location, tracking_uri=tracking_uri
        ).delete_artifacts()
        mlflow_client.delete_logged_model(model_id)
    except Exception as exc:  # noqa: BLE001  the version is gone; its files are best effort
        log.warning("registry: could not delete the files of %s: %s", model_id, exc)


def apply_retention(settings: Settings, mlflow_client: MlflowClient) -> list[str]:
    """Delete versions beyond the newest `registry.keep_versions`, never an aliased one."""
    keep = settings.registry.keep_versions
    if keep <= 0:
        return []
    name = registry_name(settings)
    aliased = set(str(v) for v in (mlflow_client.get_registered_model(name).aliases or {}).values())
    versions = sorted(
        mlflow_client.search_model_versions(f"name='{name}'"),
        key=lambda v: int(v.version),
        reverse=True,
    )
    deleted = []
    for mv in versions[keep:]:
        if str(mv.version) in aliased:
            continue
        delete_version(mlflow_client, mv)
        deleted.append(str(mv.version))
    if deleted:
        log.info("registry: deleted %s version(s) %s (keeping %d)", name, ", ".join(deleted), keep)
    return deleted


def rollback(settings: Settings, version: int) -> Snapshot:
    """Serve registry version `version` again: republish it on `model-updates` as the next
    snapshot version (scorers load it at once; a running trainer adopts it and learns on from
    it) and point the champion alias at it. Returns the snapshot published.

    The republished snapshot has a new version and new offsets, so it is signed anew: a
    rollback needs the trainer's signing key (a reader's public key cannot sign, and an old
    signed snapshot replayed under a new number would let anyone who can write the topic roll
    the model back). The registry version is verified with the public key first."""
    from confluent_kafka import Producer

    from core.snapshot import encode_snapshot, make_snapshot
    from infra.kafka import producer_config
    from infra.model_updates import check_snapshot, read_latest_snapshot
    from infra.signing import require_signing_key, verify_key
    from infra.topics import SNAPSHOT_MAX_BYTES

    key = require_signing_key(settings, "`fraudstream model rollback` republishes a version and")
    public = verify_key(settings)
    mlflow_client = client(settings)
    name = registry_name(settings)
    try:
        mv = mlflow_client.get_model_version(name, str(version))
    except Exception as exc:
        if _not_found(exc):
            raise RegistryError(f"{name} has no registry version {version}") from None
        raise
    old = download_snapshot(settings, mlflow_client, mv)
    try:
        check_snapshot(old, public, settings.model.name)
        model = old.load_model()
    except SnapshotError as exc:
        raise RegistryError(f"registry version {version} refused: {exc}") from None
    latest = read_latest_snapshot(settings, warm_start=False)
    top = max(latest.version if latest else 0, highest_snapshot_version(mlflow_client, name))
    snapshot = make_snapshot(
        model,
        settings.model.name,
        top + 1,
        old.labels_learned,
        # A trainer restarted from this snapshot resumes where the serving one stood.
        latest.resume_offsets if latest else {},
        latest.processed_offsets if latest else {},
        old.metrics,
        label_counts=old.label_counts,
        key=key,
        origin="rollback",
        registry_version=int(mv.version),
        candidate=old.candidate,
        hyperparameters=old.hyperparameters,
        label_state=old.label_state,
    )
    producer = Producer(producer_config(settings, **{"message.max.bytes": SNAPSHOT_MAX_BYTES}))
    errors: list[Any] = []
    producer.produce(
        settings.topics.model_updates,
        encode_snapshot(snapshot),
        settings.model.name.encode(),
        on_delivery=lambda err, _msg: errors.append(err) if err is not None else None,
    )
    if producer.flush(30) != 0 or errors:
        raise RegistryError(f"could not publish to {settings.topics.model_updates}: {errors}")
    mlflow_client.set_registered_model_alias(name, settings.registry.champion_alias, mv.version)
    mlflow_client.set_model_version_tag(name, mv.version, "rolled_back_as", str(snapshot.version))
    log.info(
        "rolled back to registry version %s (snapshot v%d), published as v%d",
        mv.version,
        old.version,
        snapshot.version,
    )
    return snapshot
