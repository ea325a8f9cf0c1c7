"""The `model-updates` wire format: a model snapshot with its metadata, a checksum and, when a
key is configured, an HMAC signature.

Value: one JSON object. The pipeline is pickled (River's native persistence) and base64
encoded; `sha256` covers those pickle bytes, and `signature` (HMAC-SHA256, hex) covers every
other field, `sha256` included, so it binds the model bytes too. Nothing is unpickled before
the checks pass: `verify` (signature and checksum) and `check_compatible` (format and the River
version that wrote it), both run by `load_model` except the signature, which needs the key.

`challengers` (absent from older snapshots: an empty list) carries the trainer's challengers,
each with its own pickled pipeline and `sha256`. The signature covers that list whole, model
bytes included: a reader that predates the field signs every field it finds on the wire, so it
verifies these snapshots too. `verify` checks every challenger's checksum as well.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import pickle
import platform
from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from core.errors import FraudstreamError

FORMAT = "river-pickle/1"

# topic -> partition (as str, JSON keys) -> offset
Offsets = dict[str, dict[str, int]]

# Fields the signature does not cover: itself, and the model bytes (bound through `sha256`).
_UNSIGNED = ("signature", "model_b64")


class SnapshotError(FraudstreamError, ValueError):
    """A snapshot that cannot be loaded. `reason` is a short stable code for metrics:
    invalid, checksum, unsigned, bad_signature, incompatible, load_failed."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _canonical(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {k: v for k, v in fields.items() if k not in _UNSIGNED}, option=orjson.OPT_SORT_KEYS
    )


def _series(version: str) -> str:
    """The part of a version that must match for a pickle to load: the major version, and the
    minor one too below 1.0 (River 0.x changes its classes between minor releases)."""
    parts = version.split(".")
    if parts[0] == "0" and len(parts) > 1:
        return f"0.{parts[1]}"
    return parts[0]


