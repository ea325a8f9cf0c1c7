"""Dead-letter records: the original key and bytes, with the reason and source coordinates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Message

DeliveryCallback = Callable[[Any, Message], None]
Headers = list[tuple[str, bytes]]

# Bytes kept of the reason detail: enough to debug, bounded for hostile input.
MAX_DETAIL = 500
# A dead letter, key and headers included, stays within this many bytes: below librdkafka's
# and Kafka's default 1 MB message limit with room for the record's framing.
MAX_DLQ_MESSAGE = 900 * 1024
# Original keys and values above these are cut; `original.key.size` / `original.size` keep
# the real sizes.
MAX_DLQ_KEY = 4 * 1024
MAX_DLQ_VALUE = 512 * 1024


def dlq_headers(msg: Message, reason: str, detail: str) -> Headers:
    value = msg.value() or b""
    key = msg.key() or b""
    headers = [
        ("error", reason.encode()),
        ("error.detail", detail[:MAX_DETAIL].encode("utf-8", "replace")[: MAX_DETAIL * 4]),
        ("source.topic", (msg.topic() or "").encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
    ]
    if len(value) > MAX_DLQ_VALUE:
        headers.append(("original.size", str(len(value)).encode()))
    if len(key) > MAX_DLQ_KEY:
        headers.append(("original.key.size", str(len(key)).encode()))
    return headers


def dead_letter(
    msg: Message, reason: str, detail: str
) -> tuple[bytes | None, bytes | None, Headers]:
    """Key, value and headers of the dead letter of `msg`; together at most MAX_DLQ_MESSAGE
    bytes whatever the original's size (the original's own headers are not kept)."""
    key = (msg.key() or b"")[:MAX_DLQ_KEY] or None
    headers = dlq_headers(msg, reason, detail)
    used = len(key or b"") + sum(len(k) + len(v) for k, v in headers)
    value = msg.value()
    if value:
        value = value[: min(MAX_DLQ_VALUE, MAX_DLQ_MESSAGE - used)]
    return key, value, headers


def dead_letter_size(key: bytes | None, value: bytes | None, headers: Headers) -> int:
    return len(key or b"") + len(value or b"") + sum(len(k) + len(v) for k, v in headers)
