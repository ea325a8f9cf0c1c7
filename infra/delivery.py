"""Producing that survives every error: retriable ones are retried with back-off, permanent
ones drop the record with a metric and a throttled log line, so a loop never crashes, never
spins on a record that can never be delivered, and its commits go on.

librdkafka itself retries a record until `message.timeout.ms`; a delivery report with an error
reaches `Delivery.failed` only after that (or at once, for a permanent error). `produce` can
also raise: `BufferError` (local queue full: serve deliveries, then try again) or
`KafkaException` (e.g. MSG_SIZE_TOO_LARGE, raised synchronously for a record over
`message.max.bytes`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from infra.metrics import Metrics

log = logging.getLogger(__name__)

OnDelivery = Callable[[Any, Any], None]

# Errors that no retry can fix: the record, its topic or our rights are wrong.
PERMANENT_ERRORS = frozenset(
    {
        KafkaError.MSG_SIZE_TOO_LARGE,
        KafkaError.INVALID_MSG_SIZE,
        KafkaError.INVALID_MSG,
        KafkaError.INVALID_RECORD,
        KafkaError.INVALID_TIMESTAMP,
        KafkaError.INVALID_REQUIRED_ACKS,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.CLUSTER_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_EXCEPTION,
        KafkaError.POLICY_VIOLATION,
        KafkaError.UNSUPPORTED_FOR_MESSAGE_FORMAT,
        KafkaError.UNSUPPORTED_VERSION,
        KafkaError._INVALID_ARG,
        KafkaError._INVALID_TYPE,
        KafkaError.INVALID_CONFIG,
    }
)

LOG_EVERY_S = 10.0


def is_permanent(err: KafkaError) -> bool:
    return err.fatal() or err.code() in PERMANENT_ERRORS


@dataclass
class _Retry:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: Any
    on_delivery: OnDelivery | None


class _Retried:
    """The delivery callback of a retried record: a success resets the back-off."""

    __slots__ = ("delivery", "on_delivery")

    def __init__(self, delivery: Delivery, on_delivery: OnDelivery | None) -> None:
        self.delivery = delivery
        self.on_delivery = on_delivery

    def __call__(self, err: Any, msg: Any) -> None:
        if err is None:
            self.delivery.backoff_s = self.delivery.base_backoff_s
        if self.on_delivery is not None:
            self.on_delivery(err, msg)


class Delivery:
    """One producer's error handling: `produce` in place of `producer.produce`, `failed` from
    delivery callbacks, `retry_due` from the loop (it re-produces what waits for its back-off).
    """

    def __init__(
        self,
        producer: Producer,
        metrics: Metrics,
        base_backoff_s: float = 0.1,
        max_backoff_s: float = 10.0,
        settle: Callable[[OnDelivery], None] | None = None,
    ) -> None:
        self.producer = producer
        # Told of each dropped record's `on_delivery`: whoever counts outstanding records
        # (the scorer's offset tracker) counts it settled, so commits go on.
        self.settle = settle
        self.metrics = metrics
        self.base_backoff_s = base_backoff_s
        self.max_backoff_s = max_backoff_s
        self.backoff_s = base_backoff_s
        self._waiting: list[_Retry] = []
        self._due_at = 0.0
        self.dropped = 0
        self._log_counts: dict[tuple[str, str, str], int] = {}
        self._logged_at = 0.0

    def produce(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Any = None,
        on_delivery: OnDelivery | None = None,
    ) -> bool:
        """Produce one record; False when it was dropped (a permanent error: counted, logged,
        and settled)."""
        while True:
            try:
                self.producer.produce(topic, value, key, headers=headers, on_delivery=on_delivery)
                return True
            except BufferError:
                self.producer.poll(0.1)  # queue full: serve deliveries, then try again
            except KafkaException as exc:
                err: KafkaError = exc.args[0]
                if is_permanent(err):
                    self.drop(topic, err, on_delivery)
                    return False
                self.retry_later(topic, value, key, headers, on_delivery, err)
                return True

    def failed(self, err: KafkaError, msg: Any, on_delivery: OnDelivery | None) -> bool:
        """A delivery report with an error. Retriable: produced again after the back-off (its
        `on_delivery` hears of it then). Returns True when the record was dropped."""
        if isinstance(on_delivery, _Retried):
            on_delivery = on_delivery.on_delivery
        if is_permanent(err):
            self.drop(msg.topic(), err, on_delivery)
            return True
        self.retry_later(msg.topic(), msg.value(), msg.key(), msg.headers(), on_delivery, err)
        return False

    def callback(self, err: KafkaError | None, msg: Any) -> None:
        """A delivery callback for records nothing waits for (the trainer's dead letters)."""
        if err is not None:
            self.failed(err, msg, self.callback)

    def retry_later(
        self,
        topic: str,
        value: bytes | None,
        key: bytes | None,
        headers: Any,
        on_delivery: OnDelivery | None,
        err: KafkaError,
    ) -> None:
        now = time.monotonic()
        if not self._waiting:
            self._due_at = now + self.backoff_s
        if isinstance(on_delivery, _Retried):  # failed again: the original callback
            on_delivery = on_delivery.on_delivery
        self._waiting.append(_Retry(topic, value, key, headers, on_delivery))
        self.metrics.produce_errors.labels(topic, err.name(), "retried").inc()
        self._log(topic, err, "retried")

    def retry_due(self) -> None:
        """Re-produce the records whose back-off has passed. The back-off doubles with each
        round (up to `max_backoff_s`) and is back to `base_backoff_s` once a retried record
        is delivered."""
        if not self._waiting or time.monotonic() < self._due_at:
            return
        waiting, self._waiting = self._waiting, []
        self.backoff_s = min(self.backoff_s * 2, self.max_backoff_s)
        for r in waiting:
            self.produce(r.topic, r.value, r.key, r.headers, _Retried(self, r.on_delivery))

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def drop(self, topic: str, err: KafkaError, on_delivery: OnDelivery | None = None) -> None:
        self.dropped += 1
        if on_delivery is not None and self.settle is not None:
            self.settle(on_delivery)
        self.metrics.produce_errors.labels(topic, err.name(), "dropped").inc()
        self._log(topic, err, "dropped")

    def _log(self, topic: str, err: KafkaError, action: str) -> None:
        """At most one line every LOG_EVERY_S, summing what happened since the last one."""
        key = (topic, err.name(), action)
        self._log_counts[key] = self._log_counts.get(key, 0) + 1
        now = time.monotonic()
        if now - self._logged_at < LOG_EVERY_S:
            return
        summary = ", ".join(
            f"{n} {a} for {t} ({e})" for (t, e, a), n in sorted(self._log_counts.items())
        )
        log.warning("produce errors: %s (last: %s)", summary, err.str())
        self._log_counts.clear()
        self._logged_at = now
