"""Labels as they really arrive: most transactions never get a label.

Unit tests of the maturation logic (trainer/join.py, trainer/maturation.py), then tests over a
real broker: a scorer and a trainer process with a short maturation window in stream time,
and a trainer killed with SIGKILL and restarted that still learns each transaction once.
"""

from __future__ import annotations

import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from core.snapshot import Snapshot
from infra.config import Settings, load_settings
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, wait_for
from tests.test_crash_recovery import TopicTail, _snapshots
from tests.test_monitoring_files import metrics_port, samples, scrape
from trainer.join import Joiner
from trainer.maturation import SlidingMin, event_time_us

S = 1_000_000  # microseconds per second


# -- unit: the joiner -------------------------------------------------------------------------


def _joiner(window_s: int = 10, size: int = 100) -> Joiner:
    return Joiner(max_size=size, ttl_s=5, maturation_us=window_s * S)


def test_unlabelled_score_matures_as_legitimate_once_in_stream_time() -> None:
    j = _joiner(window_s=10)
    assert j.add_score("a", b"A", 0.0, 0, 0, event_us=100 * S) is None
    assert j.add_score("b", b"B", 0.0, 0, 1, event_us=105 * S) is None
    assert j.mature(109 * S, 1.0) == []  # nothing due yet
    # Wall-clock TTL does not apply to scores while maturation is on: stream time rules.
    j.expire(1e9)
    assert len(j.scores) == 2
    matured = j.mature(110 * S, 2.0)  # a's window ends exactly at 110 s
    assert [(m.transaction_id, m.is_fraud, m.kind, m.label_at) for m in matured] == [
        ("a", False, "matured", None)
    ]
    assert matured[0].score_raw == b"A" and matured[0].score_at == (0, 0)
    assert j.mature(114 * S, 3.0) == []
    assert [m.transaction_id for m in j.mature(200 * S, 4.0)] == ["b"]
    assert j.mature(10_000 * S, 5.0) == [] and len(j.scores) == 0
    # A repeated score of a matured transaction is ignored, never matured again.
    assert j.add_score("a", b"A", 6.0, 0, 2, event_us=100 * S) is None
    assert j.mature(10_000 * S, 7.0) == [] and j.duplicate_scores == 1


def test_out_of_order_event_times_mature_by_event_time_not_arrival() -> None:
    j = _joiner(window_s=10)
    j.add_score("late-arriving", b"", 0.0, 0, 0, event_us=150 * S)
    j.add_score("old", b"", 0.0, 1, 0, event_us=100 * S)
    assert [m.transaction_id for m in j.mature(110 * S, 1.0)] == ["old"]
    assert [m.transaction_id for m in j.mature(160 * S, 1.0)] == ["late-arriving"]


def test_a_label_within_the_window_wins_and_nothing_matures() -> None:
    j = _joiner(window_s=10)
    j.add_score("a", b"A", 0.0, 0, 0, event_us=100 * S)
    joined = j.add_label("a", True, 1.0, 0, 7, time_us=103 * S)
    assert joined is not None and joined.kind == "label" and joined.is_fraud
    assert (joined.event_us, joined.label_us) == (100 * S, 103 * S)
    # Label first, then score: joins too.
    j.add_label("b", False, 1.0, 0, 8)
    assert j.add_score("b", b"B", 2.0, 0, 1, event_us=101 * S) is not None
    assert j.mature(1_000 * S, 3.0) == []


def test_a_label_after_maturation_is_a_late_label_once() -> None:
    j = _joiner(window_s=10)
    j.add_score("a", b"A", 0.0, 3, 42, event_us=100 * S)
    assert len(j.mature(110 * S, 1.0)) == 1
    late = j.add_label("a", True, 2.0, 1, 9, time_us=500 * S)
    assert late is not None and late.kind == "late" and late.is_fraud
    # The score left memory at maturation: the trainer re-reads it at score_at.
    assert late.score_raw is None and late.score_at == (3, 42) and late.label_at == (1, 9)
    assert late.event_us == 100 * S and late.label_us == 500 * S
    # The same fraud label again is a duplicate; a contradicting one a conflict.
    assert j.add_label("a", True, 3.0, 1, 10) is None
    assert j.add_label("a", False, 4.0, 1, 11) is None
    assert (j.duplicate_labels, j.conflicting_labels) == (1, 1)
    # A legitimate late label is handed back too (the trainer counts it as a confirmation).
    j.add_score("b", b"B", 0.0, 3, 43, event_us=100 * S)
    j.mature(110 * S, 1.0)
    confirmed = j.add_label("b", False, 5.0, 1, 12)
    assert confirmed is not None and confirmed.kind == "late" and not confirmed.is_fraud


