"""Helpers for labels as they really arrive: event times and resume pins (pure: no I/O).

Most transactions never get a label. With `trainer.maturation_s` set, a scored transaction
still unlabelled when the stream's event time has moved that far past its own is learned as
legitimate (see `Joiner.mature`). Time here is stream time, integer microseconds since the
epoch, so replaying history decides exactly as the live run did, and comparisons are exact
across a restart (the watermark is stored in the snapshot).
"""

from __future__ import annotations

import time
from collections import deque
from datetime import UTC, datetime
from typing import Any

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
