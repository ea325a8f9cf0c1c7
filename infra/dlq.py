"""Dead-letter records: the original key and bytes, with the reason and source coordinates."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import Message, Producer

DeliveryCallback = Callable[[Any, Message], None]

# Bytes kept of the reason detail: enough to debug, bounded for hostile input.
MAX_DETAIL = 500


def dlq_headers(msg: Message, reason: str, detail: str) -> list[tuple[str, bytes]]:
    return [
        ("error", reason.encode()),
        ("error.detail", detail[:MAX_DETAIL].encode("utf-8", "replace")),
        ("source.topic", (msg.topic() or "").encode()),
        ("source.partition", str(msg.partition()).encode()),
        ("source.offset", str(msg.offset()).encode()),
    ]


def send_to_dlq(
    producer: Producer,
    topic: str,
    msg: Message,
    reason: str,
    detail: str,
    on_delivery: DeliveryCallback | None = None,
) -> None:
    producer.produce(
        topic,
        key=msg.key(),
        value=msg.value(),
        headers=dlq_headers(msg, reason, detail),
        on_delivery=on_delivery,
    )
