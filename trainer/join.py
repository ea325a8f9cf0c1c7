"""A bounded buffer joining scores and labels by transaction_id; either side may come first.

With a maturation window (`maturation_us` > 0) a pending score also leaves the buffer when
the stream's watermark passes its event time + the window: it is learned as legitimate
(`mature`), and a label that comes later for it is handed back as a late label.

Labels carry the trust rank of their source (trainer/label_trust.py): a higher-ranked label
overrides a lower-ranked contradicting one, and each rank waits in its own bounded buffer, so
a flood of low-trust labels for transactions nobody scored cannot evict trusted ones.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from trainer.maturation import SlidingMin

T = TypeVar("T")

# How a transaction was resolved: an explicit label joined with its score; matured (no label
# within the window: learned as legitimate); a label that came after it matured; a label that
# overrides a lower-ranked contradicting one already learned.
Kind = Literal["label", "matured", "late", "override"]

# The rank of a label whose caller gives none, and of a matured transaction: that of a
# configured, trusted source (the ranks are in trainer/label_trust.py).
DEFAULT_TRUST = 2


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~3x, once per record
class Pending(Generic[T]):
    item: T
    arrived: float  # monotonic-ish seconds, caller's clock
    partition: int
    offset: int
    # A score's event time, a label's record timestamp (microseconds since the epoch; 0: unknown).
    time_us: int = 0
    trust: int = 0  # a label's trust rank (unused for scores)


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


class LabelBuffers:
    """Pending labels, one bounded buffer per trust rank, each of the full size: a flood at
    one rank evicts (and counts) only labels of that rank."""

    def __init__(self, max_size: int, ttl_s: float) -> None:
        self.max_size = max_size
        self.ttl_s = ttl_s
        self.by_rank: dict[int, BoundedBuffer[bool]] = {}

    def __len__(self) -> int:
        return sum(len(b) for b in self.by_rank.values())

    def get(self, key: str) -> Pending[bool] | None:
        for buffer in self.by_rank.values():
            pending = buffer.items.get(key)
            if pending is not None:
                return pending
        return None

    def pop(self, key: str) -> Pending[bool] | None:
        for buffer in self.by_rank.values():
            pending = buffer.pop(key)
            if pending is not None:
                return pending
        return None

    def put(self, key: str, pending: Pending[bool]) -> None:
        buffer = self.by_rank.get(pending.trust)
        if buffer is None:
            buffer = self.by_rank[pending.trust] = BoundedBuffer(self.max_size, self.ttl_s)
        buffer.put(key, pending)

    def expire(self, now: float) -> int:
        return sum(b.expire(now) for b in self.by_rank.values())

    def min_offsets(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for buffer in self.by_rank.values():
            for partition, offset in buffer.min_offsets().items():
                out[partition] = min(out.get(partition, offset), offset)
        return out

    @property
    def evicted_full(self) -> int:
        return sum(b.evicted_full for b in self.by_rank.values())

    @property
    def evicted_expired(self) -> int:
        return sum(b.evicted_expired for b in self.by_rank.values())


@dataclass(slots=True)  # not frozen: a frozen __init__ costs ~3x, once per record
class Joined:
    transaction_id: str
    # None for a late label: the score left memory at maturation (re-read it by `score_at`).
    score_raw: bytes | None
    is_fraud: bool
    score_at: tuple[int, int]  # (partition, offset) in the scores topic
    label_at: tuple[int, int] | None  # (partition, offset) in the labels topic; None: matured
    label_arrived: float
    kind: Kind = "label"
    event_us: int = 0  # the score's event time, when known
    label_us: int = 0  # the label's record timestamp, when known
    trust: int = DEFAULT_TRUST  # the label's trust rank


@dataclass(slots=True)
class Resolved:
    """A transaction already learned (or skipped as learned before a restart)."""

    is_fraud: bool
    kind: Kind
    score_at: tuple[int, int]
    label_at: tuple[int, int] | None
    event_us: int
    seq: int
    trust: int = DEFAULT_TRUST


class Joiner:
    """Pairs each label with the Score that carried the serving-time features.

    A transaction is joined once: a repeated score (a scorer re-scoring after a crash) or a
    repeated label for a transaction already joined is ignored and counted, and a label that
    contradicts the one already learned is counted as a conflict (the first label stands,
    unless the new one ranks higher). Exceptions: for a transaction learned as legitimate at
    maturation (which ranks as a trusted label), a label of at least that rank is returned as
    kind "late" for the trainer to honour (a fraud label) or count (a legitimate one); a
    contradicting label that ranks higher than the one learned is returned as kind
    "override" for the trainer to learn the correction (`Trainer._relearn`).
    A higher-ranked label for a transaction whose label still waits for its score replaces it.
    """

    def __init__(self, max_size: int, ttl_s: float, maturation_us: int = 0) -> None:
        self.maturation_us = maturation_us
        # With maturation on, a score waits for its label until it matures (stream time), not
        # for a wall-clock TTL; the size bound still holds. Labels keep the TTL.
        self.scores: BoundedBuffer[bytes] = BoundedBuffer(
            max_size, float("inf") if maturation_us else ttl_s
        )
        self.labels = LabelBuffers(max_size, ttl_s)
        # Recently resolved transactions, bounded like the buffers: repeats are recognized,
        # and a label for a matured one is a late label, as long as it is remembered.
        self.joined: OrderedDict[str, Resolved] = OrderedDict()
        self.max_joined = max_size
        self.duplicate_scores = 0
        self.duplicate_labels = 0
        self.conflicting_labels = 0
        # Higher-ranked labels: contradicting a learned one (to correct), agreeing with one
        # (its rank raised), replacing a waiting one.
        self.overriding_labels = 0
        self.confirming_labels = 0
        self.replaced_labels = 0
        self.forgotten_matured = 0
        self._seq = 0
        # Pending scores by due time (event time + window): (due_us, seq, tid, partition,
        # offset). Entries of scores that left the buffer otherwise are skipped when popped.
        self._due: list[tuple[int, int, str, int, int]] = []
        # With maturation on, a restart re-reads every remembered transaction, both halves, so
        # that none is matured twice and late labels still find theirs (TrainingState.offsets).
        self.score_pins = SlidingMin()
        self.label_pins = SlidingMin()

    def _remember(
        self,
        tid: str,
        is_fraud: bool,
        kind: Kind,
        score_at: tuple[int, int],
        label_at: tuple[int, int] | None,
        event_us: int,
        trust: int = DEFAULT_TRUST,
    ) -> None:
        self._seq += 1
        seq = self._seq
        self.joined.pop(tid, None)  # re-resolved (late, override): moves to the newest end
        self.joined[tid] = Resolved(is_fraud, kind, score_at, label_at, event_us, seq, trust)
        if self.maturation_us:
            self.score_pins.push(score_at[0], seq, score_at[1])
            if label_at is not None:
                self.label_pins.push(label_at[0], seq, label_at[1])
        if len(self.joined) > self.max_joined:
            _, old = self.joined.popitem(last=False)
            if old.kind == "matured":
                self.forgotten_matured += 1
            if self.maturation_us:
                self.score_pins.expire(old.score_at[0], old.seq)
                if old.label_at is not None:
                    self.label_pins.expire(old.label_at[0], old.seq)

    def add_score(
        self,
        tid: str,
        raw: bytes,
        now: float,
        partition: int,
        offset: int,
        event_us: int = 0,
        matured_before: bool = False,
    ) -> Joined | None:
        """`matured_before`: the trainer resumed from a snapshot taken after this score had
        matured (it is being re-read): remember it as matured, learn nothing."""
        if tid in self.joined or tid in self.scores.items:
            self.duplicate_scores += 1
            return None
        label = self.labels.pop(tid)
        if label is None:
            if matured_before:
                self._remember(tid, False, "matured", (partition, offset), None, event_us)
                return None
            self.scores.put(tid, Pending(raw, now, partition, offset, event_us))
            if self.maturation_us:
                self._seq += 1
                due = event_us + self.maturation_us
                heapq.heappush(self._due, (due, self._seq, tid, partition, offset))
            return None
        kind: Kind = "late" if matured_before else "label"
        score_at, label_at = (partition, offset), (label.partition, label.offset)
        self._remember(tid, label.item, kind, score_at, label_at, event_us, label.trust)
        return Joined(
            tid,
            raw,
            label.item,
            score_at,
            label_at,
            label.arrived,
            kind,
            event_us,
            label.time_us,
            label.trust,
        )

    def add_label(
        self,
        tid: str,
        is_fraud: bool,
        now: float,
        partition: int,
        offset: int,
        time_us: int = 0,
        trust: int = DEFAULT_TRUST,
    ) -> Joined | None:
        """`trust`: the label's rank (trainer/label_trust.py); refused labels never come here."""
        learned = self.joined.get(tid)
        if learned is not None:
            kind: Kind | None = None
            if learned.kind == "matured" and trust >= learned.trust:
                kind = "late"  # maturation is a default: any label at its rank or above wins
            elif learned.is_fraud == is_fraud:
                if trust > learned.trust:
                    learned.trust = trust  # confirmed: a lower label may not contradict it now
                    self.confirming_labels += 1
                else:
                    self.duplicate_labels += 1
            elif trust > learned.trust:
                kind = "override"
                self.overriding_labels += 1
            else:
                self.conflicting_labels += 1
            if kind is None:
                return None
            label_at = (partition, offset)
            self._remember(tid, is_fraud, kind, learned.score_at, label_at, learned.event_us, trust)
            return Joined(
                tid,
                None,
                is_fraud,
                learned.score_at,
                label_at,
                now,
                kind,
                learned.event_us,
                time_us,
                trust,
            )
        waiting = self.labels.get(tid)
        if waiting is not None:
            if trust > waiting.trust:
                self.labels.pop(tid)  # nothing learned from it yet: replaced
                self.replaced_labels += 1
            else:
                if waiting.item != is_fraud:
                    self.conflicting_labels += 1
                else:
                    self.duplicate_labels += 1
                return None
        score = self.scores.pop(tid)
        if score is None:
            self.labels.put(tid, Pending(is_fraud, now, partition, offset, time_us, trust))
            return None
        score_at, label_at = (score.partition, score.offset), (partition, offset)
        self._remember(tid, is_fraud, "label", score_at, label_at, score.time_us, trust)
        return Joined(
            tid,
            score.item,
            is_fraud,
            score_at,
            label_at,
            now,
            "label",
            score.time_us,
            time_us,
            trust,
        )

    def mature(self, watermark_us: int, now: float) -> list[Joined]:
        """Pending scores whose window has passed the watermark, oldest due first: to be
        learned as legitimate. Remembered as resolved, so a later label is a late label."""
        out: list[Joined] = []
        due, items = self._due, self.scores.items
        while due and due[0][0] <= watermark_us:
            _, _, tid, partition, offset = heapq.heappop(due)
            pending = items.get(tid)
            if pending is None or pending.offset != offset or pending.partition != partition:
                continue  # joined with a label or evicted meanwhile
            del items[tid]
            score_at = (partition, offset)
            self._remember(tid, False, "matured", score_at, None, pending.time_us)
            out.append(
                Joined(tid, pending.item, False, score_at, None, now, "matured", pending.time_us)
            )
        if len(due) > 2 * len(items) + 1024:
            # Entries of scores that were joined or evicted: rebuild from what is pending.
            self._due = [
                (p.time_us + self.maturation_us, i, tid, p.partition, p.offset)
                for i, (tid, p) in enumerate(items.items())
            ]
            heapq.heapify(self._due)
        return out

    def expire(self, now: float) -> None:
        self.scores.expire(now)
        self.labels.expire(now)
