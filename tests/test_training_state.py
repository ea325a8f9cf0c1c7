"""The trainer's training state without a broker: join, maturation, watermark, resume offsets
and snapshot timing, and exactly-once learning across restarts at every point of a stream."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

from infra.config import TrainerSettings
from trainer.join import Joined
from trainer.state import TrainingState

S = 1_000_000  # microseconds per second
NOW_US = 1_800_000_000 * S  # the wall clock the tests run at
SCORES, LABELS = "scores", "labels"


@dataclass(frozen=True)
class Record:
    topic: str
    partition: int
    offset: int
    tid: str
    is_fraud: bool = False  # labels
    event_us: int = 0  # scores


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _state(maturation_s: float = 0.0, clock: Clock | None = None, **cfg: float) -> TrainingState:
    settings = TrainerSettings(maturation_s=maturation_s, **cfg)  # type: ignore[arg-type]
    return TrainingState(settings, SCORES, LABELS, clock or Clock(), lambda: NOW_US)


Learned = tuple[str, str, bool]  # (transaction id, kind, is_fraud)


def _feed(state: TrainingState, records: Iterable[Record]) -> list[Learned]:
    """What the trainer's loop does with each decoded record, learning what the state says."""
    learned: list[Learned] = []
    for r in records:
        state.read(r.topic, r.partition, r.offset)
        out: list[Joined | None]
        if r.topic == SCORES:
            out = [state.add_score(r.tid, b"", 0.0, r.partition, r.offset, r.event_us)]
            out += state.mature(0.0)
        else:
            out = [state.add_label(r.tid, r.is_fraud, 0.0, r.partition, r.offset)]
        for joined in out:
            if joined is None or state.already_learned(joined):
                continue
            if joined.kind == "late" and not joined.is_fraud:
                continue  # confirms a matured transaction: nothing to learn
            learned.append((joined.transaction_id, joined.kind, joined.is_fraud))
            state.learned()
    return learned


def _stream(n: int, seed: int, window_s: int) -> list[Record]:
    """Scores in event-time order on two partitions; labels for some of them, some within
    the maturation window and some after it, on two partitions; in arrival order."""
    rng = random.Random(seed)
    arrivals: list[tuple[float, str, int, str, bool, int]] = []
    for i in range(n):
        event_s = 1_000 + i + rng.random()
        tid = f"t{i}"
        arrivals.append((event_s, SCORES, i % 2, tid, False, round(event_s * S)))
        if rng.random() < 0.5:
            delay = rng.uniform(-2, 2 * window_s)  # a label may even come before its score
            arrivals.append((event_s + delay, LABELS, rng.randrange(2), tid, rng.random() < 0.4, 0))
    arrivals.sort()
    next_offset: Counter[tuple[str, int]] = Counter()
    records = []
    for _at, topic, partition, tid, is_fraud, event_us in arrivals:
        offset = next_offset[(topic, partition)]
        next_offset[(topic, partition)] += 1
        records.append(Record(topic, partition, offset, tid, is_fraud, event_us))
    return records


def _restart(
    before: TrainingState, records: list[Record], maturation_s: float
) -> tuple[TrainingState, list[Record]]:
    """A new state resumed from `before`'s snapshot, and the records it reads: each partition
    from its resume offset on, in arrival order."""
    resume, processed = before.offsets()
    after = _state(maturation_s, join_buffer_size=1000)
    after.resume_from(processed, resume, before.watermark_us)
    rest = [r for r in records if r.offset >= resume.get(r.topic, {}).get(str(r.partition), 0)]
    return after, rest


def _assert_once(learned: list[Learned]) -> None:
    """Each transaction is learned once, or matured then learned once more as a late fraud."""
    by_tid: dict[str, list[str]] = {}
    for tid, kind, _fraud in learned:
        by_tid.setdefault(tid, []).append(kind)
    for tid, kinds in by_tid.items():
        assert kinds in (["label"], ["matured"], ["matured", "late"]), (tid, kinds)


# -- join and resume offsets ------------------------------------------------------------------


