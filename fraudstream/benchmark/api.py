"""The HTTP API under load: requests/s and end-to-end latency (request sent -> Score
answered) at several concurrencies, then at 20% of the highest rate reached, and at the same
time and rate the Kafka-only latency (transaction produced -> Score read) through the same
scorer, so the API's own share is visible.

A scorer and a `fraudstream api` run as processes of their own; this process offers the load
(`http_load.py`) and, for the Kafka-only figure, produces and reads the topics directly.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
import urllib.parse
import urllib.request
from itertools import count
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from fraudstream.api.auth import hash_secret
from fraudstream.benchmark.common import (
    OutputReader,
    iso,
    measurement,
    percentile_ms,
    records,
    uid,
)
from fraudstream.benchmark.http_load import closed_loop, open_loop
from infra.broker import free_port
from infra.config import Settings, Topics
from infra.kafka import make_producer

log = logging.getLogger(__name__)

CONCURRENCIES = (1, 4, 16, 64)
LIGHT_LOAD = 0.2
# Long enough that every request gets its Score even at saturation: latency is measured,
# not cut off at the default deadline.
DEADLINE_MS = 30_000
PATH = "/v1/transactions"


class Bodies:
    """Transactions with fresh ids, pre-encoded around the id."""

    def __init__(self, prefix: str, n: int = 5000) -> None:
        marker = "\u0000id\u0000"
        self._halves = [
            orjson.dumps({**r, "transaction_id": marker}).split(orjson.dumps(marker))
            for r in records(n, seed=17)
        ]
        self._ids = count()
        self.prefix = prefix

    def __call__(self) -> bytes:
        i = next(self._ids)
        head, tail = self._halves[i % len(self._halves)]
        return head + orjson.dumps(f"{self.prefix}-{i}") + tail


def _token(base: str, client: str, secret: str, proc: Any, log_path: Path) -> str:
    form = urllib.parse.urlencode(
        {"grant_type": "client_credentials", "client_id": client, "client_secret": secret}
    ).encode()
    deadline = time.monotonic() + 120
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited: {log_path.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{base}/token", form, timeout=5) as r:  # noqa: S310
                return str(orjson.loads(r.read())["access_token"])
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the API never answered: see {log_path}") from None
            time.sleep(0.2)


async def _load(port: int, token: str, step_s: float, kafka: KafkaOnly) -> dict[str, Any]:
    headers = b"Authorization: Bearer %s\r\n" % token.encode()
    bodies = Bodies(f"api-{uid()}")
    # Warm-up: until the scorer (compiling at start) answers within the deadline.
    deadline = time.monotonic() + 300
    while (await closed_loop("127.0.0.1", port, headers, PATH, bodies, 1, 0.5)).statuses.get(
        200, 0
    ) == 0:
        if time.monotonic() > deadline:
            raise RuntimeError("the scorer behind the API never answered")
    await closed_loop("127.0.0.1", port, headers, PATH, bodies, 16, 2.0)
    levels = []
    for concurrency in CONCURRENCIES:
        result = await closed_loop("127.0.0.1", port, headers, PATH, bodies, concurrency, step_s)
        levels.append({"concurrency": concurrency, **result.summary()})
        log.info("api at concurrency %d: %s", concurrency, levels[-1])
    capacity = max(level["per_s"] for level in levels)
    rate = max(capacity * LIGHT_LOAD, 1.0)
    # The Kafka-only load runs at the same time, at the same rate: both see the same broker
    # state and the same neighbours on the machine.
    offer = threading.Thread(target=kafka.offer, args=(rate, step_s), name="kafka-only")
    offer.start()
    light = await open_loop("127.0.0.1", port, headers, PATH, bodies, rate, step_s)
    await asyncio.to_thread(offer.join)
    return {
        "levels": levels,
        "capacity_per_s": capacity,
        "light": {"load": LIGHT_LOAD, "offered_per_s": rate, **light.summary()},
    }


class KafkaOnly:
    """Transactions produced straight to `transactions` at a rate, their Scores read from
    `scores`: the latency of the Kafka path through the scorer the API uses."""

    def __init__(self, settings: Settings, topics: Topics) -> None:
        self.topics = topics
        self.prefix = f"kafka-{uid()}"
        self.producer = make_producer(settings, "bench api kafka-only")
        self.reader = OutputReader(settings, topics.scores)
        self.pool = records(5000, seed=19)
        self.sent_at: dict[str, float] = {}
        self.rate = 0.0
        self._read = 0

    def __enter__(self) -> KafkaOnly:
        self.reader.__enter__()
        # Until the reader has joined and reads live: records it read late would count the
        # group join as latency.
        warm = f"{self.prefix}-warm"
        self.producer.produce(
            self.topics.transactions, orjson.dumps({**self.pool[0], "transaction_id": warm})
        )
        self.producer.flush(10)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            arrivals = self.reader.arrivals[self._read :]
            self._read += len(arrivals)
            if any(warm.encode() in (v or b"") for _, v in arrivals):
                break
            time.sleep(0.05)
        return self

    def __exit__(self, *_: object) -> None:
        self.reader.__exit__()

    def offer(self, rate: float, seconds: float) -> None:
        self.rate = rate
        start = time.time()
        sent = 0
        while (now := time.time()) < start + seconds:
            for _ in range(int((now - start) * rate) - sent):
                r = self.pool[sent % len(self.pool)]
                tid = f"{self.prefix}-{sent}"
                value = orjson.dumps({**r, "transaction_id": tid, "timestamp": iso(now)})
                self.producer.produce(self.topics.transactions, value, str(r["card_id"]).encode())
                self.sent_at[tid] = now
                sent += 1
            self.producer.poll(0)
            time.sleep(0.001)
        self.producer.flush(10)

    def result(self) -> dict[str, float]:
        deadline = time.monotonic() + 30
        got: dict[str, float] = {}
        while len(got) < len(self.sent_at) and time.monotonic() < deadline:
            arrivals = self.reader.arrivals[self._read :]
            self._read += len(arrivals)
            for at, value in arrivals:
                tid = orjson.loads(value or b"{}").get("transaction_id", "")
                if tid in self.sent_at:
                    got.setdefault(tid, at)
            time.sleep(0.2)
        lat = np.array([got[t] - self.sent_at[t] for t in got])
        return {
            "offered_per_s": self.rate,
            "sent": float(len(self.sent_at)),
            "received": float(len(lat)),
            "p50_ms": percentile_ms(lat, 50),
            "p99_ms": percentile_ms(lat, 99),
        }


def measure(settings: Settings, partitions: int, step_s: float, work_dir: Path) -> dict[str, Any]:
    secret = secrets.token_urlsafe(24)
    port = free_port()
    clients = {
        "bench": {"secret_sha256": hash_secret(secret), "scopes": ["score"],
                  "rate_per_s": 1e9, "burst": 10**9},
    }  # fmt: skip
    with measurement(settings, "api", partitions) as run:
        api_env = {
            **run.env,
            "FRAUDSTREAM_API__PORT": str(port),
            "FRAUDSTREAM_API__CLIENTS": orjson.dumps(clients).decode(),
            "FRAUDSTREAM_API__TOKEN_KEY": secrets.token_urlsafe(32),
            "FRAUDSTREAM_API__DEADLINE_MS": str(DEADLINE_MS),
        }
        run.spawn(["fraudstream.cli", "score", "--metrics-port", "0"], work_dir / "api-scorer.log")
        api_log = work_dir / "api.log"
        api = run.spawn(["fraudstream.cli", "api"], api_log, api_env)
        token = _token(f"http://127.0.0.1:{port}", "bench", secret, api, api_log)
        with KafkaOnly(settings, run.topics) as kafka:
            result = asyncio.run(_load(port, token, step_s, kafka))
            result["kafka_only"] = kafka.result()
    result["deadline_ms"] = DEADLINE_MS
    return result
