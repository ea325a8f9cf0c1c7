"""The scorer's produce loop: a full local queue pauses it and loses or repeats nothing."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from infra.metrics import Metrics
from scorer.offsets import OffsetTracker
from scorer.run import ScoredRun, Scorer


class _FullQueueProducer:
    """Refuses records (BufferError) whenever `room` is used up; each poll frees `frees`."""

    def __init__(self, room: int, frees: int) -> None:
        self.room = room
        self.frees = frees
        self.sent: list[tuple[str, bytes, bytes, int]] = []
        self.polls = 0

    def produce(self, topic: str, value: bytes, key: bytes, partition: int, cb: object) -> None:
        if self.room == 0:
            raise BufferError("Local: Queue full")
        self.room -= 1
        self.sent.append((topic, value, key, partition))

    def poll(self, _timeout: float) -> int:
        self.polls += 1
        self.room += self.frees
        return 0


def _scorer(producer: _FullQueueProducer) -> SimpleNamespace:
    return SimpleNamespace(
        topics=SimpleNamespace(scores="scores"), producer=producer, scored=0, metrics=Metrics()
    )


def test_a_full_queue_pauses_the_run_and_every_record_goes_once_in_order() -> None:
    n = 1000
    values = [f"v{i}".encode() for i in range(n)]
    keys = [f"k{i}".encode() for i in range(n)]
    run = ScoredRun(keys, values, flagged=3, scored_at=100.0, event_ts=np.full(n, 99.0))
    producer = _FullQueueProducer(room=10, frees=7)
    scorer = _scorer(producer)
    batch = OffsetTracker().open({("tx", 0): n}, n)
    Scorer._produce(scorer, run, batch)  # type: ignore[arg-type]
    assert producer.sent == [("scores", v, k, -1) for v, k in zip(values, keys, strict=True)]
    assert producer.polls == -(-(n - 10) // 7)  # one wait per refusal
    assert scorer.scored == n


def test_without_back_pressure_there_is_no_wait() -> None:
    run = ScoredRun([b"k"], [b"v"], flagged=0, scored_at=1.0, event_ts=np.zeros(1))
    producer = _FullQueueProducer(room=5, frees=0)
    Scorer._produce(_scorer(producer), run, OffsetTracker().open({}, 1))  # type: ignore[arg-type]
    assert producer.sent == [("scores", b"v", b"k", -1)] and producer.polls == 0
