"""The one place librdkafka configurations are built, plus client helpers shared by all loops."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer
from confluent_kafka.admin import AdminClient

from core.errors import FraudstreamError
from infra.config import Settings

log = logging.getLogger(__name__)

LagCallback = Callable[[str, str, int, int], None]


class BrokerUnreachable(FraudstreamError, RuntimeError):
    """No broker answered at the configured bootstrap servers."""


class ErrorLogger:
    """librdkafka error callback that logs each distinct condition once until it clears."""

    def __init__(self, client: str) -> None:
        self.client = client
        self._seen: set[int] = set()

    def __call__(self, err: KafkaError) -> None:
        code = err.code()
        if code in self._seen:
            return
        self._seen.add(code)
        level = logging.ERROR if err.fatal() else logging.WARNING
        log.log(level, "kafka %s: %s", self.client, err.str())

    def clear(self) -> None:
        if self._seen:
            log.info("kafka %s: connection healthy again", self.client)
            self._seen.clear()


class _Deduplicate(logging.Filter):
    """Pass each distinct librdkafka message (numbers ignored) once a minute at most:
    a broker outage must not print a line per reconnect attempt."""

    def __init__(self, every_s: float = 60.0) -> None:
        super().__init__()
        self.every_s = every_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = re.sub(r"\d+", "#", record.getMessage())
        now = time.monotonic()
        if now - self._last.get(key, -self.every_s) < self.every_s:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


librdkafka_log = logging.getLogger("librdkafka")
librdkafka_log.addFilter(_Deduplicate())


def common_config(settings: Settings) -> dict[str, Any]:
    return {"bootstrap.servers": settings.bootstrap, "logger": librdkafka_log, **settings.kafka}


def producer_config(settings: Settings, **overrides: Any) -> dict[str, Any]:
    return {
        **common_config(settings),
        # Idempotence stops retries from duplicating or reordering a partition, but an
        # idempotent producer stays stuck forever once a broker loses its producer state (a
        # memory-backed broker restart): off by default, on with settings.idempotence.
        "enable.idempotence": settings.idempotence,
        "acks": "all",
        "linger.ms": settings.linger_ms,
        "compression.type": settings.compression,
        "queue.buffering.max.messages": 1_000_000,
        **overrides,
    }


def consumer_config(settings: Settings, group_id: str, **overrides: Any) -> dict[str, Any]:
    return {
        **common_config(settings),
        "group.id": group_id,
        # Offsets are committed by the loop, only for records whose outputs are acknowledged.
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # Short session timeout: group joins take ~half of it (docs/broker.md).
        "session.timeout.ms": settings.session_timeout_ms,
        "heartbeat.interval.ms": max(300, settings.session_timeout_ms // 5),
        "fetch.wait.max.ms": settings.fetch_wait_max_ms,
        "partition.assignment.strategy": "cooperative-sticky",
        "statistics.interval.ms": 1000,
        **overrides,
    }


def parse_lag(stats_json: str, group: str, on_lag: LagCallback) -> None:
    """Report per-partition consumer lag from librdkafka statistics (correct on Tansu too).

    Lag is the high watermark minus the consumer's position (records not yet processed);
    librdkafka's own `consumer_lag` counts from the committed offset, which a trainer keeps
    behind on purpose (see trainer/state.py), so it is only the fallback.
    """
    stats = orjson.loads(stats_json)
    for topic, tstats in stats.get("topics", {}).items():
        for pid, pstats in tstats.get("partitions", {}).items():
            partition = int(pid)
            if partition < 0:
                continue
            high = pstats.get("hi_offset", -1)
            position = pstats.get("app_offset", -1)
            if high >= 0 and position >= 0:
                lag = max(high - position, 0)
            else:
                lag = pstats.get("consumer_lag", -1)
            if lag >= 0:
                on_lag(group, topic, partition, lag)


def make_producer(settings: Settings, name: str, **overrides: Any) -> Producer:
    errors = ErrorLogger(name)
    return Producer(producer_config(settings, error_cb=errors, **overrides))


def produce_waiting(
    producer: Producer,
    topic: str,
    value: bytes,
    key: bytes | None,
    on_delivery: Callable[[KafkaError | None, Message], None] | None = None,
) -> None:
    """Produce one record; while the local queue is full, serve deliveries until it fits
    (back-pressure on the caller, never a dropped record)."""
    while True:
        try:
            producer.produce(topic, value, key, on_delivery=on_delivery)
            return
        except BufferError:
            producer.poll(0.05)


def ready_records(consumer: Consumer, timeout_s: float) -> list[Message]:
    """The records readable now, errors left out: waits up to `timeout_s` for the first, then
    takes those already fetched without waiting. `consume(n, t)` alone would hold fetched
    records until `n` arrived or `t` ran out, and a reader that times arrivals would count
    that wait."""
    first = consumer.poll(timeout_s)
    if first is None:
        return []
    return [m for m in (first, *consumer.consume(10_000, 0)) if m.error() is None]


def polled(
    consumer: Consumer,
    running: Callable[[], bool],
    on_partition_end: Callable[[int], None] | None = None,
    poll_s: float = 0.2,
) -> Iterator[Message]:
    """What `consumer` reads while `running()` holds, one poll of up to `poll_s` at a time:
    records, and errors other than a partition's end (the reader decides what those mean).
    Partition ends go to `on_partition_end` (their partition) when given."""
    while running():
        msg = consumer.poll(poll_s)
        if msg is None:
            continue
        err = msg.error()
        if err is not None and err.code() == KafkaError._PARTITION_EOF:
            if on_partition_end is not None:
                on_partition_end(msg.partition() or 0)
            continue
        yield msg


def make_consumer(
    settings: Settings,
    group_id: str,
    name: str,
    on_lag: LagCallback | None = None,
    **overrides: Any,
) -> Consumer:
    errors = ErrorLogger(name)
    conf = consumer_config(settings, group_id, error_cb=errors, **overrides)
    if on_lag is not None:
        conf["stats_cb"] = lambda s: parse_lag(s, group_id, on_lag)
    return Consumer(conf)


def check_reachable(settings: Settings, timeout_s: float = 10.0) -> None:
    """Fail fast with one clear line when nothing answers at the bootstrap servers."""
    # Silent probe: the one-line error below says all a user needs.
    conf: dict[str, Any] = {**common_config(settings), "error_cb": lambda _e: None, "log_level": 0}
    admin = AdminClient(conf)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            admin.list_topics(timeout=min(2.0, timeout_s))
            return
        except KafkaException:
            if time.monotonic() >= deadline:
                hint = (
                    " (start one with `fraudstream broker` or set FRAUDSTREAM_BOOTSTRAP_SERVERS)"
                    if settings.embedded
                    else ""
                )
                raise BrokerUnreachable(
                    f"no Kafka broker reachable at {settings.bootstrap}{hint}"
                ) from None


class MissingTopics(FraudstreamError, RuntimeError):
    """Topics a process needs do not exist (subscribing would silently wait for minutes)."""


def check_topics(settings: Settings, names: list[str], timeout_s: float = 10.0) -> None:
    admin = AdminClient({**common_config(settings), "log_level": 0})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    missing = [n for n in names if n not in existing]
    if missing:
        raise MissingTopics(
            f"topic {', '.join(missing)} does not exist on {settings.bootstrap}: "
            "create the topics first with `fraudstream topics create`"
        )
