"""Ed25519 keys for `model-updates` snapshots: the trainer signs, every reader verifies.

Only the trainer (and `fraudstream model rollback`, which republishes a registry version)
holds the private key; scorers, the MLflow pyfunc and the registry warm start hold the public
key only, so no reader can forge a snapshot. A key is given as PEM text, as the base64 of its
32 raw bytes, or as a file holding either (the `_file` settings).

A process that reads snapshots does not start without a verification key: `verify_key`
raises ConfigError naming the setting. The trainer may leave the verification key unset: it
verifies with the public half of its signing key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import SecretStr

from infra.config import ENV_PREFIX, ConfigError, Settings

SIGNING_ENV = ENV_PREFIX + "SNAPSHOT_SIGNING_KEY"
VERIFY_ENV = ENV_PREFIX + "SNAPSHOT_VERIFY_KEY"
_RAW_LEN = 32


def _raw_or_pem(text: str) -> tuple[bytes | None, bytes | None]:
    """(raw 32 bytes, None) for base64 text, (None, PEM bytes) for PEM text."""
    text = text.strip()
    if text.startswith("-----BEGIN"):
        return None, text.encode()
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None, None
    return (raw, None) if len(raw) == _RAW_LEN else (None, None)


def parse_private_key(text: str, where: str) -> Ed25519PrivateKey:
    key = _parse_key(
        text,
        Ed25519PrivateKey.from_private_bytes,
        lambda pem: serialization.load_pem_private_key(pem, password=None),
    )
    if isinstance(key, Ed25519PrivateKey):
        return key
    raise ConfigError(
        f"{where} is not an Ed25519 private key (PEM, or base64 of its 32 bytes): "
        "make one with `fraudstream keys generate`"
    )


def parse_public_key(text: str, where: str) -> Ed25519PublicKey:
    key = _parse_key(text, Ed25519PublicKey.from_public_bytes, serialization.load_pem_public_key)
    if isinstance(key, Ed25519PublicKey):
        return key
    raise ConfigError(
        f"{where} is not an Ed25519 public key (PEM, or base64 of its 32 bytes): "
        "make a pair with `fraudstream keys generate`"
    )


def _parse_key(
    text: str, from_raw: Callable[[bytes], object], from_pem: Callable[[bytes], object]
) -> object:
    """The key in `text` (raw base64 or PEM), None when it holds none; the caller checks the
    type, since a PEM may hold a key of another algorithm."""
    raw, pem = _raw_or_pem(text)
    try:
        if raw is not None:
            return from_raw(raw)
        if pem is not None:
            return from_pem(pem)
    except (ValueError, TypeError):
        pass
    return None


def _read(path: Path, env: str) -> str:
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"{env}_FILE: cannot read {path} ({exc.strerror})") from None
    if not text.strip():
        raise ConfigError(f"{env}_FILE: {path} is empty")
    return text


def signing_key(settings: Settings) -> Ed25519PrivateKey | None:
    """The configured private key, or None when there is none."""
    if settings.snapshot_signing_key is not None:
        return parse_private_key(settings.snapshot_signing_key.get_secret_value(), SIGNING_ENV)
    if settings.snapshot_signing_key_file is not None:
        path = settings.snapshot_signing_key_file
        return parse_private_key(_read(path, SIGNING_ENV), f"{SIGNING_ENV}_FILE ({path})")
    return None


def require_signing_key(settings: Settings, who: str) -> Ed25519PrivateKey:
    key = signing_key(settings)
    if key is None:
        raise ConfigError(
            f"{who} signs snapshots: set {SIGNING_ENV} (or {SIGNING_ENV}_FILE) to the private key "
            "(`fraudstream keys generate` makes a pair)"
        )
    check_pair(settings, key)
    return key


def verify_key(settings: Settings) -> Ed25519PublicKey:
    """The public key snapshots are verified with; ConfigError naming the setting if none.
    Without a verification key, a configured signing key's public half is used."""
    if settings.snapshot_verify_key is not None:
        return parse_public_key(settings.snapshot_verify_key, VERIFY_ENV)
    if settings.snapshot_verify_key_file is not None:
        path = settings.snapshot_verify_key_file
        return parse_public_key(_read(path, VERIFY_ENV), f"{VERIFY_ENV}_FILE ({path})")
    private = signing_key(settings)
    if private is not None:
        return private.public_key()
    raise ConfigError(
        f"no snapshot verification key: set {VERIFY_ENV} (or {VERIFY_ENV}_FILE) to the "
        "trainer's public key; snapshots are never loaded unverified"
    )


def check_pair(settings: Settings, private: Ed25519PrivateKey) -> None:
    """A signing key and a verification key that are not one pair: this process would refuse
    its own snapshots."""
    if settings.snapshot_verify_key is None and settings.snapshot_verify_key_file is None:
        return
    if key_id(verify_key(settings)) != key_id(private.public_key()):
        raise ConfigError(
            f"{SIGNING_ENV} and {VERIFY_ENV} are not one key pair "
            f"(public keys {key_id(private.public_key())} and {key_id(verify_key(settings))})"
        )


def public_bytes(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(key: Ed25519PublicKey) -> str:
    """A short name for a public key: the first 16 hex digits of the SHA-256 of its bytes."""
    return hashlib.sha256(public_bytes(key)).hexdigest()[:16]


def sign(key: Ed25519PrivateKey, payload: bytes) -> str:
    return base64.b64encode(key.sign(payload)).decode("ascii")


def verify(key: Ed25519PublicKey, payload: bytes, signature: str) -> bool:
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, payload)
    except (binascii.Error, ValueError, InvalidSignature):
        return False
    return True


def public_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode()


def private_pem(key: Ed25519PrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def generate_pair() -> tuple[str, str]:
    """A new key pair as (private PEM, public PEM)."""
    private = Ed25519PrivateKey.generate()
    return private_pem(private), public_pem(private.public_key())


def keys_configured(settings: Settings) -> bool:
    configured = (
        settings.snapshot_signing_key,
        settings.snapshot_signing_key_file,
        settings.snapshot_verify_key,
        settings.snapshot_verify_key_file,
    )
    return any(v is not None for v in configured)


def with_run_keys(settings: Settings) -> Settings:
    """`settings` with a new key pair for this run when it configures none (the embedded demo,
    the benchmarks: self-contained runs whose processes all start from here)."""
    if keys_configured(settings):
        return settings
    private, public = generate_pair()
    return settings.model_copy(
        update={"snapshot_signing_key": SecretStr(private), "snapshot_verify_key": public}
    )


def write_pair(directory: Path, stem: str = "snapshot") -> tuple[Path, Path]:
    """Write a new pair as `<stem>-signing.pem` (mode 0600) and `<stem>-verify.pem`; refuses
    to overwrite either."""
    directory.mkdir(parents=True, exist_ok=True)
    private_path = directory / f"{stem}-signing.pem"
    public_path = directory / f"{stem}-verify.pem"
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(f"{path} exists: not overwriting a key")
    private, public = generate_pair()
    private_path.touch(mode=0o600)
    private_path.write_text(private)
    public_path.write_text(public)
    return private_path, public_path