def _decode_b64(data: str, what: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise SnapshotError(f"{what}: model_b64 is not base64", "checksum") from None


def _unpickle(raw: bytes, what: str) -> Any:
    try:
        return pickle.loads(raw)
    except Exception as exc:  # noqa: BLE001  any unpickling failure is one clear error
        raise SnapshotError(f"{what}: the model does not load: {exc}", "load_failed") from None


class ChallengerSnapshot(BaseModel):
    """One challenger learning beside the champion, as the trainer held it at snapshot time."""

    name: str
    # Its model settings (as `Snapshot.hyperparameters`).
    hyperparameters: dict[str, float | str] = Field(default_factory=dict)
    # Its rolling progressive quality then, and how many labels that evaluated. The rolling
    # windows themselves are not stored (~130 KB each against ~3 KB for the pipeline).
    metrics: dict[str, float] = Field(default_factory=dict)
    labels_seen: int = Field(0, ge=0)
    # Consecutive checks at which it beat the champion by the margin.
    streak: int = Field(0, ge=0)
    sha256: str
    model_b64: str

    def model_bytes(self) -> bytes:
        return _decode_b64(self.model_b64, f"challenger {self.name!r}")

    def verify(self, version: int) -> bytes:
        raw = self.model_bytes()
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise SnapshotError(
                f"snapshot v{version}: checksum mismatch of challenger {self.name!r}", "checksum"
            )
        return raw


def challenger_snapshot(
    name: str,
    pipeline: Any,
    hyperparameters: dict[str, float | str],
    metrics: dict[str, float] | None = None,
    labels_seen: int = 0,
    streak: int = 0,
) -> ChallengerSnapshot:
    raw = pickle.dumps(pipeline, protocol=pickle.HIGHEST_PROTOCOL)
    return ChallengerSnapshot(
        name=name,
        hyperparameters=hyperparameters,
        metrics=metrics or {},
        labels_seen=labels_seen,
        streak=streak,
        sha256=hashlib.sha256(raw).hexdigest(),
        model_b64=base64.b64encode(raw).decode("ascii"),
    )


class Snapshot(BaseModel):
    model_name: str
    version: int = Field(ge=0)
    created_at: datetime
    format: str = FORMAT
    labels_learned: int = 0
    # Arrival time (epoch s) of the newest label this model learned: label-to-serving delay.
    last_label_at: float | None = None
    # Labels learned by class: {"fraud": n, "legit": n}.
    label_counts: dict[str, int] = Field(default_factory=dict)
    # Where a restarted trainer resumes reading each input partition.
    resume_offsets: Offsets = Field(default_factory=dict)
    # Every record below these offsets had been processed when the snapshot was taken.
    processed_offsets: Offsets = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    library_versions: dict[str, str] = Field(default_factory=dict)
    # trainer: learned and published by the trainer; rollback: an earlier registry version
    # republished by `fraudstream model rollback`; registry: a champion loaded at warm start.
    origin: str = "trainer"
    # The Model Registry version this snapshot came from (rollback, warm start), if any.
    registry_version: int | None = None
    # Which learner this is (champion and challengers; None: the configured model) and the
    # model settings it learns with.
    candidate: str | None = None
    hyperparameters: dict[str, float | str] = Field(default_factory=dict)
    # The challengers learning beside this champion, and the promotion state (hysteresis),
    # so a restarted trainer goes on with them trained. Signed with everything else.
    challengers: list[ChallengerSnapshot] = Field(default_factory=list)
    promotions: int = Field(0, ge=0)
    labels_since_promotion: int = Field(0, ge=0)
    # What the model knows from labels beyond its weights (`core.label_state`): scorers serve
    # it with the weights. Data, signed with the rest; None in snapshots without it.
    label_state: dict[str, Any] | None = None
    sha256: str
    model_b64: str
    signature: str | None = None

    # The canonical signed bytes of the record as read from the wire (decode_snapshot): every
    # field present there, also fields this version does not know.
    _signed: bytes | None = PrivateAttr(default=None)

    def signed_payload(self) -> bytes:
        if self._signed is not None:
            return self._signed
        return _canonical(self.model_dump(mode="json"))

    def sign(self, key: bytes) -> Snapshot:
        """A copy carrying the HMAC-SHA256 of its metadata under `key`."""
        unsigned = self.model_copy(update={"signature": None})
        unsigned._signed = None
        mac = hmac.new(key, unsigned.signed_payload(), hashlib.sha256).hexdigest()
        signed = unsigned.model_copy(update={"signature": mac})
        return signed

    def model_bytes(self) -> bytes:
        return _decode_b64(self.model_b64, f"snapshot v{self.version}")

    def verify(self, key: bytes | None) -> None:
        """Check the signature (when a key is given: a snapshot without one is refused) and the
        checksum of the model bytes, the challengers' too. Raises SnapshotError; never unpickles
        anything."""
        if key is not None:
            if not self.signature:
                raise SnapshotError(
                    f"snapshot v{self.version} is not signed and a snapshot key is configured",
                    "unsigned",
                )
            expected = hmac.new(key, self.signed_payload(), hashlib.sha256).hexdigest()
            if not hmac.compare_digest(expected, self.signature):
                raise SnapshotError(
                    f"snapshot v{self.version}: signature mismatch (tampered, or signed with "
                    "another key)",
                    "bad_signature",
                )
        if hashlib.sha256(self.model_bytes()).hexdigest() != self.sha256:
            raise SnapshotError(f"snapshot v{self.version}: checksum mismatch", "checksum")
        for challenger in self.challengers:
            challenger.verify(self.version)

    def check_compatible(self) -> None:
        """Refuse, with one clear line, a snapshot this process cannot load safely."""
        if self.format != FORMAT:
            raise SnapshotError(
                f"snapshot v{self.version} has format {self.format!r}, this fraudstream reads "
                f"{FORMAT!r}: load it with the fraudstream that wrote it, or retrain",
                "incompatible",
            )
        import river

        written = self.library_versions.get("river")
        if written is None:
            raise SnapshotError(
                f"snapshot v{self.version} does not say which river version wrote it: "
                "refusing to unpickle it",
                "incompatible",
            )
        if _series(written) != _series(river.__version__):
            raise SnapshotError(
                f"snapshot v{self.version} was written with river {written}, this process has "
                f"river {river.__version__}: a River model pickled by river "
                f"{_series(written)}.x loads only there (install it, or retrain)",
                "incompatible",
            )

    def load_model(self) -> Any:
        self.check_compatible()
        raw = self.model_bytes()
        if hashlib.sha256(raw).hexdigest() != self.sha256:
            raise SnapshotError(f"snapshot v{self.version}: checksum mismatch", "checksum")
        return _unpickle(raw, f"snapshot v{self.version}")

    def load_challengers(self) -> list[tuple[str, Any]]:
        """(name, pipeline) of each challenger, in snapshot order; empty for a snapshot without
        any. Checked like `load_model` (compatibility, each checksum) before unpickling."""
        if not self.challengers:
            return []
        self.check_compatible()
        raws = [(c.name, c.verify(self.version)) for c in self.challengers]
        return [
            (name, _unpickle(raw, f"snapshot v{self.version} challenger {name!r}"))
            for name, raw in raws
        ]


def library_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    import river

    out = {"python": platform.python_version(), "river": river.__version__}
    try:
        out["fraudstream"] = version("fraudstream")
    except PackageNotFoundError:
        pass
    return out


def make_snapshot(
    model: Any,
    model_name: str,
    version: int,
    labels_learned: int,
    resume_offsets: Offsets,
    processed_offsets: Offsets,
    metrics: dict[str, float],
    *,
    label_counts: dict[str, int] | None = None,
    key: bytes | None = None,
    origin: str = "trainer",
    registry_version: int | None = None,
    candidate: str | None = None,
    hyperparameters: dict[str, float | str] | None = None,
    last_label_at: float | None = None,
    challengers: list[ChallengerSnapshot] | None = None,
    promotions: int = 0,
    labels_since_promotion: int = 0,
    label_state: dict[str, Any] | None = None,
) -> Snapshot:
    raw = pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL)
    snapshot = Snapshot(
        model_name=model_name,
        version=version,
        created_at=datetime.now(UTC),
        labels_learned=labels_learned,
        last_label_at=last_label_at,
        label_counts=label_counts or {},
        resume_offsets=resume_offsets,
        processed_offsets=processed_offsets,
        metrics=metrics,
        library_versions=library_versions(),
        origin=origin,
        registry_version=registry_version,
        candidate=candidate,
        hyperparameters=hyperparameters or {},
        challengers=challengers or [],
        promotions=promotions,
        labels_since_promotion=labels_since_promotion,
        label_state=label_state,
        sha256=hashlib.sha256(raw).hexdigest(),
        model_b64=base64.b64encode(raw).decode("ascii"),
    )
    return snapshot.sign(key) if key is not None else snapshot


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return orjson.dumps(snapshot.model_dump(mode="json"))


def decode_snapshot(raw: bytes | None) -> Snapshot:
    if not raw:
        raise SnapshotError("empty snapshot record")
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"invalid snapshot: not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise SnapshotError("invalid snapshot: not a JSON object")
    try:
        snapshot = Snapshot.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise SnapshotError(f"invalid snapshot: {loc}: {err['msg']}") from None
    snapshot._signed = _canonical(fields)
    return snapshot
