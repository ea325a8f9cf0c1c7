"""Dead-letter records: the original key and bytes, with the reason and source coordinates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Message, Producer

DeliveryCallback = Callable[[Any, Message], None]

# Bytes kept of the reason detail: enough to debug, bounded for hostile input.
MAX_DETAIL = 500
# Original values above this are cut (a dead letter must fit the producer's and broker's
# default 1 MB message limit); the `original.size` header keeps the real size.
MAX_DLQ_VALUE = 512 * 1024


def dlq_headers(msg: Message, reason: str, detail: str) -> list[tuple[str, str | bytes | None]]:
    value = msg.value() or b""
    headers: list[tuple[str, str | bytes | None]] = [
        ("error", reason.encode()),
        ("error.detail", detail[:MAX_DETAIL].encode("utf-8", "replace")),
        ("source.topic", (msg.topic() or "").encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
    ]
    if len(value) > MAX_DLQ_VALUE:
        headers.append(("original.size", str(len(value)).encode()))
    return headers


def send_to_dlq(
    producer: Producer,
    topic: str,
    msg: Message,
    reason: str,
    detail: str,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    value = msg.value()
    producer.produce(
        topic,
        key=(msg.key() or b"")[:MAX_DLQ_VALUE] or None,
        value=value[:MAX_DLQ_VALUE] if value else value,
        headers=dlq_headers(msg, reason, detail),
        on_delivery=on_delivery,
    )