def test_score_matured_before_a_restart_is_remembered_not_learned() -> None:
    j = _joiner(window_s=10)
    assert j.add_score("a", b"A", 0.0, 0, 5, event_us=100 * S, matured_before=True) is None
    assert len(j.scores) == 0 and j.mature(10_000 * S, 1.0) == []
    late = j.add_label("a", True, 2.0, 0, 1)
    assert late is not None and late.kind == "late" and late.score_at == (0, 5)
    # A label re-read before its matured-before score: joined as late, with the score at hand.
    j.add_label("b", True, 3.0, 0, 2)
    joined = j.add_score("b", b"B", 4.0, 0, 6, event_us=100 * S, matured_before=True)
    assert joined is not None and joined.kind == "late" and joined.score_raw == b"B"


def test_resume_pins_cover_both_halves_of_every_remembered_transaction() -> None:
    j = _joiner(window_s=10, size=3)
    j.add_score("a", b"", 0.0, 0, 10, event_us=100 * S)
    j.add_label("a", True, 0.0, 0, 50)  # joined: score 10, label 50
    j.add_score("b", b"", 0.0, 0, 11, event_us=101 * S)
    j.mature(111 * S, 0.0)  # b matured: score 11
    j.add_score("c", b"", 0.0, 0, 12, event_us=102 * S)
    j.add_label("c", False, 0.0, 0, 51)
    assert j.score_pins.mins() == {0: 10} and j.label_pins.mins() == {0: 50}
    j.add_score("d", b"", 0.0, 0, 13, event_us=103 * S)
    j.add_label("d", False, 0.0, 0, 52)  # memory holds 3: a is forgotten
    assert list(j.joined) == ["b", "c", "d"]
    assert j.score_pins.mins() == {0: 11} and j.label_pins.mins() == {0: 51}
    j.mature(1_000 * S, 0.0)
    assert j.forgotten_matured == 0


def test_full_buffer_drops_scores_before_they_mature_and_counts_them() -> None:
    j = _joiner(window_s=10, size=2)
    for i in range(3):
        j.add_score(f"s{i}", b"", 0.0, 0, i, event_us=(100 + i) * S)
    assert j.scores.evicted_full == 1
    assert [m.transaction_id for m in j.mature(1_000 * S, 0.0)] == ["s1", "s2"]


def test_the_maturation_heap_stays_bounded_when_scores_join() -> None:
    j = _joiner(window_s=10**6)
    for i in range(5000):
        j.add_score(f"t{i}", b"", 0.0, 0, i, event_us=i * S)
        j.add_label(f"t{i}", False, 0.0, 0, i)
        j.mature(i * S, 0.0)
    assert len(j._due) <= 2 * len(j.scores) + 1024


def test_sliding_min_follows_the_window() -> None:
    m = SlidingMin()
    for seq, offset in enumerate([5, 3, 8, 4], start=1):
        m.push(0, seq, offset)
    assert m.mins() == {0: 3}
    m.expire(0, 2)  # entries 1 and 2 (offsets 5 and 3) leave
    assert m.mins() == {0: 4}
    m.expire(0, 4)
    assert m.mins() == {}


def test_event_times_are_exact_integer_microseconds() -> None:
    assert event_time_us("1970-01-01T00:00:01Z") == S
    assert event_time_us("2026-11-22T12:00:00.000001+01:00") == (
        int(datetime(2026, 11, 22, 11, tzinfo=UTC).timestamp()) * S + 1
    )
    for bad in (None, 5, "yesterday", "2026-11-22T12:00:00"):  # naive: no zone
        assert event_time_us(bad) is None


