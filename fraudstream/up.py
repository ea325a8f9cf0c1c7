"""`fraudstream up`: the whole system on one machine, with a live view and a clean stop.

Each part runs as its own process (as in production), started from this one; the live view
reads their Prometheus endpoints, so what it shows is exactly what operators scrape.
Stop order matters: producer first, then the scorer once it has scored everything produced,
then the trainer once it has read every label (it writes a final snapshot), then the broker.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from fraudstream.api.local import local_credentials
from fraudstream.live import LiveView, Scrape, Scraper, Summary
from infra.broker import EmbeddedBroker, free_port, port_open
from infra.config import Settings
from infra.kafka import check_reachable
from infra.signing import (
    SIGNING_ENV,
    VERIFY_ENV,
    keys_configured,
    require_signing_key,
    verify_key,
    write_pair,
)
from infra.topics import create_topics

log = logging.getLogger(__name__)

DRAIN_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class UpOptions:
    duration_s: float | None = None
    rate: float = 500.0
    seed: int = 42
    fraud_rate: float = 0.01
    label_delay_s: float = 3.0
    label_coverage: float = 1.0
    plain: bool = False
    run_dir: Path = Path(".fraudstream")
    config: str | None = None


@dataclass
class Child:
    name: str
    args: list[str]
    port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str]) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        out = self.log_path.open("ab")
        # A session of its own: the terminal's Ctrl-C reaches only `up`, which stops the
        # children in order.
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fraudstream.cli", *self.args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
        out.close()

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, timeout_s: float = 60.0) -> int | None:
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("%s did not stop within %.0f s: killing it", self.name, timeout_s)
                self.process.kill()
                self.process.wait()
        return self.process.returncode


@dataclass
class Stack:
    children: dict[str, Child] = field(default_factory=dict)

    def stop_all(self) -> None:
        for child in reversed(list(self.children.values())):
            child.stop(10)


def _wait(predicate: object, timeout_s: float, interval_s: float = 0.5) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return True
        time.sleep(interval_s)
    return False


def _ready(scrape: Scrape) -> bool:
    """The scorer and the trainer are in their groups (and the trainer has caught up)."""
    return all(scrape.state(name) == "running" for name in ("scorer", "trainer"))


# The client fetch wait `up` gives its processes on the embedded broker (see run_up).
EMBEDDED_FETCH_WAIT_MS = 100


def snapshot_keys(settings: Settings, run_dir: Path, embedded: bool) -> dict[str, str]:
    """The embedded demo signs with a key pair made for the run (written to the run directory,
    where the verification key is at hand to load the MLflow model); with a real cluster the
    configured keys are used, and a missing one is an error before anything starts."""
    if keys_configured(settings) or not embedded:
        require_signing_key(settings, "the trainer")
        verify_key(settings)
        return {}
    private, public = write_pair(run_dir / "keys")
    log.info("snapshot keys for this run: %s, verification key %s", private, public)
    return {f"{SIGNING_ENV}_FILE": str(private), f"{VERIFY_ENV}_FILE": str(public)}


def run_up(settings: Settings, options: UpOptions) -> int:
    broker: EmbeddedBroker | None = None
    stack = Stack()
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    run_dir = options.run_dir / time.strftime("%Y%m%d-%H%M%S")
    try:
        if settings.embedded:
            port = 9092 if not port_open("127.0.0.1", 9092) else free_port()
            broker = EmbeddedBroker(port=port)
            broker.start()
            settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        check_reachable(settings)
        create_topics(settings)

        env = {**os.environ, "FRAUDSTREAM_BOOTSTRAP_SERVERS": settings.bootstrap}
        if broker is not None and "fetch_wait_max_ms" not in settings.model_fields_set:
            # Tansu's CPU grows with records stored times fetches answered: with 10 ms fetches
            # it reached 1.4 cores within 30 s and scoring fell to half the produced rate;
            # with 100 ms it kept up for a minute and more (docs/broker.md). A setting of
            # the user's own is kept.
            env["FRAUDSTREAM_FETCH_WAIT_MAX_MS"] = str(EMBEDDED_FETCH_WAIT_MS)
        env.pop("FRAUDSTREAM_METRICS_PORT", None)
        keys = snapshot_keys(settings, run_dir, embedded=broker is not None)
        env.update(keys)
        if keys:  # this process reads the final snapshot for the summary
            settings = settings.model_copy(
                update={
                    "snapshot_verify_key_file": Path(keys[f"{VERIFY_ENV}_FILE"]),
                    "snapshot_signing_key_file": Path(keys[f"{SIGNING_ENV}_FILE"]),
                }
            )
        common = ["--config", options.config] if options.config else []
        produce_args = [
            "produce",
            *common,
            "--rate",
            str(options.rate),
            "--seed",
            str(options.seed),
            "--fraud-rate",
            str(options.fraud_rate),
            "--label-delay",
            str(options.label_delay_s),
            "--label-coverage",
            str(options.label_coverage),
        ]
        if options.duration_s is not None:
            produce_args += ["--duration", str(options.duration_s)]
        for name, args in (
            ("trainer", ["train", *common]),
            ("scorer", ["score", *common]),
            ("producer", produce_args),
        ):
            port = free_port()
            child = Child(name, [*args, "--metrics-port", str(port)], port, run_dir / f"{name}.log")
            stack.children[name] = child
        producer = stack.children.pop("producer")
        for child in stack.children.values():
            child.start(env)

        api_port = settings.api.port
        api_port = free_port() if port_open("127.0.0.1", api_port) else api_port
        api_env, login = local_credentials(settings, run_dir)
        api = Child("api", ["api", *common, "--port", str(api_port)], api_port, run_dir / "api.log")
        api.start({**env, **api_env})
        stack.children["api"] = api
        print(f"HTTP API on http://127.0.0.1:{api_port} (docs /docs; {login})", flush=True)
        scraper = Scraper({n: c.port for n, c in stack.children.items()})
        view = LiveView(
            scraper,
            plain=options.plain,
            bootstrap=settings.bootstrap,
            processes=(*stack.children, producer.name),
        )
        started = time.monotonic()
        with view:
            # Transactions flow once every consumer is in its group (`--duration` counts from
            # then); meanwhile the view shows what each process is doing.
            while not stop.is_set() and not _ready(scraper.scrape()):
                view.refresh(time.monotonic() - started)
                if not all(c.running() for c in stack.children.values()):
                    break
                stop.wait(0.5)
            if not stop.is_set() and all(c.running() for c in stack.children.values()):
                producer.start(env)
                scraper.ports[producer.name] = producer.port
            stack.children[producer.name] = producer
            while not stop.is_set() and producer.running():
                view.refresh(time.monotonic() - started)
                if not all(c.running() for c in stack.children.values()):
                    break
                stop.wait(1.0)
            crashed = [n for n, c in stack.children.items() if n != "producer" and not c.running()]
            view.note("stopping: producer")
            producer.stop()
            if not crashed:
                view.note("stopping: scorer catching up with every transaction produced")
                _wait(
                    lambda: scraper.scrape().caught_up(),
                    DRAIN_TIMEOUT_S,
                )
                view.refresh(time.monotonic() - started)
            view.note("stopping: scorer")
            stack.children["scorer"].stop()
            if not crashed:
                view.note("stopping: trainer learning the last labels")
                _wait(lambda: scraper.scrape().trainer_caught_up(), 30.0)
            view.note("stopping: trainer (final snapshot)")
            final = scraper.scrape()
            stack.children["trainer"].stop(120)
        summary = Summary.from_scrape(final, time.monotonic() - started, run_dir, settings)
        print(summary.render())
        for name in crashed:
            print(f"{name} exited unexpectedly: see {stack.children[name].log_path}")
        return 1 if crashed else 0
    finally:
        stack.stop_all()
        if broker is not None:
            broker.stop()
