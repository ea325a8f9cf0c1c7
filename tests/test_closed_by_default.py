"""Closed by default: client credentials never reach logs, reprs or MLflow parameters, and
/metrics listens on loopback unless configured (and the log line names the real address)."""

from __future__ import annotations

import logging
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer

from core.model import build_pipeline
from core.snapshot import make_snapshot
from fraudstream.commands.args import serve_metrics
from infra.config import REDACTED, load_settings
from infra.kafka import make_consumer, make_producer
from infra.metrics import Metrics
from tests.conftest import settings_env
from trainer.lineage import config_params, lineage

SECRET = "hunter2-s3cr3t-value"


@pytest.fixture
def secret_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)  # no stray params.yaml
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_USERNAME", "scorer")
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_PASSWORD", SECRET)
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SSL_KEY_PASSWORD", SECRET)
    monkeypatch.setenv("FRAUDSTREAM_KAFKA_SASL_OAUTHBEARER_CLIENT_SECRET", SECRET)


def test_settings_repr_and_str_hide_client_credentials(secret_env: None) -> None:
    settings = load_settings()
    assert settings.kafka["sasl.password"] == SECRET  # the clients still get it
    for text in (repr(settings), str(settings), f"{settings!r}"):
        assert SECRET not in text
        assert f"'sasl.password': '{REDACTED}'" in text
        assert "'sasl.username': 'scorer'" in text  # a user name is no secret


def test_mlflow_parameters_and_lineage_hold_no_credentials(secret_env: None) -> None:
    settings = load_settings(mlflow_tracking_uri=f"http://user:{SECRET}@mlflow:5000")
    params = config_params(settings)
    assert params and SECRET not in orjson.dumps(params).decode()
    snapshot = make_snapshot(build_pipeline(settings.model), "m", 1, 0, {}, {}, {})
    assert SECRET not in orjson.dumps(lineage(settings, snapshot, ["amount"])).decode()


def test_the_logged_client_config_redacts_credentials(
    secret_env: None, caplog: pytest.LogCaptureFixture, bootstrap: str
) -> None:
    # librdkafka's own dump of the configuration (debug=conf), through our logger, and its
    # errors when the SASL handshake fails (the test broker speaks no SASL).
    settings = load_settings(
        bootstrap_servers=bootstrap,
        kafka={"security.protocol": "SASL_PLAINTEXT", "sasl.mechanisms": "SCRAM-SHA-512",
               "debug": "conf,security,broker"},
    )  # fmt: skip
    caplog.set_level(logging.DEBUG)
    producer: Producer = make_producer(settings, "test producer")
    consumer = make_consumer(settings, "g", "test consumer")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
        "sasl.password" in r.getMessage() for r in caplog.records
    ):
        producer.poll(0.2)
    consumer.close()
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "sasl.password = [redacted]" in logged  # the configuration was logged
    assert SECRET not in logged


def test_a_process_prints_no_credentials_even_when_it_fails(bootstrap: str, tmp_path: Path) -> None:
    env = settings_env(load_settings(bootstrap_servers=bootstrap))
    env.update(
        FRAUDSTREAM_KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT",
        FRAUDSTREAM_KAFKA_SASL_MECHANISMS="SCRAM-SHA-512",
        FRAUDSTREAM_KAFKA_SASL_USERNAME="scorer",
        FRAUDSTREAM_KAFKA_SASL_PASSWORD=SECRET,
        FRAUDSTREAM_KAFKA_DEBUG="conf,security",
    )
    proc = subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", "topics", "create"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        timeout=120,
    )
    out = proc.stdout.decode() + proc.stderr.decode()
    assert proc.returncode != 0  # the broker speaks no SASL: nothing reachable
    assert "no Kafka broker reachable" in out
    assert SECRET not in out


def _listening_addresses(port: int) -> set[str]:
    """Local addresses with a TCP socket listening on `port` (from /proc/net/tcp{,6})."""
    out = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                out.add(address)
    return out


def test_metrics_listen_on_loopback_by_default_and_the_log_says_where(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="fraudstream")
    metrics = Metrics()
    serve_metrics(metrics, 0)
    (line,) = [r.getMessage() for r in caplog.records if "metrics on" in r.getMessage()]
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    assert line == f"metrics on http://127.0.0.1:{port}/metrics"
    assert _listening_addresses(port) == {"0100007F"}  # 127.0.0.1, nothing else
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        assert resp.status == 200


def test_metrics_listen_where_configured(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="fraudstream")
    serve_metrics(Metrics(), 0, "0.0.0.0")
    (line,) = [r.getMessage() for r in caplog.records if "metrics on" in r.getMessage()]
    port = int(line.rsplit(":", 1)[1].split("/")[0])
    assert line == f"metrics on http://0.0.0.0:{port}/metrics"
    assert _listening_addresses(port) == {"00000000"}