def test_maturation_window_accepts_durations() -> None:
    assert load_settings(trainer={"maturation_s": "90d"}).trainer.maturation_s == 90 * 86400
    assert load_settings(trainer={"maturation_s": "36h"}).trainer.maturation_s == 36 * 3600
    assert load_settings(trainer={"maturation_s": 120}).trainer.maturation_s == 120
    assert load_settings().trainer.maturation_s == 0  # off by default
    with pytest.raises(ValueError, match="maturation_s"):
        load_settings(trainer={"maturation_s": "soon"})


# -- over a real broker -----------------------------------------------------------------------

pytest_integration = pytest.mark.integration
T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)


def _at(i: int) -> datetime:
    """Stream time of transaction i: one second apart, two days ago."""
    return T0 + timedelta(seconds=i)


def _iso(t: datetime) -> str:
    return t.isoformat().replace("+00:00", "Z")


def _metric(port: int, name: str, **labels: str) -> float:
    """A sample's value (0 when absent), or the sum over label values not given."""
    total = 0.0
    for (sample, lbls), value in samples(scrape(port)).items():
        if sample == name and all(dict(lbls).get(k) == v for k, v in labels.items()):
            total += value
    return total


def _label(tid: str, is_fraud: bool) -> bytes:
    return orjson.dumps({"transaction_id": tid, "is_fraud": is_fraud, "source": "investigation"})


def _send(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True})
    for key, value in records:
        producer.produce(topic, value, key)
    assert producer.flush(30) == 0


def _trainer_env(settings: Settings, window_s: float, **extra: object) -> dict[str, str]:
    env = settings_env(settings)
    env["FRAUDSTREAM_TRAINER__MATURATION_S"] = str(window_s)
    for key, value in extra.items():
        env[f"FRAUDSTREAM_TRAINER__{key.upper()}"] = str(value)
    return env


def _wait_metric(
    port: int,
    proc: subprocess.Popen[bytes],
    log: Path,
    name: str,
    expected: float,
    timeout_s: float = 60,
    **labels: str,
) -> None:
    wait_for(
        f"{name}{labels or ''} == {expected}",
        lambda: _metric(port, name, **labels) == expected,
        timeout_s,
        {log: proc},
        0.1,
    )


