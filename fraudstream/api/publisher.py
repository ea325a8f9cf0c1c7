"""Publishing from the event loop: a confluent-kafka producer whose delivery reports resolve
asyncio futures, served by a thread of its own so no request handler ever blocks on I/O."""

from __future__ import annotations

import asyncio
import logging
import threading

from confluent_kafka import KafkaError, KafkaException, Message

from core.errors import FraudstreamError
from infra.config import Settings
from infra.kafka import make_producer

log = logging.getLogger(__name__)


class PublishError(FraudstreamError, RuntimeError):
    """The broker did not take a record (after librdkafka's own retries)."""


class Publisher:
    def __init__(self, settings: Settings) -> None:
        # linger 1 ms: a request waits for its own delivery, so batching longer only adds
        # latency; concurrent requests still share batches.
        self._producer = make_producer(settings, "api", **{"linger.ms": min(settings.linger_ms, 1)})
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="api-producer", daemon=True)

    def start(self) -> Publisher:
        self._thread.start()
        return self

    def _serve(self) -> None:
        while not self._stop.is_set():
            self._producer.poll(0.05)

    def publish(self, topic: str, key: bytes, value: bytes) -> asyncio.Future[None]:
        """Queue one record; the future resolves once the broker acknowledged it."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()

        def on_delivery(err: KafkaError | None, _msg: Message) -> None:
            loop.call_soon_threadsafe(_settle, done, err)

        try:
            self._producer.produce(topic, value, key, -1, on_delivery)
        except BufferError:
            done.set_exception(PublishError("the producer's local queue is full"))
        except KafkaException as exc:
            done.set_exception(PublishError(str(exc)))
        return done

    def broker_reachable(self, timeout_s: float = 2.0) -> bool:
        try:
            self._producer.list_topics(timeout=timeout_s)
            return True
        except Exception:  # noqa: BLE001  any failure means: not reachable now
            return False

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        left = self._producer.flush(10)
        if left:
            log.warning("api producer: %d records not delivered at exit", left)


def _settle(done: asyncio.Future[None], err: KafkaError | None) -> None:
    if done.done():
        return
    if err is None:
        done.set_result(None)
    else:
        done.set_exception(PublishError(err.str()))
