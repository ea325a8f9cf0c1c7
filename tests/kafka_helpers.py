"""Test helpers: running `fraudstream` subprocesses and reading topics with a plain client."""

from __future__ import annotations

import os
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
from confluent_kafka import Consumer, Message

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


def wait_until(condition: Callable[[], object], timeout_s: float, what: str) -> None:
    """Poll `condition` until it holds; fail naming `what` when `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(0.2)


def metric_total(port: int, name: str) -> float:
    """The sum of a metric's samples on a process's Prometheus endpoint (0 before it answers)."""
    from fraudstream.live import Scraper

    return Scraper({"p": port}).scrape().total("p", name)