def test_a_score_and_its_label_join_in_either_order_and_are_learned_once() -> None:
    state = _state()
    learned = _feed(
        state,
        [
            Record(LABELS, 0, 0, "a", is_fraud=True),
            Record(SCORES, 0, 0, "a"),
            Record(SCORES, 0, 1, "b"),
            Record(LABELS, 0, 1, "b"),
            Record(LABELS, 0, 2, "b", is_fraud=True),  # contradicts the label learned
            Record(SCORES, 0, 2, "a"),  # re-scored after a scorer crash
        ],
    )
    assert learned == [("a", "label", True), ("b", "label", False)]
    assert state.since_snapshot == 2


def test_resume_offsets_start_at_the_oldest_record_still_waiting_for_its_other_half() -> None:
    state = _state()
    _feed(
        state,
        [
            Record(SCORES, 0, 0, "a"),
            Record(SCORES, 0, 1, "b"),  # never labelled: waits in the buffer
            Record(LABELS, 1, 0, "a"),
            Record(LABELS, 1, 1, "c"),  # no score yet: waits too
            Record(SCORES, 1, 0, "d"),
            Record(LABELS, 0, 0, "d"),
        ],
    )
    resume, processed = state.offsets()
    assert processed == {SCORES: {"0": 2, "1": 1}, LABELS: {"1": 2, "0": 1}}
    assert resume == {SCORES: {"0": 1, "1": 1}, LABELS: {"1": 1, "0": 1}}


def test_partitions_not_read_since_the_restart_keep_their_resume_offsets() -> None:
    state = _state()
    state.resume_from({SCORES: {"0": 7, "1": 9}}, {SCORES: {"0": 5, "1": 9}})
    assert state.resume_offset(SCORES, 0) == 5 and state.resume_offset(LABELS, 0) is None
    assert state.catching_up()  # partition 0 is re-read from 5 up to 7
    _feed(state, [Record(SCORES, 0, 5, "x"), Record(SCORES, 0, 6, "y")])
    assert not state.catching_up()
    resume, processed = state.offsets()
    assert processed == {SCORES: {"0": 7, "1": 9}}
    assert resume == {SCORES: {"0": 5, "1": 9}}  # x and y wait for their labels


def test_a_pair_read_before_the_restart_is_not_learned_again() -> None:
    state = _state()
    state.resume_from({SCORES: {"0": 1}, LABELS: {"0": 1}}, {SCORES: {"0": 0}, LABELS: {"0": 0}})
    learned = _feed(
        state,
        [
            Record(SCORES, 0, 0, "a"),
            Record(LABELS, 0, 0, "a", is_fraud=True),  # both halves below processed
            Record(SCORES, 0, 1, "b"),
            Record(LABELS, 0, 1, "b", is_fraud=True),
        ],
    )
    assert learned == [("b", "label", True)]


# -- maturation and the watermark ---------------------------------------------------------------


def test_an_unlabelled_score_matures_when_the_watermark_passes_its_window() -> None:
    state = _state(maturation_s=10)
    learned = _feed(
        state,
        [
            Record(SCORES, 0, 0, "a", event_us=100 * S),
            Record(SCORES, 0, 1, "b", event_us=105 * S),
            Record(LABELS, 0, 0, "b", is_fraud=True),
            Record(SCORES, 0, 2, "c", event_us=110 * S),  # a's window ends at 110
        ],
    )
    assert learned == [("b", "label", True), ("a", "matured", False)]
    assert state.watermark_us == 110 * S
    # Both halves of remembered transactions stay readable after a restart.
    resume, _processed = state.offsets()
    assert resume == {SCORES: {"0": 0}, LABELS: {"0": 0}}


def test_an_event_time_far_in_the_future_does_not_move_the_watermark() -> None:
    state = _state(maturation_s=10)
    _feed(state, [Record(SCORES, 0, 0, "a", event_us=NOW_US - 3600 * S)])
    assert state.watermark_us == NOW_US - 3600 * S
    broken = NOW_US + 2 * 24 * 3600 * S  # two days ahead of the wall clock
    learned = _feed(state, [Record(SCORES, 0, 1, "b", event_us=broken)])
    assert state.watermark_us == NOW_US - 3600 * S and learned == []


