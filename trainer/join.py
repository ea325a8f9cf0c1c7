"""A bounded buffer joining scores and labels by transaction_id; either side may come first."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Pending(Generic[T]):
    item: T
    arrived: float  # monotonic-ish seconds, caller's clock
    partition: int
    offset: int


class BoundedBuffer(Generic[T]):
    """Insertion-ordered map with a size bound and a time-to-live; counts what it drops."""

    def __init__(self, max_size: int, ttl_s: float) -> None:
        self.max_size = max_size
        self.ttl_s = ttl_s
        self.items: OrderedDict[str, Pending[T]] = OrderedDict()
        self.evicted_full = 0
        self.evicted_expired = 0

    def __len__(self) -> int:
        return len(self.items)

    def put(self, key: str, pending: Pending[T]) -> None:
        self.items[key] = pending
        if len(self.items) > self.max_size:
            self.items.popitem(last=False)
            self.evicted_full += 1

    def pop(self, key: str) -> Pending[T] | None:
        return self.items.pop(key, None)

    def expire(self, now: float) -> int:
        n = 0
        cutoff = now - self.ttl_s
        while self.items:
            first = next(iter(self.items.values()))
            if first.arrived > cutoff:
                break
            self.items.popitem(last=False)
            n += 1
        self.evicted_expired += n
        return n

    def min_offsets(self) -> dict[int, int]:
        """Per partition, the lowest offset still buffered (where a restart must re-read from)."""
        out: dict[int, int] = {}
        for p in self.items.values():
            if p.offset < out.get(p.partition, 1 << 62):
                out[p.partition] = p.offset
        return out


@dataclass(frozen=True, slots=True)
class Joined:
    transaction_id: str
    score_raw: bytes
    is_fraud: bool
    score_at: tuple[int, int]  # (partition, offset) in the scores topic
    label_at: tuple[int, int]  # (partition, offset) in the labels topic
    label_arrived: float


class Joiner:
    """Pairs each label with the Score that carried the serving-time features.

    A transaction is joined once: a repeated score (a scorer re-scoring after a crash) or a
    repeated label for a transaction already joined is ignored and counted, and a label that
    contradicts the one already learned is counted as a conflict (the first label stands).
    """

    def __init__(self, max_size: int, ttl_s: float) -> None:
        self.scores: BoundedBuffer[bytes] = BoundedBuffer(max_size, ttl_s)
        self.labels: BoundedBuffer[bool] = BoundedBuffer(max_size, ttl_s)
        # Recently joined transactions and their label, bounded like the buffers.
        self.joined: OrderedDict[str, bool] = OrderedDict()
        self.max_joined = max_size
        self.duplicate_scores = 0
        self.duplicate_labels = 0
        self.conflicting_labels = 0

    def _remember(self, joined: Joined) -> Joined:
        self.joined[joined.transaction_id] = joined.is_fraud
        if len(self.joined) > self.max_joined:
            self.joined.popitem(last=False)
        return joined

    def add_score(
        self, tid: str, raw: bytes, now: float, partition: int, offset: int
    ) -> Joined | None:
        if tid in self.joined:
            self.duplicate_scores += 1
            return None
        label = self.labels.pop(tid)
        if label is None:
            self.scores.put(tid, Pending(raw, now, partition, offset))
            return None
        return Joined(
            tid,
            raw,
            label.item,
            (partition, offset),
            (label.partition, label.offset),
            label.arrived,
        )

    def add_label(
        self, tid: str, is_fraud: bool, now: float, partition: int, offset: int
    ) -> Joined | None:
        learned = self.joined.get(tid)
        if learned is not None:
            if learned == is_fraud:
                self.duplicate_labels += 1
            else:
                self.conflicting_labels += 1
            return None
        waiting = self.labels.items.get(tid)
        if waiting is not None and waiting.item != is_fraud:
            self.conflicting_labels += 1
            return None
        score = self.scores.pop(tid)
        if score is None:
            self.labels.put(tid, Pending(is_fraud, now, partition, offset))
            return None
        return self._remember(
            Joined(
                tid, score.item, is_fraud, (score.partition, score.offset), (partition, offset), now
            )
        )

    def expire(self, now: float) -> None:
        self.scores.expire(now)
        self.labels.expire(now)
