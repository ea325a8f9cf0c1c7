"""Helpers for labels as they really arrive: event times, resume pins, re-fetching a score.

Most transactions never get a label. With `trainer.maturation_s` set, a scored transaction
still unlabelled when the stream's event time has moved that far past its own is learned as
legitimate (see `Joiner.mature`). Time here is stream time, integer microseconds since the
epoch, so replaying history decides exactly as the live run did, and comparisons are exact
across a restart (the watermark is stored in the snapshot).
"""

from __future__ import annotations

import logging
import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

from confluent_kafka import Consumer, KafkaError, TopicPartition

from infra.config import Settings
from infra.kafka import consumer_config

log = logging.getLogger(__name__)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
# Snapshot `label_counts` key holding the trainer's watermark (integer microseconds). That
# dict is free-form and round-trips through restore; its `fraud`/`legit` counts are unchanged.
WATERMARK_KEY = "watermark_us"
# An event time this far ahead of the wall clock is a broken clock, not the stream's time:
# it must not advance the watermark (everything pending would mature at once).
MAX_FUTURE_US = 24 * 3600 * 1_000_000


def event_time_us(value: Any) -> int | None:
    """An ISO-8601 time with a zone (`2026-11-22T12:00:00Z`) -> microseconds since the epoch;
    None when it is not one. Integer arithmetic: no float rounding between runs."""
    if not isinstance(value, str):
        return None
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        return None
    delta = dt - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def wall_clock_us() -> int:
    return time.time_ns() // 1000


class SlidingMin:
    """Per partition, the lowest offset among the entries of a FIFO window (monotone deques):
    `push` in window order, `expire` when the window drops an entry. O(1) amortized."""

    def __init__(self) -> None:
        self._deques: dict[int, deque[tuple[int, int]]] = {}

    def push(self, partition: int, seq: int, offset: int) -> None:
        dq = self._deques.get(partition)
        if dq is None:
            dq = self._deques[partition] = deque()
        while dq and dq[-1][1] >= offset:
            dq.pop()
        dq.append((seq, offset))

    def expire(self, partition: int, seq: int) -> None:
        """Entries up to `seq` (window order) left the window."""
        dq = self._deques.get(partition)
        while dq and dq[0][0] <= seq:
            dq.popleft()

    def mins(self) -> dict[int, int]:
        return {p: dq[0][1] for p, dq in self._deques.items() if dq}


class ScoreFetcher:
    """Reads one Score record back from the scores topic by (partition, offset): the features
    of a transaction learned as legitimate at maturation, when a fraud label comes later.
    Rare, so one lazily created consumer with `assign()` (no group join) and a blocking read."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.topic = settings.topics.scores
        self.timeout_s = timeout_s
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            conf = consumer_config(
                self.settings,
                f"{self.settings.trainer.group_id}-refetch",
                **{
                    "auto.offset.reset": "error",
                    "statistics.interval.ms": 0,
                    "fetch.wait.max.ms": self.settings.trainer.fetch_wait_max_ms,
                },
            )
            self._consumer = Consumer(conf)
        return self._consumer

    def fetch(self, partition: int, offset: int) -> bytes | None:
        """The record's value, or None when it is gone (retention) or unreachable in time."""
        consumer = self._client()
        consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + self.timeout_s
        try:
            while time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        continue
                    log.warning("re-reading %s[%d]@%d: %s", self.topic, partition, offset, err)
                    return None
                at = msg.offset()
                if at == offset:
                    return msg.value()
                if at is not None and at > offset:  # compacted or deleted: gone
                    return None
            log.warning("re-reading %s[%d]@%d: timed out", self.topic, partition, offset)
            return None
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