def test_after_a_restart_nothing_matures_past_the_stored_watermark_until_labels_are_reread() -> (
    None
):
    state = _state(maturation_s=10)
    # The first run had read labels up to offset 3, and matured scores up to t=200 s.
    state.resume_from({LABELS: {"0": 3}}, {LABELS: {"0": 0}}, watermark_us=200 * S)
    learned = _feed(
        state,
        [
            Record(SCORES, 0, 0, "a", event_us=195 * S),
            Record(SCORES, 0, 1, "b", event_us=300 * S),  # far past a's window
        ],
    )
    assert state.maturation_watermark() == 200 * S and learned == []
    learned = _feed(
        state,
        [
            Record(LABELS, 0, 0, "x"),
            Record(LABELS, 0, 1, "y"),
            Record(LABELS, 0, 2, "a", is_fraud=True),  # a's label, re-read: joins, not late
        ],
    )
    assert learned == [("a", "label", True)]
    assert state.maturation_watermark() == 300 * S


def test_a_score_matured_before_the_restart_is_not_matured_again() -> None:
    state = _state(maturation_s=10)
    state.resume_from({SCORES: {"0": 1}}, {SCORES: {"0": 0}}, watermark_us=200 * S)
    learned = _feed(
        state,
        [
            Record(SCORES, 0, 0, "a", event_us=100 * S),  # matured in the first run
            Record(SCORES, 0, 1, "b", event_us=250 * S),
            Record(LABELS, 0, 0, "a", is_fraud=True),  # a late fraud label: learned once
        ],
    )
    assert learned == [("a", "late", True)]


# -- exactly once across restarts ----------------------------------------------------------------


@pytest.mark.parametrize("maturation_s", [0.0, 10.0])
def test_a_restart_at_any_record_learns_what_an_uninterrupted_run_learns(
    maturation_s: float,
) -> None:
    records = _stream(80, seed=3, window_s=10)
    whole = _feed(_state(maturation_s, join_buffer_size=1000), records)
    assert {kind for _t, kind, _f in whole} >= (
        {"label", "matured", "late"} if maturation_s else {"label"}
    )
    _assert_once(whole)
    for cut in range(len(records) + 1):
        first = _state(maturation_s, join_buffer_size=1000)
        before = _feed(first, records[:cut])
        second, rest = _restart(first, records, maturation_s)
        after = _feed(second, rest)
        assert before + after == whole, f"restart after record {cut}"


@pytest.mark.parametrize("first_topic", [SCORES, LABELS])
def test_a_restart_re_reading_one_topic_before_the_other_learns_each_label_once(
    first_topic: str,
) -> None:
    records = _stream(80, seed=11, window_s=10)
    for cut in range(0, len(records) + 1, 3):
        first = _state(10.0, join_buffer_size=1000)
        before = _feed(first, records[:cut])
        second, rest = _restart(first, records, 10.0)
        # Fetches may hand back one topic's backlog before the other's.
        rest.sort(key=lambda r: r.topic != first_topic)
        learned = before + _feed(second, rest)
        _assert_once(learned)
        labelled = {t for t, kind, _f in learned if kind in ("label", "late")}
        assert labelled >= {t for t, kind, _f in before if kind == "label"}


# -- snapshot timing -----------------------------------------------------------------------------


def test_a_snapshot_is_due_after_enough_labels_or_enough_time_with_something_learned() -> None:
    clock = Clock()
    state = _state(clock=clock, snapshot_every_labels=3, snapshot_every_s=5.0)
    clock.now = 100.0
    assert not state.snapshot_due()  # nothing learned: never due
    _feed(state, [Record(SCORES, 0, i, f"t{i}") for i in range(2)])
    _feed(state, [Record(LABELS, 0, i, f"t{i}") for i in range(2)])
    assert state.snapshot_due()  # 2 learned, 100 s since the start
    state.snapshot_taken()
    _feed(state, [Record(SCORES, 0, 2, "t2"), Record(LABELS, 0, 2, "t2")])
    clock.now = 104.9
    assert not state.snapshot_due()
    clock.now = 105.0
    assert state.snapshot_due()
    state.snapshot_taken()
    _feed(state, [Record(SCORES, 0, 3 + i, f"u{i}") for i in range(3)])
    _feed(state, [Record(LABELS, 0, 3 + i, f"u{i}") for i in range(3)])
    assert state.since_snapshot == 3 and state.snapshot_due()  # the label count, at once
    state.snapshot_taken()
    assert not state.snapshot_due()
    state.snapshot_now()  # an adopted rollback: published at the next turn
    assert state.snapshot_due()
