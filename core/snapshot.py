"""The `model-updates` wire format: a model snapshot as data, signed with Ed25519.

Value: one JSON object, format `fraudstream-model/3`. The model is plain data (`model`: the
scaler's statistics, the weights, the intercept and the optimizer state, see
`core.model_data`), so reading a snapshot never executes anything it holds. `signature` is
the base64 Ed25519 signature, by the trainer's private key, of every other field (the JSON
object with sorted keys, as read from the wire: fields this version does not know are covered
too); `signer` names the public key (the first 16 hex digits of its SHA-256). Readers verify
with the public key only (`verify`); an unsigned snapshot is refused like a tampered one.

`challengers` carries the trainer's challengers, each with its own model data; `label_state`
is the trainer's label-fed state (`core.label_state`'s data; `label_state_of` loads it as the
scorers and the MLflow model serve it). Both are signed with everything else.

`fraudstream-model/2` (before the averaged weights) is read as well: its model serves its raw
weights, as it did. Snapshots of the pickle era (`river-pickle/1`) are refused with one line
and never unpickled.
"""

from __future__ import annotations

import hashlib
import platform
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from pydantic import BaseModel, Field, PrivateAttr, ValidationError

from core.errors import FraudstreamError
from core.label_state import LabelState, LabelStateError
from core.model_data import ModelData, ModelDataError, pipeline_from_data, pipeline_to_data
from core.model_settings import ModelSettings

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import (
        Ed25519PrivateKey,
        Ed25519PublicKey,
    )

FORMAT = "fraudstream-model/3"
# Formats this version reads: /2 is /3 without the model's averaged weights.
READ_FORMATS = frozenset({"fraudstream-model/2", FORMAT})
# Formats whose model is a pickle: refused, never loaded.
PICKLE_FORMATS = frozenset({"river-pickle/1"})

# topic -> partition (as str, JSON keys) -> offset
Offsets = dict[str, dict[str, int]]


class SnapshotError(FraudstreamError, ValueError):
    """A snapshot that cannot be loaded. `reason` is a short stable code for metrics:
    invalid, unsigned, bad_signature, incompatible, wrong_model, version_jump, load_failed."""

    def __init__(self, message: str, reason: str = "invalid") -> None:
        super().__init__(message)
        self.reason = reason


def _canonical(fields: dict[str, Any]) -> bytes:
    return orjson.dumps(
        {k: v for k, v in fields.items() if k != "signature"}, option=orjson.OPT_SORT_KEYS
    )


