"""`fraudstream bench`: scorer throughput against the physical ceiling on the same machine.

The ceiling is a plain consume -> produce passthrough of the same records with the same client
settings (no parsing, no scoring, commit after delivery). The scorer is the real `Scorer`,
run in this process on the same pre-loaded topic. Each is timed from its first record to its
last output, so group-join time is excluded from both. Rounds alternate and medians are kept.
"""

from __future__ import annotations

import logging
import statistics
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from confluent_kafka import Consumer, KafkaError, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from infra.config import Settings, Topics
from infra.kafka import common_config, make_consumer, make_producer
from infra.metrics import Metrics
from producer.generator import TransactionGenerator
from scorer.run import Scorer

log = logging.getLogger(__name__)


@dataclass
class BenchResult:
    records: int
    partitions: int
    rounds: int
    passthrough_per_s: list[float] = field(default_factory=list)
    scorer_per_s: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return statistics.median(self.scorer_per_s) / statistics.median(self.passthrough_per_s)

    def as_dict(self) -> dict[str, object]:
        return {
            **asdict(self),
            "passthrough_median_per_s": statistics.median(self.passthrough_per_s),
            "scorer_median_per_s": statistics.median(self.scorer_per_s),
            "scorer_to_ceiling": self.ratio,
        }

    def render(self) -> str:
        d = self.as_dict()
        return "\n".join(
            [
                f"fraudstream bench: {self.records} records, {self.partitions} partitions, "
                f"{self.rounds} rounds (medians)",
                f"  passthrough ceiling  {d['passthrough_median_per_s']:>10,.0f} records/s  "
                f"{_fmt(self.passthrough_per_s)}",
                f"  scorer               {d['scorer_median_per_s']:>10,.0f} records/s  "
                f"{_fmt(self.scorer_per_s)}",
                f"  scorer / ceiling     {self.ratio:>10.0%}",
            ]
        )


def _fmt(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:,.0f}" for v in values) + "]"


def _create(settings: Settings, names: list[str], partitions: int) -> None:
    admin = AdminClient(common_config(settings))
    for fut in admin.create_topics([NewTopic(n, partitions, 1) for n in names]).values():
        fut.result()


def preload(settings: Settings, topic: str, n: int, seed: int = 7) -> None:
    generator = TransactionGenerator(seed=seed, fraud_rate=0.01)
    producer = make_producer(settings, "bench loader")
    t0 = datetime.now(UTC)
    for i in range(n):
        record, _ = generator.next(t0 + timedelta(milliseconds=i))
        while True:
            try:
                producer.produce(topic, orjson.dumps(record), record["card_id"].encode())
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10000 == 0:
            producer.poll(0)
    producer.flush(60)


def passthrough(settings: Settings, source: str, sink: str, n: int, batch: int) -> float:
    consumer: Consumer = make_consumer(settings, f"bench-pass-{uuid.uuid4().hex[:8]}", "bench")
    producer = make_producer(settings, "bench passthrough")
    consumer.subscribe([source])
    delivered = 0
    pending: list[tuple[int, dict[tuple[str, int], int]]] = []

    def on_delivery(err: KafkaError | None, _msg: object) -> None:
        nonlocal delivered
        if err is None:
            delivered += 1

    seen = 0
    start = 0.0
    try:
        while delivered < n:
            msgs = consumer.consume(batch, 0.02)
            if msgs and not start:
                start = time.perf_counter()
            positions: dict[tuple[str, int], int] = {}
            for msg in msgs:
                if msg.error() is not None:
                    continue
                seen += 1
                positions[(msg.topic(), msg.partition())] = msg.offset() + 1
                while True:
                    try:
                        producer.produce(sink, msg.value(), msg.key(), on_delivery=on_delivery)
                        break
                    except BufferError:
                        producer.poll(0.05)
            if positions:
                pending.append((seen, positions))
            producer.poll(0)
            # Same commit discipline as the scorer: only what has been delivered.
            while pending and pending[0][0] <= delivered:
                _, pos = pending.pop(0)
                offsets = [TopicPartition(t, p, o) for (t, p), o in pos.items()]
                consumer.commit(offsets=offsets, asynchronous=True)
        producer.flush(30)
        return n / (time.perf_counter() - start)
    finally:
        consumer.close()


def score(settings: Settings, source: str, sink: str, n: int, batch: int) -> float:
    topics = Topics(
        transactions=source,
        scores=sink,
        labels=f"{sink}-labels",
        model_updates=f"{sink}-models",
        transactions_dlq=f"{sink}-dlq",
        labels_dlq=f"{sink}-labels-dlq",
    )
    _create(settings, [topics.model_updates], 1)
    s = settings.model_copy(
        update={
            "topics": topics,
            "scorer": settings.scorer.model_copy(
                update={"group_id": f"bench-scorer-{uuid.uuid4().hex[:8]}", "batch_size": batch}
            ),
        }
    )
    scorer = Scorer(s, Metrics())
    thread = threading.Thread(target=scorer.run, kwargs={"model_wait_s": 10.0}, daemon=True)
    thread.start()
    while scorer.scored == 0:
        time.sleep(0.0005)
    start = time.perf_counter()
    first = scorer.scored
    while scorer.scored < n:
        time.sleep(0.001)
    scorer.producer.flush(30)
    elapsed = time.perf_counter() - start
    scorer.stop()
    thread.join(60)
    return (n - first) / elapsed


def run_bench(
    settings: Settings, records: int, rounds: int, partitions: int, json_path: Path | None
) -> BenchResult:
    run = uuid.uuid4().hex[:8]
    source = f"bench-transactions-{run}"
    _create(settings, [source], partitions)
    log.info("preloading %d transactions into %s", records, source)
    preload(settings, source, records)
    result = BenchResult(records, partitions, rounds)
    batch = settings.scorer.batch_size
    for i in range(rounds):
        sinks = [f"bench-pass-{run}-{i}", f"bench-scores-{run}-{i}"]
        _create(settings, sinks, partitions)
        result.passthrough_per_s.append(passthrough(settings, source, sinks[0], records, batch))
        result.scorer_per_s.append(score(settings, source, sinks[1], records, batch))
        log.info(
            "round %d: passthrough %.0f/s, scorer %.0f/s",
            i + 1,
            result.passthrough_per_s[-1],
            result.scorer_per_s[-1],
        )
    if json_path is not None:
        json_path.write_bytes(orjson.dumps(result.as_dict(), option=orjson.OPT_INDENT_2))
    return result
