"""Bad settings and arguments: one line naming the problem, non-zero exit, no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from infra.config import ConfigError, load_settings
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
    ],
)
def test_cli_errors_are_one_line(args: list[str], env: dict[str, str], needle: str) -> None:
    result = _run(*args, env_extra=env)
    assert result.returncode != 0
    assert needle in result.stderr
    assert "Traceback" not in result.stderr
    error_lines = [ln for ln in result.stderr.splitlines() if "error:" in ln]
    assert len(error_lines) == 1, result.stderr


def test_every_subcommand_has_help() -> None:
    for cmd in (
        ["up"],
        ["broker"],
        ["topics", "create"],
        ["produce"],
        ["score"],
        ["train"],
        ["replay-labels"],
        ["keys", "generate"],
    ):
        result = _run(*cmd, "--help")
        assert result.returncode == 0 and "usage: fraudstream" in result.stdout
