"""Trainer speed: labels joined and learned per second over pre-loaded scores and labels."""

from __future__ import annotations

import threading
import time

from core.contracts import Transaction
from core.features import FeatureBuilder
from fraudstream.benchmark.common import create_topics, records, score_and_label, uid
from infra.config import Settings, Topics
from infra.kafka import make_producer
from infra.metrics import Metrics
from trainer.run import Trainer


def labels_per_s(settings: Settings, n: int, partitions: int) -> float:
    run = uid()
    topics = Topics(
        transactions=f"tr-tx-{run}",
        scores=f"tr-scores-{run}",
        labels=f"tr-labels-{run}",
        model_updates=f"tr-models-{run}",
        transactions_dlq=f"tr-dlq-{run}",
        labels_dlq=f"tr-ldlq-{run}",
    )
    create_topics(settings, [topics.scores, topics.labels], partitions)
    create_topics(settings, [topics.model_updates, topics.labels_dlq], 1)
    txs = [Transaction.model_validate(r) for r in records(n, seed=5)]
    features = FeatureBuilder().build(txs).dicts()
    producer = make_producer(settings, "bench trainer loader")
    for i, (tx, x) in enumerate(zip(txs, features, strict=True)):
        score, label = score_and_label(tx, x, i % 100 == 0)
        key = tx.transaction_id.encode()
        producer.produce(topics.scores, score, key)
        producer.produce(topics.labels, label, key)
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(60)
    s = settings.model_copy(
        update={
            "topics": topics,
            "trainer": settings.trainer.model_copy(update={"group_id": f"tr-{run}"}),
        }
    )
    trainer = Trainer(s, Metrics())
    thread = threading.Thread(target=trainer.run, daemon=True)
    thread.start()
    # Polled coarsely: a thread waking every millisecond takes the GIL from the trainer. The
    # clock starts at the trainer's own first record, so the coarse polling costs no accuracy
    # at the start; at the end it adds at most one interval (0.5% at 4 s).
    while trainer.labels_learned < n:
        time.sleep(0.02)
    elapsed = time.perf_counter() - (trainer.first_record_at or time.perf_counter())
    trainer.stop()
    thread.join(60)
    return n / elapsed
