"""Limits on a record's envelope (key and headers), checked before any work on its value.

A record over a limit is a dead letter with the reason below (the value's own limit is
`core.codec.MAX_RECORD_BYTES`). The limits are far above what any producer here writes (a
key is a card or transaction id; no producer sets headers) and far below what would make a
dead letter too large to produce.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Message

from core.codec import DecodeError

MAX_KEY_BYTES = 1024
MAX_HEADERS = 32
MAX_HEADER_BYTES = 8 * 1024  # names and values together

_HEADERS = Message.headers


def headers_error(headers: Any) -> DecodeError | None:
    """The reason a record's headers are refused, or None."""
    if len(headers) > MAX_HEADERS:
        return DecodeError("headers_too_large", f"{len(headers)} headers > {MAX_HEADERS}")
    size = sum(len(k.encode("utf-8", "replace")) + len(v or b"") for k, v in headers)
    if size > MAX_HEADER_BYTES:
        return DecodeError("headers_too_large", f"headers of {size} bytes > {MAX_HEADER_BYTES}")
    return None


def key_error(key: bytes | None) -> DecodeError | None:
    if key is not None and len(key) > MAX_KEY_BYTES:
        return DecodeError("key_too_large", f"key of {len(key)} bytes > {MAX_KEY_BYTES}")
    return None


def envelope_error(msg: Message) -> DecodeError | None:
    """One record's check (the trainer's path; the scorer checks a batch at a time)."""
    exc = key_error(msg.key())
    if exc is None:
        headers = msg.headers()
        if headers:
            exc = headers_error(headers)
    return exc


def envelope_errors(msgs: list[Message], keys: list[bytes | None]) -> dict[int, DecodeError]:
    """Rows of a batch whose key or headers are over a limit. The common batch (no headers,
    keys in bounds) costs two C-level passes and no Python work per record."""
    bad: dict[int, DecodeError] = {}
    # (filter(None, ...): records without a key, which the scorer keys by card id, skipped)
    if max(map(len, filter(None, keys)), default=0) > MAX_KEY_BYTES:
        for i, key in enumerate(keys):
            exc = key_error(key)
            if exc is not None:
                bad[i] = exc
    if any(map(_HEADERS, msgs)):
        for i, msg in enumerate(msgs):
            headers = msg.headers()
            if headers and i not in bad:
                exc = headers_error(headers)
                if exc is not None:
                    bad[i] = exc
    return bad
