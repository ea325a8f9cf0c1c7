"""Shared pieces of the subcommands: argument types that reject a bad value in one line, the
options every Kafka-facing command takes, and the settings, signal and metrics helpers."""

from __future__ import annotations

import argparse
import logging
import signal
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeAlias

from core.durations import parse_duration
from core.errors import FraudstreamError
from infra.config import Settings, load_settings

log = logging.getLogger("fraudstream")

if TYPE_CHECKING:
    # What `add_parsers` of each command module adds its subcommands to (generic in the
    # type stubs only).
    Subparsers: TypeAlias = argparse._SubParsersAction[argparse.ArgumentParser]


class UsageError(FraudstreamError):
    """A bad argument found after parsing (checked against settings)."""


def number(
    kind: type[float] | type[int],
    bad: Callable[[float], bool],
    rule: str,
    what: str = "a number",
) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, rejected with `rule` when `bad(value)`."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if bad(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


def positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    return number(kind, lambda v: v <= 0, "must be > 0")


fraction = number(float, lambda v: not 0.0 <= v <= 1.0, "must be between 0 and 1")
port_number = number(int, lambda v: not 0 <= v <= 65535, "port must be 0-65535", "a port number")


def _duration(bad: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type for a duration (`parse_duration`), rejected with `rule` when bad."""

    def parse(text: str) -> float:
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if bad(seconds):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return seconds

    return parse


positive_duration = _duration(lambda v: v <= 0, "must be > 0")
non_negative_duration = _duration(lambda v: v < 0, "must be >= 0")


def add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML settings file (default: params.yaml)")
    p.add_argument(
        "--bootstrap-servers",
        metavar="HOSTS",
        help="Kafka cluster (default: $FRAUDSTREAM_BOOTSTRAP_SERVERS, else the embedded broker)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object a line"
    )


def add_metrics_port(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--metrics-port",
        type=port_number,
        metavar="N",
        help=f"serve Prometheus metrics on this port (0: any free port; {default_help})",
    )


def settings_for(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "bootstrap_servers", None):
        overrides["bootstrap_servers"] = args.bootstrap_servers
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"] = args.metrics_port
    return load_settings(getattr(args, "config", None), **overrides)


def stop_on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def serve_metrics(metrics: Any, port: int | None, host: str = "127.0.0.1") -> None:
    try:
        bound = metrics.serve(port, host)
    except OSError as exc:
        raise UsageError(
            f"--metrics-port {port}: cannot listen on {host} ({exc.strerror})"
        ) from None
    if bound is not None:
        log.info("metrics on http://%s:%d/metrics", host, bound)
