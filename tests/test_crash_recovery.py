"""Crash recovery over a real broker: SIGKILL a `fraudstream score` / `fraudstream train`
process mid-stream, restart it, and check the guarantees of README "Guarantees":

- scores are at-least-once: no transaction is lost, duplicates are bounded;
- each label is learned once: the model after kill -9 + restart equals, to float tolerance,
  the model of an uninterrupted run over the same input.
"""

from __future__ import annotations

import random
import re
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Message, Producer

from core.snapshot import Snapshot, decode_snapshot
from infra.config import Settings
from infra.metrics import Metrics
from producer.run import ProduceOptions, ProduceReport, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, log_match, read_topic, topic_reader, wait_for
from tests.records import score_record, synthetic_features

pytestmark = pytest.mark.integration


# -- helpers ---------------------------------------------------------------------------------


class TopicTail:
    """Reads every partition of a topic from the beginning, without joining a group
    (`read_topic` subscribes, and each group join costs seconds: too slow for polling)."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self.topic = topic
        self.consumer = topic_reader(settings, topic)
        self.messages: list[Message] = []

    def drain(self, timeout_s: float = 0.5) -> list[Message]:
        """Read what is there now; returns the new messages (also kept in `messages`)."""
        new: list[Message] = []
        while True:
            batch = self.consumer.consume(10000, timeout_s)
            new.extend(m for m in batch if m.error() is None)
            if not batch:
                break
            timeout_s = 0.1
        self.messages.extend(new)
        return new

    def read_count(self, timeout_s: float = 0.05) -> int:
        """One consume call (not a drain: a busy topic would keep it looping); all read so far."""
        self.messages.extend(
            m for m in self.consumer.consume(10000, timeout_s) if m.error() is None
        )
        return len(self.messages)

    def close(self) -> None:
        self.consumer.close()


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _tid(msg: Message) -> str:
    return orjson.loads(msg.value())["transaction_id"]


# -- 1. scorer: at-least-once across a SIGKILL ------------------------------------------------


def test_scorer_killed_mid_stream_restarts_without_gaps(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    env = settings_env(settings)
    n = 30_000
    log1, log2 = tmp_path / "score-1.log", tmp_path / "score-2.log"
    scores = TopicTail(settings, settings.topics.scores)
    report: list[ProduceReport] = []
    producing = threading.Thread(
        target=lambda: report.append(
            run_producer(
                settings,
                ProduceOptions(rate=20_000, count=n, seed=11, label_coverage=0.0),
                Metrics(),
                threading.Event(),
            )
        ),
        daemon=True,
    )
    try:
        with fraudstream_process(["score", "--metrics-port", "0"], env, log1) as first:
            # Produce once the scorer owns the partitions, so it is mid-stream when killed.
            pattern = rf"assigned {re.escape(settings.topics.transactions)}\["
            wait_for("scorer assignment", lambda: log_match(log1, pattern), 60, {log1: first})
            producing.start()
            # Count records read, not high watermarks: Tansu reports watermarks below the
            # number of records actually in the partition.
            wait_for(
                "first scores",
                lambda: scores.read_count() >= 10_000,
                60,
                {log1: first},
                interval_s=0.0,
            )
            first.kill()  # SIGKILL: no flush, no final commit
            first.wait(10)
        assert first.returncode == -9
        producing.join(60)
        assert report and report[0].transactions == n

        scores.drain()
        before_restart = {_tid(m) for m in scores.messages}
        # The kill really was mid-stream: some but not all transactions had been scored.
        assert 0 < len(before_restart) < n, len(before_restart)

        produced = read_topic(settings, settings.topics.transactions, lambda m: len(m) >= n, 60)
        produced_ids = {_tid(m) for m in produced}
        assert len(produced) == len(produced_ids) == n

        with fraudstream_process(["score", "--metrics-port", "0"], env, log2) as second:

            def all_scored() -> bool:
                scores.drain(0.2)
                return produced_ids <= {_tid(m) for m in scores.messages}

            wait_for("every transaction scored", all_scored, 90, {log2: second}, 0.2)
        assert second.returncode == 0, log2.read_text()[-3000:]
    finally:
        scores.close()

    ids = [_tid(m) for m in scores.messages]
    missing = produced_ids - set(ids)
    assert not missing, f"{len(missing)} transactions never scored, e.g. {sorted(missing)[:5]}"
    assert set(ids) == produced_ids, "scores for transactions that were never produced"
    counts = Counter(ids)
    duplicates = len(ids) - len(counts)
    print(
        f"\nscorer crash: {n} produced, {len(before_restart)} scored before SIGKILL, "
        f"{len(ids)} scores, {duplicates} duplicates "
        f"(max {max(counts.values())} copies of one transaction)"
    )
    # At-least-once: repeats come only from records the killed scorer handled after its last
    # commit, each at most once per crash (one crash here).
    assert duplicates <= n
    assert max(counts.values()) <= 2
    assert {tid for tid, c in counts.items() if c > 1} <= before_restart


# -- 2. trainer: each label learned once across a SIGKILL -------------------------------------

N_TX = 4000
SNAPSHOT_EVERY_LABELS = 200
# Half 1 holds the scores of transactions [0, SCORES_SPLIT) and the labels of
# [0, LABELS_SPLIT): at the kill, scores [LABELS_SPLIT, SCORES_SPLIT) wait in the join buffer
# for labels that only come after the restart.
SCORES_SPLIT, LABELS_SPLIT = 2000, 1800
CHUNK = 100


def _score_json(tid: str, features: dict[str, float]) -> bytes:
    return orjson.dumps(score_record(tid, features, card_id=f"card-{tid}"))


def _label_json(tid: str, is_fraud: bool) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": tid,
            "is_fraud": is_fraud,
            "labeled_at": "2026-11-22T13:00:00Z",
            "source": "investigation",
        }
    )


def _synthetic_stream(seed: int) -> list[dict[str, Any]]:
    """Per transaction index: its Score (or None: a label whose score never comes) and its
    Label (or None: a score never labelled). Deterministic from the seed."""
    rng = random.Random(seed)
    out = []
    for i in range(N_TX):
        tid = f"tx-{i:05d}"
        kind = rng.random()
        has_score, has_label = kind >= 0.05, kind < 0.05 or kind >= 0.20
        fraud = rng.random() < 0.1
        features = synthetic_features(rng, fraud)
        out.append(
            {
                "tid": tid,
                "score": _score_json(tid, features) if has_score else None,
                "label": _label_json(tid, fraud) if has_label else None,
            }
        )
    return out


def _publish(
    settings: Settings,
    stream: list[dict[str, Any]],
    scores: tuple[int, int],
    labels: tuple[int, int],
) -> None:
    """Scores of indexes in `scores` and labels of indexes in `labels`, each topic in index
    order; per chunk of indexes, labels go first in every other chunk (labels before scores)."""
    producer = Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True})
    topics = settings.topics
    for start in range(min(scores[0], labels[0]), max(scores[1], labels[1]), CHUNK):
        chunk = range(start, start + CHUNK)
        sides = [(topics.scores, "score", scores), (topics.labels, "label", labels)]
        if (start // CHUNK) % 2:
            sides.reverse()
        for topic, side, (lo, hi) in sides:
            for i in chunk:
                value = stream[i][side]
                if lo <= i < hi and value is not None:
                    producer.produce(topic, value, stream[i]["tid"].encode())
            assert producer.flush(30) == 0


def _joined(stream: list[dict[str, Any]], scores_hi: int, labels_hi: int) -> int:
    return sum(
        1
        for i, r in enumerate(stream)
        if r["score"] is not None and r["label"] is not None and i < scores_hi and i < labels_hi
    )


def _trainer_env(
    settings: Settings, snapshot_every_s: float, batch_size: int = 1
) -> dict[str, str]:
    env = settings_env(settings)
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_LABELS"] = str(SNAPSHOT_EVERY_LABELS)
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S"] = str(snapshot_every_s)
    # Batch size 1, one record per loop turn: a snapshot falls exactly every
    # SNAPSHOT_EVERY_LABELS labels, so the killed trainer surely holds learned but
    # unsnapshotted labels (see below).
    env["FRAUDSTREAM_TRAINER__BATCH_SIZE"] = str(batch_size)
    return env


def _snapshots(tail: TopicTail) -> list[Snapshot]:
    tail.drain(0.2)
    return [decode_snapshot(m.value()) for m in tail.messages]


def _train_until(
    settings: Settings, env: dict[str, str], log: Path, expected_learned: int, timeout_s: float
) -> Snapshot:
    """Run a trainer until a snapshot has `expected_learned` labels, stop it with SIGTERM,
    and return the newest snapshot on the topic."""
    tail = TopicTail(settings, settings.topics.model_updates)
    try:
        args = ["train", "--no-mlflow", "--metrics-port", "0"]
        with fraudstream_process(args, env, log) as proc:
            wait_for(
                f"a snapshot with {expected_learned} labels learned",
                lambda: any(s.labels_learned >= expected_learned for s in _snapshots(tail)),
                timeout_s,
                {log: proc},
                0.2,
            )
        assert proc.returncode == 0, log.read_text()[-3000:]
        snaps = _snapshots(tail)
    finally:
        tail.close()
    assert [s.version for s in snaps] == list(range(1, len(snaps) + 1))
    _assert_processed_never_goes_back(snaps)
    # Never more than once: no snapshot, not even the final one, counts extra labels.
    assert max(s.labels_learned for s in snaps) == expected_learned
    return snaps[-1]


def _assert_processed_never_goes_back(snaps: list[Snapshot]) -> None:
    """What a snapshot says was processed stays processed in every later snapshot."""
    for older, newer in zip(snaps, snaps[1:], strict=False):
        for topic, parts in older.processed_offsets.items():
            for p, offset in parts.items():
                assert newer.processed_offsets[topic][p] >= offset, (
                    f"v{newer.version} {topic}[{p}] processed {newer.processed_offsets[topic][p]}"
                    f" < v{older.version}'s {offset}"
                )


def _assert_same_model(a: Any, b: Any) -> None:
    la, lb = a["logreg"], b["logreg"]
    sa, sb = a["scale"], b["scale"]
    assert set(la.weights) == set(lb.weights)
    for name in la.weights:
        assert la.weights[name] == pytest.approx(lb.weights[name], abs=1e-9, rel=0), name
    assert la.intercept == pytest.approx(lb.intercept, abs=1e-9, rel=0)
    assert set(sa.means) == set(sb.means) and set(sa.vars) == set(sb.vars)
    for name in sa.means:
        assert sa.means[name] == pytest.approx(sb.means[name], abs=1e-9, rel=0), name
        assert sa.vars[name] == pytest.approx(sb.vars[name], abs=1e-9, rel=0), name
    assert dict(sa.counts) == dict(sb.counts)


def test_trainer_killed_and_restarted_learns_each_label_once(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    # SGD depends on the order labels are learned in, so both runs must learn in the same
    # order. With one partition per topic the trainer reads each topic in offset order, but
    # how its fetches interleave the scores and labels topics is up to librdkafka and timing.
    # The input makes the join order independent of that interleaving: both topics hold
    # their records in the same transaction-index order, so pair i joins when the later of
    # its two halves is read, and that moment grows strictly with i whatever the interleaving
    # (each topic is read in order). Hence pairs are always learned in index order, in
    # the uninterrupted run, and in the killed run before the kill and after the restart.
    # Labels without scores and scores without labels sit in the join buffer, so the
    # snapshot's resume offsets trail its processed offsets and the restart re-reads records.
    stream = _synthetic_stream(seed=20261122)
    joined_half1 = _joined(stream, SCORES_SPLIT, LABELS_SPLIT)
    joined_total = _joined(stream, N_TX, N_TX)
    # Test design: the kill must leave labels that were learned but never snapshotted.
    assert joined_half1 % SNAPSHOT_EVERY_LABELS != 0, joined_half1
    last_snapshot_before_kill = joined_half1 // SNAPSHOT_EVERY_LABELS * SNAPSHOT_EVERY_LABELS

    # A: half of the input, SIGKILL mid-way, the rest, restart.
    a = make_settings(partitions=1)
    log_a1, log_a2 = tmp_path / "train-a1.log", tmp_path / "train-a2.log"
    tail = TopicTail(a, a.topics.model_updates)
    try:
        args = ["train", "--no-mlflow", "--metrics-port", "0"]
        # No time-based snapshots: only every SNAPSHOT_EVERY_LABELS labels.
        with fraudstream_process(args, _trainer_env(a, 3600.0), log_a1) as first:
            _publish(a, stream, (0, SCORES_SPLIT), (0, LABELS_SPLIT))
            match = wait_for(
                "metrics port",
                lambda: log_match(log_a1, r"metrics on http://127\.0\.0\.1:(\d+)/metrics"),
                30,
                {log_a1: first},
            )
            port = int(match.group(1))
            learned = "fraudstream_labels_learned_total"
            wait_for(
                f"{joined_half1} labels learned",
                lambda: _metric(port, learned) >= joined_half1,
                60,
                {log_a1: first},
                0.1,
            )
            wait_for(
                f"snapshot at {last_snapshot_before_kill} labels",
                lambda: any(
                    s.labels_learned == last_snapshot_before_kill for s in _snapshots(tail)
                ),
                30,
                {log_a1: first},
            )
            assert _metric(port, learned) == joined_half1
            first.kill()  # SIGKILL: no final snapshot
            first.wait(10)
        assert first.returncode == -9
        before_kill = _snapshots(tail)
    finally:
        tail.close()
    last = before_kill[-1]
    assert len(before_kill) == joined_half1 // SNAPSHOT_EVERY_LABELS
    # The kill was mid-way: labels learned after the last snapshot are lost with the process.
    assert last.labels_learned == last_snapshot_before_kill < joined_half1
    # ...and the restart must re-read records to rebuild the join buffer, on both topics.
    for topic in (a.topics.scores, a.topics.labels):
        assert last.resume_offsets[topic]["0"] < last.processed_offsets[topic]["0"], topic

    _publish(a, stream, (SCORES_SPLIT, N_TX), (LABELS_SPLIT, N_TX))
    final_a = _train_until(a, _trainer_env(a, 0.5), log_a2, joined_total, 60)
    assert "resumed from snapshot v" in log_a2.read_text()

    # B: the same input, one uninterrupted trainer.
    b = make_settings(partitions=1)
    _publish(b, stream, (0, N_TX), (0, N_TX))
    final_b = _train_until(b, _trainer_env(b, 0.5), tmp_path / "train-b.log", joined_total, 60)

    assert final_a.labels_learned == final_b.labels_learned == joined_total
    _assert_same_model(final_a.load_model(), final_b.load_model())
    print(
        f"\ntrainer crash: {joined_half1} labels learned before SIGKILL, last snapshot at "
        f"{last.labels_learned}; {joined_total} learned in both runs; models agree"
    )


def test_trainer_killed_twice_while_catching_up_learns_each_label_once(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    """A restarted trainer re-reads from the resume offsets. A snapshot it takes before
    reaching the processed offsets of the snapshot it resumed from must not record processed
    offsets below those: after a second crash, pairs learned before the first one would look
    new and be learned again. (Before the fix in `Trainer.snapshot`, S2 below recorded scores
    processed up to 200 instead of 10001, and run 3 learned A a second time: 253 labels.)"""
    settings = make_settings(partitions=1)
    topics = settings.topics
    filler = 10_000
    producer = Producer({"bootstrap.servers": settings.bootstrap, "enable.idempotence": True})

    def send(topic: str, value: bytes) -> None:
        producer.produce(topic, value)
        producer.poll(0)

    feats = {"amount": 1.0, "log_amount": 0.5}
    # scores: f0 .. f{filler-1} (unlabelled for now), then A; labels: an orphan (its score
    # never comes: it pins the labels' resume offset at 0), then A's label.
    for i in range(filler):
        send(topics.scores, _score_json(f"f{i}", {**feats, "amount": float(i % 97)}))
    send(topics.scores, _score_json("A", feats))
    send(topics.labels, _label_json("orphan", False))
    send(topics.labels, _label_json("A", True))
    assert producer.flush(30) == 0

    tail = TopicTail(settings, topics.model_updates)
    args = ["train", "--no-mlflow", "--metrics-port", "0"]
    logs = [tmp_path / f"train-{k}.log" for k in (1, 2, 3)]
    try:
        # Run 1 learns A; snapshot S1: processed scores filler+1, labels 2; resume 0 and 0.
        with fraudstream_process(args, _trainer_env(settings, 0.5, 5000), logs[0]) as run1:
            wait_for(
                "snapshot S1",
                lambda: any(s.labels_learned == 1 for s in _snapshots(tail)),
                60,
                {logs[0]: run1},
                0.1,
            )
            run1.kill()
            run1.wait(10)
        s1 = _snapshots(tail)[-1]
        assert s1.processed_offsets[topics.scores]["0"] == filler + 1
        assert s1.resume_offsets[topics.scores]["0"] == 0

        # Labels for f0 .. f249. Run 2 re-reads scores from 0 and labels from 0 and learns
        # them while it catches up to offset filler+1 of the scores; then SIGKILL.
        k = 250
        for i in range(k):
            send(topics.labels, _label_json(f"f{i}", i % 10 == 0))
        assert producer.flush(30) == 0
        with fraudstream_process(args, _trainer_env(settings, 3600.0, 1), logs[1]) as run2:
            match = wait_for(
                "metrics port",
                lambda: log_match(logs[1], r"metrics on http://127\.0\.0\.1:(\d+)/metrics"),
                30,
                {logs[1]: run2},
            )
            port = int(match.group(1))
            wait_for(
                f"{k} labels learned and a snapshot",
                lambda: (
                    _metric(port, "fraudstream_labels_learned_total") >= k
                    and len(_snapshots(tail)) >= 2
                ),
                60,
                {logs[1]: run2},
                0.1,
            )
            run2.kill()
            run2.wait(10)
        s2 = _snapshots(tail)[-1]
        print(f"\nS2 v{s2.version}: {s2.labels_learned} learned, processed {s2.processed_offsets}")
        _assert_processed_never_goes_back([s1, s2])
    finally:
        tail.close()

    # Run 3: one more pair B, after everything else; every label is learned once: 1 + k + 1.
    send(topics.scores, _score_json("B", feats))
    send(topics.labels, _label_json("B", False))
    assert producer.flush(30) == 0
    final = _train_until(settings, _trainer_env(settings, 0.5, 5000), logs[2], k + 2, 60)
    assert final.labels_learned == k + 2
