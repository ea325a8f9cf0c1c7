"""A real Prometheus scrapes a real scorer and trainer: it stores what the processes serve,
evaluates the alert rules and the dashboard's queries without error, marks a stopped scorer
down, and sees the backlog the stopped scorer accumulated fall back to 0 once it resumes.

About the pause: consumer lag is reported by the consumer itself (librdkafka statistics), so a
stopped scorer reports nothing. Prometheus then records the scorer as down (`up == 0`, the
FraudstreamTargetDown alert goes pending) and its lag series go stale. The lag that built up
while it was stopped becomes visible when it resumes, and Prometheus sees it fall as the
scorer catches up. The scorer runs with `scorer.batch_size=1` (a setting, not a test hook)
so that catching up takes a few seconds instead of happening between two 1 s scrapes.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from confluent_kafka import Producer

import tests.test_monitoring_files as monitoring
from infra.broker import free_port, port_open
from infra.metrics import Metrics
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, wait_for

pytestmark = pytest.mark.integration

PAUSE_BACKLOG = 30_000  # transactions produced while the scorer is stopped


class PrometheusServer:
    def __init__(self, base_url: str, log_path: Path) -> None:
        self.base_url = base_url
        self.log_path = log_path

    def api(self, path: str, **params: str) -> Any:
        url = f"{self.base_url}/api/v1/{path}"
        if params:
            url += "?" + urllib.parse.urlencode(params)
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
            body = json.loads(response.read())
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        data = self.api("query", query=expr)
        assert data["resultType"] == "vector", data
        return data["result"]

    def scalar(self, expr: str) -> float | None:
        """The single value of an expression, None if it has no result."""
        result = self.query(expr)
        assert len(result) <= 1, result
        return float(result[0]["value"][1]) if result else None


@contextmanager
def prometheus_server(
    tmp_path: Path, targets: dict[str, int], rule_files: list[Path]
) -> Iterator[PrometheusServer]:
    """The `prometheus` binary scraping each job's 127.0.0.1:port every second."""
    binary = monitoring.require_binary("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(p) for p in rule_files],
        "scrape_configs": [
            {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{port}"]}]}
            for job, port in targets.items()
        ],
    }
    config_path = tmp_path / "prometheus.yml"
    config_path.write_text(yaml.safe_dump(config))
    port = free_port()
    log_path = tmp_path / "prometheus.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config_path}",
                f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        server = PrometheusServer(f"http://127.0.0.1:{port}", log_path)
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"prometheus exited:\n{log_path.read_text()[-3000:]}"
            if port_open("127.0.0.1", port):
                try:
                    with urllib.request.urlopen(f"{server.base_url}/-/ready", timeout=2):  # noqa: S310
                        break
                except OSError:
                    pass
            assert time.monotonic() < deadline, f"prometheus not ready:\n{log_path.read_text()}"
            time.sleep(0.2)
        yield server
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def lag_by_partition(
    series: dict[tuple[str, frozenset[tuple[str, str]]], float],
) -> dict[tuple[str, str, str], float]:
    return {
        (labels["group"], labels["topic"], labels["partition"]): value
        for (name, frozen), value in series.items()
        if name == "fraudstream_consumer_lag"
        for labels in [dict(frozen)]
    }


def test_prometheus_stores_what_processes_serve_and_sees_a_paused_scorers_backlog(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    monitoring.require_binary("prometheus")
    started = time.monotonic()
    settings = make_settings()
    env = settings_env(settings)
    # batch_size 1: see the module docstring. A low threshold: a model trained on a couple of
    # thousand labels flags a clear share of the traffic, so the fraud rate compared is not 0.
    scorer_env = {
        **env,
        "FRAUDSTREAM_SCORER__BATCH_SIZE": "1",
        "FRAUDSTREAM_SCORER__THRESHOLD": "0.2",
    }
    group = settings.scorer.group_id

    def produce(count: int, seed: int, **options: Any) -> None:
        opts = ProduceOptions(count=count, seed=seed, label_delay_s=0.0, **options)
        report = run_producer(settings, opts, Metrics(), threading.Event())
        assert report.transactions == count

    with (
        fraudstream_process(
            ["train", "--no-mlflow", "--metrics-port", "0"], env, tmp_path / "train.log"
        ) as train,
        fraudstream_process(
            ["score", "--metrics-port", "0"], scorer_env, tmp_path / "score.log"
        ) as score,
    ):
        score_port = monitoring.metrics_port(score, tmp_path / "score.log")
        train_port = monitoring.metrics_port(train, tmp_path / "train.log")

        def served() -> tuple[dict[Any, float], dict[Any, float]]:
            """What the scorer and the trainer serve (every process serves every metric)."""
            return (
                monitoring.samples(monitoring.scrape(score_port)),
                monitoring.samples(monitoring.scrape(train_port)),
            )

        def scorer_value(name: str) -> float:
            return monitoring.samples(monitoring.scrape(score_port))[(name, frozenset())]

        def trainer_value(name: str) -> float:
            return monitoring.samples(monitoring.scrape(train_port))[(name, frozenset())]

        with prometheus_server(
            tmp_path, {"scorer": score_port, "trainer": train_port}, [monitoring.ALERTS]
        ) as prom:
            # 1. Traffic with labels; once the trainer's model is served, more traffic, so
            #    that the scorer flags some of it. One malformed record for the DLQ series.
            produce(2000, seed=7, rate=5000, fraud_rate=0.05)
            raw = Producer({"bootstrap.servers": settings.bootstrap})
            raw.produce(settings.topics.transactions, b"{not json", b"card-y")
            raw.flush(10)
            wait_for(
                "the trainer to learn the labels",
                lambda: trainer_value("fraudstream_labels_learned_total") >= 2000,
                60,
            )
            version = max(trainer_value("fraudstream_model_version"), 1)
            wait_for(
                f"the scorer to serve model v{version:.0f}",
                lambda: scorer_value("fraudstream_model_version") >= version,
                60,
            )
            produce(2000, seed=8, rate=5000, fraud_rate=0.05)
            wait_for(
                "every transaction scored",
                lambda: scorer_value("fraudstream_transactions_scored_total") >= 4000,
                60,
            )

            # 2. Prometheus holds exactly what the processes serve, once nothing moves.
            last_compared: dict[str, Any] = {}

            def consistent() -> tuple[dict[Any, float], float, dict[Any, float]] | None:
                direct, from_trainer = served()
                direct_lag = {**lag_by_partition(direct), **lag_by_partition(from_trainer)}
                stored_lag = {
                    (m["group"], m["topic"], m["partition"]): float(r["value"][1])
                    for r in prom.query("fraudstream_consumer_lag")
                    for m in [r["metric"]]
                }
                direct_rate = direct[("fraudstream_fraud_rate", frozenset())]
                stored_rate = prom.scalar('fraudstream_fraud_rate{job="scorer"}')
                last_compared.update(
                    served_lag=direct_lag,
                    stored_lag=stored_lag,
                    served_rate=direct_rate,
                    stored_rate=stored_rate,
                )
                if (
                    direct_lag
                    and stored_lag == direct_lag
                    and not any(direct_lag.values())
                    and stored_rate is not None
                    and abs(stored_rate - direct_rate) < 1e-9
                ):
                    return direct_lag, direct_rate, direct
                return None

            lag, fraud_rate, direct = wait_for(
                "Prometheus to store the served lag and fraud rate",
                consistent,
                30,
                detail=lambda: last_compared,
            )
            groups = {g for g, _, _ in lag}
            assert groups == {group, settings.trainer.group_id}, lag
            topics = {t for g, t, _ in lag if g == group}
            assert topics == {settings.topics.transactions}
            scored = direct[("fraudstream_transactions_scored_total", frozenset())]
            flagged = direct[("fraudstream_transactions_flagged_total", frozenset())]
            assert flagged > 0, "the trained model flagged nothing: the fraud rate says little"
            if time.monotonic() - started < 50:  # every score still inside the 60 s window
                assert fraud_rate == pytest.approx(flagged / scored)

            # 3. Stop the scorer and fill its backlog: Prometheus sees it down, its lag is
            #    not reported, and the down-alert goes pending.
            assert prom.scalar(f'sum(fraudstream_consumer_lag{{group="{group}"}})') == 0
            score.send_signal(signal.SIGSTOP)
            try:
                produce(PAUSE_BACKLOG, seed=9, rate=1e6, label_coverage=0.0, wait_for_labels=False)
                wait_for("the scorer down", lambda: prom.scalar('up{job="scorer"}') == 0, 15)
                assert prom.query(f'fraudstream_consumer_lag{{group="{group}"}}') == [], (
                    "a stopped scorer's lag series should be stale"
                )
                assert prom.scalar('up{job="trainer"}') == 1
                wait_for(
                    "FraudstreamTargetDown pending",
                    lambda: prom.query(
                        'ALERTS{alertname="FraudstreamTargetDown", job="scorer", '
                        'alertstate="pending"}'
                    ),
                    10,
                )
            finally:
                score.send_signal(signal.SIGCONT)

            # 4. Resumed: the backlog appears and falls to 0 as the scorer catches up.
            seen: list[float] = []

            def caught_up() -> bool:
                value = prom.scalar(f'sum(fraudstream_consumer_lag{{group="{group}"}})')
                if value is not None and (not seen or seen[-1] != value):
                    seen.append(value)
                return bool(seen) and max(seen) > 0 and seen[-1] == 0

            wait_for("the scorer's lag to rise and fall back to 0", caught_up, 60)
            peak = seen.index(max(seen))
            assert max(seen) >= PAUSE_BACKLOG / 3, seen
            falling = seen[peak:]
            assert falling == sorted(falling, reverse=True), f"lag did not only fall: {seen}"
            assert scorer_value("fraudstream_transactions_scored_total") >= 4000 + PAUSE_BACKLOG

            # 5. The alert rules evaluate cleanly on real data, and every dashboard query
            #    returns a result (evictions from the join buffer: none happen here).
            groups_state = prom.api("rules")["groups"]
            rules = [r for g in groups_state for r in g["rules"]]
            assert len(rules) == len(monitoring.alert_rules())
            for rule in rules:
                assert rule["health"] == "ok", rule
            for expr in monitoring.dashboard_exprs():
                result = prom.query(monitoring.grafana_to_promql(expr, "10s"))
                if "join_evicted" not in expr:
                    assert result, f"dashboard query without data: {expr}"

            assert score.poll() is None and train.poll() is None, "a process died"
    assert time.monotonic() - started < 90
