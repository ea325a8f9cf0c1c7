"""Test helpers: running `fraudstream` subprocesses and reading topics with a plain client."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import OFFSET_BEGINNING, Consumer, Message, TopicPartition

from infra.config import Settings


@contextmanager
def fraudstream_process(
    args: list[str], env: dict[str, str], log_path: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """A `fraudstream ...` child process, stopped with SIGTERM (then killed) on exit."""
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "fraudstream.cli", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def run_bench(bootstrap: str, work_dir: Path, *args: str) -> tuple[str, dict[str, Any]]:
    """`fraudstream bench ARGS` on the test broker, outside any FRAUDSTREAM_ environment: its
    printed report and the `results` of its JSON report (fails the test if it fails)."""
    out = work_dir / "bench.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    run = subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", "bench", "--bootstrap-servers", bootstrap,
         "--json", str(out), *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=work_dir,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-3000:]
    return run.stdout, orjson.loads(out.read_bytes())["results"]


def topic_reader(settings: Settings, topic: str, **config: object) -> Consumer:
    """A consumer assigned every partition of `topic` from its beginning, in no group: polling
    tests read with it, since each group join costs seconds. `config` adds client settings."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-tail-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "fetch.wait.max.ms": 50,
            "fetch.message.max.bytes": 64 * 1024 * 1024,
            **config,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in sorted(partitions)])
    return consumer


def read_topic(
    settings: Settings,
    topic: str,
    until: Callable[[list[Message]], bool],
    timeout_s: float = 60.0,
) -> list[Message]:
    """Read `topic` from the beginning until `until(messages)` holds or the time is up."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-reader-{uuid.uuid4().hex[:8]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "session.timeout.ms": 6000,
            "fetch.wait.max.ms": 50,
        }
    )
    consumer.subscribe([topic])
    out: list[Message] = []
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and not until(out):
            for msg in consumer.consume(10000, 0.5):
                if msg.error() is None:
                    out.append(msg)
    finally:
        consumer.close()
    return out


def wait_for(
    what: str,
    condition: Callable[[], Any],
    timeout_s: float,
    procs: dict[Path, subprocess.Popen[bytes]] | None = None,
    interval_s: float = 0.2,
    detail: Callable[[], object] | None = None,
) -> Any:
    """Poll `condition` until it returns something truthy, and return that. Fail naming `what`
    when `timeout_s` runs out (with `detail()`, or else the last result), or at once when one
    of `procs` (log path -> process) has died; either way with the tails of their logs."""
    procs = procs or {}
    deadline = time.monotonic() + timeout_s
    while True:
        result = condition()
        if result:
            return result
        for log, proc in procs.items():
            assert proc.poll() is None, f"{log.name}: process died\n{log.read_text()[-4000:]}"
        if time.monotonic() >= deadline:
            last = detail() if detail is not None else result
            tails = "".join(f"\n--- {p.name}\n{p.read_text()[-4000:]}" for p in procs)
            raise AssertionError(
                f"timed out after {timeout_s:.0f} s waiting for {what}: {last!r}{tails}"
            )
        time.sleep(interval_s)


def log_match(log: Path, pattern: str) -> re.Match[str] | None:
    """The first match of `pattern` in a process's log (None before the log exists)."""
    return re.search(pattern, log.read_text(errors="replace")) if log.exists() else None


def metric_total(port: int, name: str) -> float:
    """The sum of a metric's samples on a process's Prometheus endpoint (0 before it answers)."""
    from fraudstream.live import Scraper

    return Scraper({"p": port}).scrape().total("p", name)
