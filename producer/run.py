"""The producer loop: synthetic transactions at a steady rate, and their labels after a delay.

It also plays the investigations team: each transaction's true label is published to
`labels` `label_delay_s` after the transaction, for a `label_coverage` share of them.
"""

from __future__ import annotations

import heapq
import logging
import random
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson

from infra.config import Settings
from infra.kafka import make_producer, produce_waiting
from infra.metrics import Metrics
from producer.generator import TransactionGenerator

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProduceOptions:
    rate: float = 1000.0
    count: int | None = None
    duration_s: float | None = None
    seed: int = 42
    fraud_rate: float = 0.01
    label_delay_s: float = 5.0
    label_coverage: float = 1.0
    # After the last transaction, keep going until every due label is sent.
    wait_for_labels: bool = True


@dataclass
class ProduceReport:
    transactions: int = 0
    frauds: int = 0
    labels: int = 0


def _iso(ts: datetime) -> str:
    return ts.isoformat().replace("+00:00", "Z")


def run_producer(
    settings: Settings,
    options: ProduceOptions,
    metrics: Metrics | None = None,
    stop: threading.Event | None = None,
) -> ProduceReport:
    stop = stop or threading.Event()
    metrics = metrics or Metrics()
    generator = TransactionGenerator(seed=options.seed, fraud_rate=options.fraud_rate)
    coverage_rng = random.Random(options.seed + 1)
    producer = make_producer(settings, "producer")
    topics = settings.topics
    report = ProduceReport()
    pending_labels: list[tuple[float, int, bytes, bytes]] = []
    start = time.monotonic()
    end = start + options.duration_s if options.duration_s is not None else float("inf")
    tick = 0.005

    def due_labels(now: float) -> None:
        while pending_labels and pending_labels[0][0] <= now:
            _, _, key, value = heapq.heappop(pending_labels)
            produce_waiting(producer, topics.labels, value, key)
            report.labels += 1
            metrics.labels_produced.inc()

    log.info(
        "producing %s transactions at %.0f/s (seed %d, fraud rate %.3f)",
        options.count if options.count is not None else "unbounded",
        options.rate,
        options.seed,
        options.fraud_rate,
    )
    try:
        while not stop.is_set():
            now = time.monotonic()
            if now >= end or (options.count is not None and report.transactions >= options.count):
                break
            target = int((now - start) * options.rate) + 1
            if options.count is not None:
                target = min(target, options.count)
            n = target - report.transactions
            if n > 0:
                event_time = datetime.now(UTC)
                for _ in range(n):
                    record, is_fraud = generator.next(event_time)
                    tid = record["transaction_id"]
                    produce_waiting(
                        producer,
                        topics.transactions,
                        orjson.dumps(record),
                        record["card_id"].encode(),
                    )
                    report.transactions += 1
                    report.frauds += is_fraud
                    if coverage_rng.random() < options.label_coverage:
                        label = {
                            "transaction_id": tid,
                            "is_fraud": is_fraud,
                            "labeled_at": _iso(
                                event_time + timedelta(seconds=options.label_delay_s)
                            ),
                            "source": "investigation",
                        }
                        heapq.heappush(
                            pending_labels,
                            (
                                now + options.label_delay_s,
                                report.transactions,
                                tid.encode(),
                                orjson.dumps(label),
                            ),
                        )
                metrics.transactions_produced.inc(n)
            due_labels(now)
            producer.poll(0)
            time.sleep(tick)
        # Labels still owed: honour their delay unless asked to stop.
        while pending_labels and options.wait_for_labels and not stop.is_set():
            due_labels(time.monotonic())
            producer.poll(0)
            time.sleep(tick)
    finally:
        remaining = producer.flush(30)
        if remaining:
            log.error("%d records not delivered before exit", remaining)
    log.info(
        "produced %d transactions (%d fraud), %d labels",
        report.transactions,
        report.frauds,
        report.labels,
    )
    return report
