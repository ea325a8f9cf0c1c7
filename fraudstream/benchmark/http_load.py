"""A small HTTP/1.1 load client on asyncio streams (keep-alive, one request in flight per
connection): closed loops at a fixed concurrency, and an open loop at a fixed rate whose
latencies count from each request's scheduled time (no coordinated omission)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np


class Connection:
    def __init__(self, host: str, port: int, headers: bytes) -> None:
        self.host, self.port, self.headers = host, port, headers
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, body: bytes) -> int:
        """Send one POST and read the whole answer; returns the status."""
        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        assert self._reader is not None
        self._writer.write(
            b"POST %s HTTP/1.1\r\nHost: %s\r\n%sContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n%s"
            % (path.encode(), self.host.encode(), self.headers, len(body), body)
        )
        status_line = await self._reader.readline()
        status = int(status_line.split(b" ", 2)[1])
        length = 0
        close = False
        while (line := await self._reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        await self._reader.readexactly(length)
        if close:
            self.close()
        return status

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


@dataclass
class LoadResult:
    seconds: float
    latencies_s: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)

    def summary(self) -> dict[str, float]:
        lat = np.array(self.latencies_s)
        ok = self.statuses.get(200, 0)
        return {
            "requests": float(sum(self.statuses.values())),
            "scored": float(ok),
            "deadline_202": float(self.statuses.get(202, 0)),
            "errors": float(sum(n for s, n in self.statuses.items() if s not in (200, 202))),
            "per_s": ok / self.seconds if self.seconds > 0 else 0.0,
            "p50_ms": float(np.percentile(lat, 50) * 1000) if lat.size else float("nan"),
            "p99_ms": float(np.percentile(lat, 99) * 1000) if lat.size else float("nan"),
        }


Body = Callable[[], bytes]


async def closed_loop(
    host: str, port: int, headers: bytes, path: str, body: Body, concurrency: int, seconds: float
) -> LoadResult:
    """`concurrency` connections, each sending its next request when the last is answered."""
    result = LoadResult(seconds)
    end = time.perf_counter() + seconds

    async def worker() -> None:
        conn = Connection(host, port, headers)
        try:
            while (started := time.perf_counter()) < end:
                status = await conn.post(path, body())
                result.statuses[status] = result.statuses.get(status, 0) + 1
                if status == 200:
                    result.latencies_s.append(time.perf_counter() - started)
        finally:
            conn.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.seconds = time.perf_counter() - started
    return result


async def open_loop(
    host: str,
    port: int,
    headers: bytes,
    path: str,
    body: Body,
    rate: float,
    seconds: float,
    connections: int = 64,
) -> LoadResult:
    """Requests due at `rate`/s; each waits for a free connection, and its latency counts
    from when it was due."""
    result = LoadResult(seconds)
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        pool.put_nowait(Connection(host, port, headers))

    async def one(due: float) -> None:
        conn = await pool.get()
        try:
            status = await conn.post(path, body())
        finally:
            pool.put_nowait(conn)
        result.statuses[status] = result.statuses.get(status, 0) + 1
        if status == 200:
            result.latencies_s.append(time.perf_counter() - due)

    start = time.perf_counter()
    tasks = []
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return result