@pytest_integration
def test_scorer_and_trainer_learn_labels_matured_and_late_frauds(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """Transactions 0..399, one second apart in stream time, window 100 s: once the last is
    scored, 0..299 are past their window. A few get labels in time, two fraud labels come after
    maturation (honoured: the Score is re-read from the topic), one legitimate label after
    maturation confirms, one label never meets a score (an orphan)."""
    from producer.generator import TransactionGenerator

    settings = make_settings(partitions=1)
    topics = settings.topics
    generator = TransactionGenerator(seed=3)
    txs = [generator.next(_at(i))[0] for i in range(400)]
    tids = [str(tx["transaction_id"]) for tx in txs]

    def transactions(lo: int, hi: int) -> None:
        _send(
            settings,
            topics.transactions,
            [(str(tx["card_id"]).encode(), orjson.dumps(tx)) for tx in txs[lo:hi]],
        )

    def labels(pairs: list[tuple[int | str, bool]]) -> None:
        _send(
            settings,
            topics.labels,
            [
                ((t := tids[i] if isinstance(i, int) else i).encode(), _label(t, fraud))
                for i, fraud in pairs
            ],
        )

    score_log, train_log = tmp_path / "score.log", tmp_path / "train.log"
    env = _trainer_env(settings, 100, join_ttl_s=1, snapshot_every_s=0.5)
    learned = "fraudstream_labels_learned_total"
    tail = TopicTail(settings, topics.model_updates)
    try:
        with (
            fraudstream_process(
                ["train", "--no-mlflow", "--metrics-port", "0"], env, train_log
            ) as trainer,
            fraudstream_process(["score", "--metrics-port", "0"], env, score_log) as scorer,
        ):
            port = metrics_port(trainer, train_log)
            pattern = rf"assigned {re.escape(topics.transactions)}\["
            wait_for(
                "scorer assignment",
                lambda: re.search(pattern, score_log.read_text()),
                60,
                {score_log: scorer},
            )

            def wait(name: str, expected: float, **lbls: str) -> None:
                _wait_metric(port, trainer, train_log, name, expected, **lbls)

            # 0..49 scored: nothing is past its window yet; 7 labels join them in time.
            transactions(0, 50)
            wait("fraudstream_join_pending", 50, side="score")
            labels([(0, True), (10, True), (20, True), (30, True), (40, True)])
            labels([(45, False), (47, False)])
            wait(learned, 7)
            assert _metric(port, "fraudstream_matured_total") == 0
            # 50..399: the watermark reaches 399 s, so 0..299 mature; 7 of them had labels.
            transactions(50, 400)
            wait(learned, 7 + 293)
            assert _metric(port, "fraudstream_matured_total") == 293
            assert _metric(port, "fraudstream_join_pending", side="score") == 100
            # Labels for pending transactions join as usual.
            labels([(350, True), (360, False)])
            wait(learned, 302)
            # After maturation: two frauds honoured, one legitimate label confirms, a repeat
            # of a late fraud label is a duplicate, and a label for no transaction is an orphan.
            labels([(100, True), (200, True), (150, False), (100, True), ("ghost", True)])
            wait("fraudstream_late_labels_total", 2, outcome="honoured")
            wait(learned, 304)
            wait("fraudstream_late_labels_total", 1, outcome="confirmed")
            wait("fraudstream_join_ignored_total", 1, side="label", cause="duplicate")
            wait("fraudstream_join_evicted_total", 1, side="label", cause="expired")
            assert _metric(port, "fraudstream_late_labels_total", outcome="unmatched") == 0
            # Label lag: every label met with its transaction (9 in time, 2 late); their
            # records were written now, about two days after the transactions.
            assert _metric(port, "fraudstream_label_lag_seconds_count") == 11
            lag = _metric(port, "fraudstream_label_lag_seconds_sum") / 11
            assert 2 * 86400 - 600 < lag < 2 * 86400 + 600, lag
            # Coverage: 11 transactions had labels among the 302 resolved (293 matured).
            assert _metric(port, "fraudstream_label_coverage") == pytest.approx(11 / 302)
            assert _metric(port, learned) == 304
        assert trainer.returncode == 0, train_log.read_text()[-3000:]
        snap = _snapshots(tail)[-1]
    finally:
        tail.close()
    assert snap.labels_learned == 304
    counts = snap.label_counts
    assert counts["fraud"] + counts["legit"] == 304
    assert (counts["matured"], counts["late"], counts["fraud"]) == (293, 2, 8)
    # The snapshot carries the watermark: transaction 399's event time, exactly.
    assert counts["watermark_us"] == event_time_us(_iso(_at(399)))


# Restart: 2000 scores one second apart, window 300 s; labels for every 20th (fraud for every
# 40th), all published first so each is waiting when its score comes.
N_RESTART, WINDOW_RESTART = 2000, 300
LABELLED = [i for i in range(N_RESTART) if i % 20 == 0]
LATE = [1, 3, 5, 7, 9]  # unlabelled, matured early: fraud labels after maturation


def _restart_score(i: int) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": f"tx-{i:05d}",
            "card_id": f"card-{i % 50}",
            "score": 0.01,
            "flagged": False,
            "threshold": 0.5,
            "model_version": 0,
            "event_time": _iso(_at(i)),
            "scored_at": _iso(_at(i)),
            "features": {"amount": float(i % 97), "hour": float(i % 24), "x": 1.0},
        }
    )


def _expected_learned(scores_hi: int, late: int) -> int:
    """Explicit labels of the scores read + unlabelled scores past their window + late."""
    explicit = sum(1 for i in LABELLED if i < scores_hi)
    horizon = scores_hi - 1 - WINDOW_RESTART  # scores up to here are past their window
    matured = sum(1 for i in range(horizon + 1) if i % 20 != 0)
    return explicit + matured + late


def _lag(port: int, group: str) -> float:
    return _metric(port, "fraudstream_consumer_lag", group=group)


