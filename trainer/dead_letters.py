"""Labels the trainer does not learn, sent to `labels-dlq` with the reason: undecodable ones
(through `Delivery`, retried), and those refused for their source (counted; dead-lettered only
while the producer's queue has room, so a flood never slows the trainer down)."""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaException, Message, Producer

from core.codec import DecodeError
from infra.delivery import Delivery
from infra.dlq import dead_letter
from infra.metrics import Metrics

log = logging.getLogger(__name__)

DROPPED_LOG_S = 60.0


class LabelDeadLetters:
    def __init__(
        self,
        producer: Producer,
        delivery: Delivery,
        metrics: Metrics,
        topic: str,
        dead_letter_refused: bool,
    ) -> None:
        """`topic`: the labels dead-letter topic; `dead_letter_refused`: refused labels are
        dead-lettered (else only counted)."""
        self.producer = producer
        self.delivery = delivery
        self.metrics = metrics
        self.topic = topic
        self.dead_letter_refused = dead_letter_refused
        self._refused: dict[tuple[str, str], Any] = {}
        # Refused labels not dead-lettered because the producer's queue was full.
        self.dropped = 0
        self._dropped_logged_at = float("-inf")

    def undecodable(self, msg: Message, exc: DecodeError) -> None:
        key, value, headers = dead_letter(msg, exc.reason, exc.detail)
        self.delivery.produce(self.topic, value, key, headers, self.delivery.callback)
        self.metrics.dlq.labels(msg.topic(), exc.reason).inc()

    def refused(self, msg: Message, source: str, reason: str) -> None:
        """A label not learned because of its source: counted, and dead-lettered (it can be
        replayed once its source is configured). It never enters the join buffer."""
        counter = self._refused.get((source, reason))
        if counter is None:  # bounded: LabelGate caps the source names
            counter = self._refused[(source, reason)] = self.metrics.labels_refused.labels(
                source, reason
            )
        counter.inc()
        if not self.dead_letter_refused:
            return
        key, value, headers = dead_letter(msg, reason, f"source {source}")
        wire_headers: list[tuple[str, str | bytes | None]] = list(headers)
        for attempt in range(2):
            try:
                self.producer.produce(
                    self.topic, value, key, headers=wire_headers, on_delivery=self.delivery.callback
                )
            except BufferError:
                # A flood fills the producer's queue faster than the broker takes it: serve
                # the delivery callbacks once, then let this dead letter go (the refusal is
                # counted above). Never wait here: a flood must not slow the trainer down.
                if attempt == 0:
                    self.producer.poll(0)
                    continue
            except KafkaException as exc:
                log.debug("dead letter for a refused label not sent: %s", exc)
            else:
                self.metrics.dlq.labels(msg.topic(), reason).inc()
                return
            break
        self.dropped += 1
        now = time.monotonic()
        if now - self._dropped_logged_at >= DROPPED_LOG_S:
            self._dropped_logged_at = now
            log.warning(
                "%d refused labels not dead-lettered so far (producer queue full): counted "
                "in fraudstream_labels_refused_total only",
                self.dropped,
            )
