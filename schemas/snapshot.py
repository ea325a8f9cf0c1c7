"""The `model-updates` wire format: a model snapshot with its metadata and a checksum.

Value: one JSON object. The pipeline is pickled (River's native persistence) and base64
encoded; `sha256` covers those pickle bytes so a truncated or altered snapshot is refused.
"""

from __future__ import annotations

import base64
import hashlib
import pickle
import platform
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field, ValidationError

FORMAT = "river-pickle/1"

# topic -> partition (as str, JSON keys) -> offset
Offsets = dict[str, dict[str, int]]


class SnapshotError(ValueError):
    """A snapshot that cannot be loaded."""


class Snapshot(BaseModel):
    model_name: str
    version: int = Field(ge=0)
    created_at: datetime
    format: str = FORMAT
    labels_learned: int = 0
    # Where a restarted trainer resumes reading each input partition.
    resume_offsets: Offsets = Field(default_factory=dict)
    # Every record below these offsets had been processed when the snapshot was taken.
    processed_offsets: Offsets = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    sha256: str
    model_b64: str

    def load_model(self) -> Any:
        if self.format != FORMAT:
            raise SnapshotError(f"snapshot format {self.format!r} is not {FORMAT!r}")
        raw = base64.b64decode(self.model_b64)
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise SnapshotError(f"snapshot v{self.version}: checksum mismatch")
        return pickle.loads(raw)


def library_versions() -> dict[str, str]:
    import river

    return {"python": platform.python_version(), "river": river.__version__}


def make_snapshot(
    model: Any,
    model_name: str,
    version: int,
    labels_learned: int,
    resume_offsets: Offsets,
    processed_offsets: Offsets,
    metrics: dict[str, float],
) -> Snapshot:
    raw = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    return Snapshot(
        model_name=model_name,
        version=version,
        created_at=datetime.now(UTC),
        labels_learned=labels_learned,
        resume_offsets=resume_offsets,
        processed_offsets=processed_offsets,
        metrics=metrics,
        library_versions=library_versions(),
        sha256=hashlib.sha256(raw).hexdigest(),
        model_b64=base64.b64encode(raw).decode("ascii"),
    )


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return orjson.dumps(snapshot.model_dump(mode="json"))


def decode_snapshot(raw: bytes | None) -> Snapshot:
    if not raw:
        raise SnapshotError("empty snapshot record")
    try:
        return Snapshot.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise SnapshotError(f"invalid snapshot: {loc}: {err['msg']}") from None
