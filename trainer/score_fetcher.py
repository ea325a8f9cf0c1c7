"""Re-reading one Score from the scores topic: the features of a transaction whose label
comes after it left the join buffer (a late fraud label, an overriding label)."""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, TopicPartition

from infra.config import Settings
from infra.kafka import consumer_config, polled

log = logging.getLogger(__name__)


class ScoreFetcher:
    """Reads one Score record back from the scores topic by (partition, offset): the features
    of a transaction learned as legitimate at maturation, when a fraud label comes later.
    Rare, so one lazily created consumer with `assign()` (no group join) and a blocking read."""

    def __init__(self, settings: Settings, timeout_s: float = 10.0) -> None:
        self.settings = settings
        self.topic = settings.topics.scores
        self.timeout_s = timeout_s
        self._consumer: Consumer | None = None

    def _client(self) -> Consumer:
        if self._consumer is None:
            conf = consumer_config(
                self.settings,
                f"{self.settings.trainer.group_id}-refetch",
                **{
                    "auto.offset.reset": "error",
                    "statistics.interval.ms": 0,
                    "fetch.wait.max.ms": self.settings.trainer.fetch_wait_max_ms,
                },
            )
            self._consumer = Consumer(conf)
        return self._consumer

    def fetch(self, partition: int, offset: int) -> bytes | None:
        """The record's value, or None when it is gone (retention) or unreachable in time."""
        consumer = self._client()
        consumer.assign([TopicPartition(self.topic, partition, offset)])
        deadline = time.monotonic() + self.timeout_s
        try:
            for msg in polled(consumer, lambda: time.monotonic() < deadline):
                err = msg.error()
                if err is not None:
                    log.warning("re-reading %s[%d]@%d: %s", self.topic, partition, offset, err)
                    return None
                at = msg.offset()
                if at == offset:
                    return msg.value()
                if at is not None and at > offset:  # compacted or deleted: gone
                    return None
            log.warning("re-reading %s[%d]@%d: timed out", self.topic, partition, offset)
            return None
        finally:
            consumer.unassign()

    def close(self) -> None:
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
