"""Scores back to the request that published their transaction.

Every replica reads every partition of `scores` with a consumer of its own (assigned, no
group, nothing committed), from the end as it stood at start. A request registers its
`transaction_id` before it publishes; a Score with a registered id resolves that request's
future, on whichever replica it was posted. Each replica also keeps the most recent Scores
(`api.score_cache`), so GET /v1/scores/{id} is answered by any replica, including for a
request that passed its deadline on another one.

Cost: each replica decodes every Score's id, so the scores rate times the number of replicas.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import uuid
from collections import OrderedDict

import orjson
from confluent_kafka import Consumer, TopicPartition

from infra.config import Settings
from infra.kafka import ErrorLogger, common_config, ready_records

log = logging.getLogger(__name__)


def _reader(settings: Settings) -> tuple[Consumer, list[TopicPartition]]:
    consumer = Consumer(
        {
            **common_config(settings),
            # Never joins or commits: the id only names the client in broker logs.
            "group.id": f"fraudstream-api-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "latest",
            "fetch.wait.max.ms": settings.api.fetch_wait_max_ms,
            "error_cb": ErrorLogger("api scores reader"),
        }
    )
    topic = settings.topics.scores
    md = consumer.list_topics(topic, timeout=10)
    if md.topics[topic].error is not None:
        consumer.close()
        raise RuntimeError(f"topic {topic}: {md.topics[topic].error.str()}")
    start: list[TopicPartition] = []
    for p in sorted(md.topics[topic].partitions):
        # An explicit start offset, read now: a Score produced after this call is never
        # missed (a watermark reported low only means reading a few old Scores again).
        _low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        start.append(TopicPartition(topic, p, max(high, 0)))
    consumer.assign(start)
    return consumer, start


def transaction_id(value: bytes) -> str | None:
    try:
        tid = orjson.loads(value).get("transaction_id")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return tid if isinstance(tid, str) else None


class ScoreReplies:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._pending: dict[str, list[asyncio.Future[bytes]]] = {}
        self._recent: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self.seen = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> ScoreReplies:
        """Assigns the partitions before returning: from then on no Score is missed."""
        self._loop = loop
        consumer, _start = _reader(self.settings)
        self._thread = threading.Thread(
            target=self._run, args=(consumer,), name="api-scores", daemon=True
        )
        self._thread.start()
        return self

    def expect(self, tid: str) -> asyncio.Future[bytes]:
        """A future for the next Score of `tid` (register before publishing)."""
        assert self._loop is not None
        fut: asyncio.Future[bytes] = self._loop.create_future()
        with self._lock:
            self._pending.setdefault(tid, []).append(fut)
        return fut

    def forget(self, tid: str, fut: asyncio.Future[bytes]) -> None:
        with self._lock:
            waiting = self._pending.get(tid)
            if waiting is not None:
                if fut in waiting:
                    waiting.remove(fut)
                if not waiting:
                    del self._pending[tid]

    def lookup(self, tid: str) -> bytes | None:
        with self._lock:
            return self._recent.get(tid)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._pending)

    def _run(self, consumer: Consumer) -> None:
        limit = self.settings.api.score_cache
        try:
            while not self._stop.is_set():
                for msg in ready_records(consumer, 0.1):
                    value = msg.value()
                    tid = transaction_id(value) if value else None
                    if tid is None or value is None:
                        continue
                    self.seen += 1
                    with self._lock:
                        self._recent[tid] = value
                        self._recent.move_to_end(tid)
                        while len(self._recent) > limit:
                            self._recent.popitem(last=False)
                        waiting = self._pending.pop(tid, None)
                    if waiting:
                        assert self._loop is not None
                        self._loop.call_soon_threadsafe(_resolve, waiting, value)
        except Exception:
            log.exception("scores reader stopped")
            raise
        finally:
            consumer.close()

    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def _resolve(waiting: list[asyncio.Future[bytes]], value: bytes) -> None:
    for fut in waiting:
        if not fut.done():
            fut.set_result(value)