def _digest(data: ModelData) -> str:
    return hashlib.sha256(
        orjson.dumps(data.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
    ).hexdigest()


def _to_data(pipeline: Any, what: str) -> ModelData:
    try:
        return pipeline_to_data(pipeline)
    except ModelDataError as exc:
        raise SnapshotError(f"{what}: {exc}", "invalid") from None


class ChallengerSnapshot(BaseModel):
    """One challenger learning beside the champion, as the trainer held it at snapshot time."""

    name: str
    # Its model settings (as `Snapshot.hyperparameters`).
    hyperparameters: dict[str, float | str] = Field(default_factory=dict)
    # Its rolling progressive quality then, and how many labels that evaluated. The rolling
    # windows themselves are not stored (~130 KB each against ~3 KB for the model).
    metrics: dict[str, float] = Field(default_factory=dict)
    labels_seen: int = Field(0, ge=0)
    # Consecutive checks at which it beat the champion by the margin.
    streak: int = Field(0, ge=0)
    model: ModelData

    @property
    def sha256(self) -> str:
        """SHA-256 of the model data (canonical JSON): names this exact model."""
        return _digest(self.model)

    def load(self) -> Any:
        return pipeline_from_data(self.model)


def challenger_snapshot(
    name: str,
    pipeline: Any,
    hyperparameters: dict[str, float | str],
    metrics: dict[str, float] | None = None,
    labels_seen: int = 0,
    streak: int = 0,
) -> ChallengerSnapshot:
    """Raises SnapshotError for a pipeline that cannot be written as data (another shape,
    non-finite parameters)."""
    return ChallengerSnapshot(
        name=name,
        hyperparameters=hyperparameters,
        metrics=metrics or {},
        labels_seen=labels_seen,
        streak=streak,
        model=_to_data(pipeline, f"challenger {name!r}"),
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
    # The versions that wrote it (lineage only: the model is data, it loads anywhere).
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
    # so a restarted trainer goes on with them trained.
    challengers: list[ChallengerSnapshot] = Field(default_factory=list)
    promotions: int = Field(0, ge=0)
    labels_since_promotion: int = Field(0, ge=0)
    # What the model knows from labels beyond its weights (`core.label_state`): scorers serve
    # it with the weights. Data, signed with the rest; None in snapshots without it.
    label_state: dict[str, Any] | None = None
    model: ModelData
    # Key id of the public key that verifies `signature` (infra.signing.key_id).
    signer: str | None = None
    signature: str | None = None

    # The canonical signed bytes of the record as read from the wire (decode_snapshot): every
    # field present there, also fields this version does not know.
    _signed: bytes | None = PrivateAttr(default=None)

    @property
    def sha256(self) -> str:
        """SHA-256 of the champion's model data (canonical JSON): names this exact model."""
        return _digest(self.model)

    def signed_payload(self) -> bytes:
        if self._signed is not None:
            return self._signed
        return _canonical(self.model_dump(mode="json"))

    def sign(self, key: Ed25519PrivateKey) -> Snapshot:
        """A copy signed with `key` (the signature covers every other field, `signer` too)."""
        from infra.signing import key_id, sign

        unsigned = self.model_copy(update={"signature": None, "signer": key_id(key.public_key())})
        unsigned._signed = None
        signed = unsigned.model_copy(update={"signature": sign(key, unsigned.signed_payload())})
        signed._signed = None
        return signed

    def verify(self, key: Ed25519PublicKey) -> None:
        """Check the signature with the trainer's public key. Raises SnapshotError (unsigned,
        bad_signature)."""
        _check_signature(key, self.signed_payload(), self.signature, self.signer, self.version)

    def check_compatible(self) -> None:
        """Refuse, with one clear line, a snapshot of a format this process does not read."""
        if self.format not in READ_FORMATS:
            raise SnapshotError(_format_message(self.version, self.format), "incompatible")

    def load_model(self) -> Any:
        """The champion as a new River pipeline, rebuilt from the snapshot's data."""
        self.check_compatible()
        return pipeline_from_data(self.model)

    def load_challengers(self) -> list[tuple[str, Any]]:
        """(name, pipeline) of each challenger, in snapshot order; empty for a snapshot without
        any."""
        if not self.challengers:
            return []
        self.check_compatible()
        return [(c.name, c.load()) for c in self.challengers]


def _check_signature(
    key: Ed25519PublicKey, payload: bytes, signature: object, signer: object, version: object
) -> None:
    from infra.signing import key_id, verify

    shown = f"v{version}" if isinstance(version, int) else "record"
    if not signature:
        raise SnapshotError(f"snapshot {shown} is not signed", "unsigned")
    if not isinstance(signature, str) or not verify(key, payload, signature):
        expected = key_id(key)
        other = (
            f"signed by key {signer[:16]}, this process verifies with {expected}"
            if isinstance(signer, str) and signer and signer != expected
            else "tampered with, or signed with another key"
        )
        raise SnapshotError(f"snapshot {shown}: signature mismatch ({other})", "bad_signature")


def _format_message(version: object, fmt: object) -> str:
    shown = f"v{version}" if isinstance(version, int) else "record"
    if fmt in PICKLE_FORMATS:
        return (
            f"snapshot {shown} has format {fmt!r}, a pickled River model: fraudstream never "
            f"unpickles snapshots and reads {FORMAT!r} only (let a trainer of this version "
            "publish a new one)"
        )
    reads = " and ".join(repr(f) for f in sorted(READ_FORMATS))
    return f"snapshot {shown} has format {str(fmt)[:64]!r}, this fraudstream reads {reads}"


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
    key: Ed25519PrivateKey | None = None,
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
    """A snapshot of `model` (a River pipeline), signed when `key` is given. Raises
    SnapshotError for a model that cannot be written as data."""
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
        model=_to_data(model, f"snapshot v{version}"),
    )
    return snapshot.sign(key) if key is not None else snapshot


def encode_snapshot(snapshot: Snapshot) -> bytes:
    return orjson.dumps(snapshot.model_dump(mode="json"))


def decode_snapshot(raw: bytes | None, key: Ed25519PublicKey | None = None) -> Snapshot:
    """Parse a record. Raises SnapshotError: invalid (not a snapshot), incompatible (another
    format, a pickle among them: refused before anything else is looked at). With `key`, the
    signature is checked on the raw fields before they are validated (unsigned,
    bad_signature): nothing from an unverified record is built."""
    if not raw:
        raise SnapshotError("empty snapshot record")
    try:
        fields = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise SnapshotError(f"invalid snapshot: not JSON ({exc})") from None
    if not isinstance(fields, dict):
        raise SnapshotError("invalid snapshot: not a JSON object")
    fmt = fields.get("format")
    if fmt not in READ_FORMATS:
        raise SnapshotError(_format_message(fields.get("version"), fmt), "incompatible")
    signed = _canonical(fields)
    if key is not None:
        version = fields.get("version")
        _check_signature(key, signed, fields.get("signature"), fields.get("signer"), version)
    try:
        snapshot = Snapshot.model_validate(fields)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise SnapshotError(f"invalid snapshot: {loc}: {err['msg']}") from None
    snapshot._signed = signed
    return snapshot


def empty_label_state(model: ModelSettings) -> LabelState:
    """The state before any label: every label-fed feature at the configured prior."""
    return LabelState(model.prior_fraud_rate, model.label_state_max_keys)


def label_state_of(snapshot: Snapshot, model: ModelSettings) -> LabelState:
    """The snapshot's label state (empty for a snapshot without one); SnapshotError, reason
    `invalid`, for state that does not load."""
    if snapshot.label_state is None:
        return empty_label_state(model)
    try:
        return LabelState.from_data(snapshot.label_state, model.label_state_max_keys).prepare()
    except LabelStateError as exc:
        raise SnapshotError(f"snapshot v{snapshot.version}: {exc}", "invalid") from None
