"""Bad settings and arguments: one line naming the problem, non-zero exit, no traceback."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from core.durations import parse_duration
from fraudstream.cli import build_parser
from infra.config import ConfigError, Settings, load_settings
from infra.signing import SIGNING_ENV, VERIFY_ENV
from tests.conftest import TEST_SIGNING_KEY, TEST_VERIFY_KEY


def test_environment_overrides_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "params.yaml"
    cfg.write_text("scorer:\n  batch_size: 7\n  threshold: 0.3\nkafka:\n  client.id: x\n")
    monkeypatch.setenv("FRAUDSTREAM_SCORER__BATCH_SIZE", "9")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL", "SASL_SSL")
    s = load_settings(cfg)
    assert s.scorer.batch_size == 9 and s.scorer.threshold == 0.3
    assert s.kafka == {"client.id": "x", "security.protocol": "SASL_SSL"}


def test_bad_values_name_themselves(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("scorer: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(bad)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    monkeypatch.setenv("FRAUDSTREAM_METRICS_PORT", "abc")
    with pytest.raises(ConfigError, match="FRAUDSTREAM_METRICS_PORT"):
        load_settings()


def _run(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    # The session's snapshot keys, so errors after the key check are reached.
    env.update({SIGNING_ENV: TEST_SIGNING_KEY, VERIFY_ENV: TEST_VERIFY_KEY})
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


@pytest.mark.parametrize(
    ("args", "env", "needle"),
    [
        (["produce", "--rate", "-5"], {}, "--rate: must be > 0"),
        (["score", "--metrics-port", "70000"], {}, "port must be 0-65535"),
        (["produce", "--fraud-rate", "2"], {}, "between 0 and 1"),
        (["score"], {"FRAUDSTREAM_PARTITIONS": "-1"}, "FRAUDSTREAM_PARTITIONS"),
        (["score", "--bootstrap-servers", "127.0.0.1:1"], {}, "no Kafka broker reachable"),
        (["train", "--config", "/nonexistent.yaml"], {}, "does not exist"),
        (["produce", "--label-delay", "7x"], {}, "--label-delay: not a duration: '7x'"),
        (["up", "--duration", "0s"], {}, "--duration: must be > 0"),
    ],
)
def test_cli_errors_are_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    result = _run(*args, env_extra=env)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert len(error_lines) == 1, result.stderr


def _command_paths(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> list:
    """Every runnable command path of the parser (`("topics", "create")`, ...), from the
    parser itself, so a new subcommand is covered without touching this test."""
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subparsers:
        return [prefix]
    paths = []
    for name, sub in subparsers[0].choices.items():
        paths += _command_paths(sub, (*prefix, name))
    return paths


def test_every_subcommand_has_help(capsys: pytest.CaptureFixture[str]) -> None:
    paths = _command_paths(build_parser())
    assert ("up",) in paths and ("topics", "create") in paths and ("model", "rollback") in paths
    for path in paths:
        with pytest.raises(SystemExit) as exit_:
            build_parser().parse_args([*path, "--help"])
        out = capsys.readouterr().out
        assert exit_.value.code == 0, path
        assert out.startswith(f"usage: fraudstream {' '.join(path)}"), (path, out[:200])


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("90d", 90 * 86400.0), ("168h", 168 * 3600.0), ("30m", 1800.0), ("45s", 45.0),
     ("12.5", 12.5), (" 2H ", 7200.0), (7, 7.0)],
)  # fmt: skip
def test_durations_accept_units_and_plain_seconds(text: str | float, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "d", "7x", "seven days", "nan", "inf", "1e999h"])
def test_bad_durations_are_refused_with_the_forms_accepted(text: str) -> None:
    with pytest.raises(ValueError, match="not a duration.*90d, 168h, 30m, 45s"):
        parse_duration(text)


def test_every_duration_option_takes_units() -> None:
    parser = build_parser()
    args = parser.parse_args(["produce", "--label-delay", "7d", "--duration", "30m"])
    assert (args.label_delay, args.duration) == (7 * 86400.0, 1800.0)
    args = parser.parse_args(["up", "--label-delay", "168h", "--duration", "45s"])
    assert (args.label_delay, args.duration) == (168 * 3600.0, 45.0)
    args = parser.parse_args(["evaluate", "--label-delay", "90d"])
    assert args.label_delay == 90 * 86400.0
    args = parser.parse_args(["bench", "--latency-seconds", "30s"])
    assert args.latency_seconds == 30.0
    args = parser.parse_args(["evaluate", "--live", "--burn-in", "1d", "--score-timeout", "2m"])
    assert (args.burn_in, args.score_timeout) == (86400.0, 120.0)


def _seconds_settings() -> list[tuple[tuple[str, ...], float]]:
    """(path, default) of every setting in seconds, found in the settings model itself: named
    `*_s`, rates (`*per_s`) aside."""

    def walk(model: type[BaseModel], path: tuple[str, ...]) -> list[tuple[tuple[str, ...], float]]:
        found = []
        for name, field in model.model_fields.items():
            inner = field.annotation
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                found += walk(inner, (*path, name))
            elif name.endswith("_s") and not name.endswith("per_s"):
                found.append(((*path, name), field.default))
        return found

    return walk(Settings, ())


def test_every_seconds_setting_takes_a_unit(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = _seconds_settings()
    assert (("api", "token_ttl_s"), 900) in settings and len(settings) >= 9
    for path, default in settings:
        monkeypatch.setenv("FRAUDSTREAM_" + "__".join(path).upper(), f"{default}s")
    loaded = load_settings()
    for path, default in settings:
        value: object = loaded
        for name in path:
            value = getattr(value, name)
        assert value == default, path


def test_every_duration_setting_takes_units(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAUDSTREAM_TRAINER__JOIN_TTL_S", "7d")
    monkeypatch.setenv("FRAUDSTREAM_TRAINER__MATURATION_S", "90d")
    monkeypatch.setenv("FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S", "2s")
    monkeypatch.setenv("FRAUDSTREAM_TRAINER__MLFLOW_EVERY_S", "1m")
    monkeypatch.setenv("FRAUDSTREAM_REGISTRY__REQUEST_TIMEOUT_S", "30s")
    s = load_settings()
    assert s.trainer.join_ttl_s == 7 * 86400.0 and s.trainer.maturation_s == 90 * 86400.0
    assert s.trainer.snapshot_every_s == 2.0 and s.trainer.mlflow_every_s == 60.0
    assert s.registry.request_timeout_s == 30
    monkeypatch.setenv("FRAUDSTREAM_TRAINER__JOIN_TTL_S", "a week")
    with pytest.raises(ConfigError, match="FRAUDSTREAM_TRAINER__JOIN_TTL_S.*not a duration"):
        load_settings()
