"""Label-to-serving delay: from a label's arrival to a scorer holding a model that learned it.

A trainer process (`fraudstream train`, MLflow off) learns scores and labels offered at a
fixed rate; this process watches `model-updates` the way a scorer does (`ModelWatcher`, then
compiles the model as a scorer would). For every snapshot it sees, the delay is measured for
the newest label the snapshot learned: from when this process produced that label, and from
when the trainer read it (`Snapshot.last_label_at`).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np

from core.contracts import Transaction
from core.features import FeatureBuilder
from core.model_compiled import CompiledModel
from core.snapshot import Snapshot
from fraudstream.benchmark.common import measurement, percentile_ms, records, score_and_label
from infra.config import Settings, Topics
from infra.kafka import make_producer
from infra.model_updates import ModelWatcher

WARMUP = 200


def measure(
    settings: Settings, rate: float, duration_s: float, partitions: int, work_dir: Path
) -> dict[str, float]:
    """Label-to-serving delays (p50/p99/max ms) with labels offered at `rate` per second."""
    # No pre-trained model: the trainer starts from scratch, so a snapshot's labels_learned
    # counts this run's labels only.
    with measurement(settings, "fresh", partitions, trained_model=False, signs=True) as run:
        env = {**run.env, "FRAUDSTREAM_TRAINER__GROUP_ID": f"{run.group}-trainer"}
        run.spawn(
            ["fraudstream.cli", "train", "--no-mlflow", "--metrics-port", "0"],
            work_dir / "freshness-trainer.log",
            env,
        )
        return _delays(settings, run.topics, rate, duration_s)


def _delays(settings: Settings, topics: Topics, rate: float, duration_s: float) -> dict[str, float]:
    count = int(rate * duration_s) + WARMUP
    txs = [Transaction.model_validate(r) for r in records(count, seed=13)]
    features = FeatureBuilder().build(txs).dicts()
    seen: list[tuple[float, int, float | None]] = []
    lock = threading.Lock()
    s = settings.model_copy(update={"topics": topics})

    def on_snapshot(snapshot: Snapshot) -> None:
        CompiledModel.from_pipeline(snapshot.load_model(), snapshot.version)  # as a scorer
        with lock:
            seen.append((time.time(), snapshot.labels_learned, snapshot.last_label_at))

    watcher = ModelWatcher(s, on_snapshot).start()
    producer = make_producer(settings, "bench freshness load")
    sent_at: list[float] = []

    def send(i: int) -> None:
        score, label = score_and_label(txs[i], features[i], i % 100 == 0)
        key = txs[i].card_id.encode()
        producer.produce(topics.scores, score, key)
        producer.produce(topics.labels, label, key)
        sent_at.append(time.time())

    try:
        # Warm-up: until the trainer has joined and published a first snapshot.
        for i in range(WARMUP):
            send(i)
        producer.flush(10)
        deadline = time.time() + 60
        while not seen and time.time() < deadline:
            time.sleep(0.05)
        if not seen:
            raise RuntimeError("the trainer published no snapshot for the warm-up labels")
        start = time.time()
        end = start + duration_s
        while (now := time.time()) < end:
            due = min(int((now - start) * rate) + WARMUP, count) - len(sent_at)
            for _ in range(due):
                send(len(sent_at))
            producer.poll(0)
            time.sleep(0.002)
        producer.flush(10)
        # Wait for the snapshot that covers everything sent (at most 30 s).
        deadline = time.time() + 30
        while time.time() < deadline:
            with lock:
                if seen and seen[-1][1] >= len(sent_at):
                    break
            time.sleep(0.05)
    finally:
        watcher.stop()
    sent = np.array(sent_at)
    timed = [(t, n, at) for t, n, at in seen if n > WARMUP]
    from_sent = [t - sent[min(n, len(sent)) - 1] for t, n, _ in timed]
    from_read = [t - at for t, _, at in timed if at is not None]
    return {
        "offered_labels_per_s": rate,
        "labels_sent": float(len(sent_at)),
        "labels_learned": float(seen[-1][1]) if seen else 0.0,
        "snapshots_seen": float(len(timed)),
        "p50_ms": percentile_ms(from_sent, 50),
        "p99_ms": percentile_ms(from_sent, 99),
        "max_ms": percentile_ms(from_sent, 100),
        "from_trainer_read_p99_ms": percentile_ms(from_read, 99),
    }