@pytest_integration
def test_trainer_killed_and_restarted_matures_each_transaction_once(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1)
    topics = settings.topics

    def scores(lo: int, hi: int) -> None:
        _send(
            settings,
            topics.scores,
            [(f"card-{i % 50}".encode(), _restart_score(i)) for i in range(lo, hi)],
        )

    def labels(pairs: list[tuple[int, bool]]) -> None:
        _send(
            settings,
            topics.labels,
            [(f"tx-{i:05d}".encode(), _label(f"tx-{i:05d}", fraud)) for i, fraud in pairs],
        )

    args = ["train", "--no-mlflow", "--metrics-port", "0"]
    learned = "fraudstream_labels_learned_total"
    every = 200
    # Run 1: snapshots only every 200 labels learned, one record per loop turn (as in
    # test_crash_recovery), so the kill leaves learned but unsnapshotted transactions.
    env1 = _trainer_env(
        settings, WINDOW_RESTART, snapshot_every_labels=every, snapshot_every_s=3600, batch_size=1
    )
    log1, log2 = tmp_path / "train-1.log", tmp_path / "train-2.log"
    e1 = _expected_learned(1000, 0)
    e2 = _expected_learned(1100, len(LATE))
    total = _expected_learned(N_RESTART, len(LATE))
    tail = TopicTail(settings, topics.model_updates)
    try:
        with fraudstream_process(args, env1, log1) as first:
            port = metrics_port(first, log1)
            labels([(i, i % 40 == 0) for i in LABELLED])
            _wait_metric(port, first, log1, "fraudstream_join_pending", 100, side="label")
            scores(0, 1000)
            _wait_metric(port, first, log1, learned, e1)
            labels([(i, True) for i in LATE])
            _wait_metric(port, first, log1, "fraudstream_late_labels_total", 5, outcome="honoured")
            _wait_metric(port, first, log1, learned, e1 + len(LATE))
            # More scores: a count-based snapshot now covers the late labels; then the kill.
            scores(1000, 1100)
            _wait_metric(port, first, log1, learned, e2)
            snap_at = e2 // every * every
            wait_for(
                f"a snapshot at >= {snap_at} labels",
                lambda: any(s.labels_learned >= snap_at for s in _snapshots(tail)),
                30,
                {log1: first},
            )
            first.kill()  # SIGKILL: no final snapshot
            first.wait(10)
        assert first.returncode == -9
        last = _snapshots(tail)[-1]
        assert e1 + len(LATE) <= last.labels_learned < e2, (last.labels_learned, e2)
        assert last.label_counts["late"] == len(LATE)
        # Remembered transactions are re-read after a restart, both topics from the start here.
        assert last.resume_offsets[topics.scores]["0"] == 0
        assert last.resume_offsets[topics.labels]["0"] == 0

        env2 = _trainer_env(settings, WINDOW_RESTART, snapshot_every_s=0.5)
        with fraudstream_process(args, env2, log2) as second:
            port = metrics_port(second, log2)
            group = settings.trainer.group_id
            # Caught up with both topics before the rest comes (see _wait_metric's callers).
            wait_for(
                "the restarted trainer to catch up",
                lambda: (
                    _metric(port, learned) >= e2 - last.labels_learned
                    and _metric(port, "fraudstream_consumer_lag", group=group, topic=topics.scores)
                    == 0
                    and _metric(port, "fraudstream_consumer_lag", group=group, topic=topics.labels)
                    == 0
                ),
                60,
                {log2: second},
                0.2,
            )
            # Exactly what was lost with the kill was learned again, nothing more.
            assert _metric(port, learned) == e2 - last.labels_learned
            scores(1100, N_RESTART)
            wait_for(
                f"a snapshot with {total} labels learned",
                lambda: any(s.labels_learned >= total for s in _snapshots(tail)),
                60,
                {log2: second},
                0.2,
            )
            # Late labels already learned before the snapshot were skipped when re-read.
            assert _metric(port, "fraudstream_late_labels_total") == 0
        assert second.returncode == 0, log2.read_text()[-3000:]
        snaps: list[Snapshot] = _snapshots(tail)
    finally:
        tail.close()
    assert "resumed from snapshot v" in log2.read_text()
    # Never more than once: no snapshot, not even the final one, counts more.
    assert max(s.labels_learned for s in snaps) == total
    final = snaps[-1]
    assert final.labels_learned == total
    assert final.label_counts["matured"] == total - len(LABELLED) - len(LATE)
    assert final.label_counts["late"] == len(LATE)
    print(
        f"\nmaturation restart: {e2} learned before SIGKILL, last snapshot at "
        f"{last.labels_learned}; {total} learned in all, as without the kill"
    )
