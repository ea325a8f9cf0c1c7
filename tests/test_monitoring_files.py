"""The monitoring files are valid and agree with the code and each other: alert rules
(infra/deploy/alerts.yml, unit-tested by alerts_test.yml), the Prometheus and Alertmanager
configurations, the Grafana provisioning and dashboard, their wiring in docker-compose.yml,
and every `fraudstream_*` metric they use is one a running process really serves."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "infra" / "deploy"
ALERTS = DEPLOY / "alerts.yml"
ALERTS_TEST = DEPLOY / "alerts_test.yml"
PROMETHEUS_CONFIG = DEPLOY / "prometheus.yml"
ALERTMANAGER_CONFIG = DEPLOY / "alertmanager.yml"
GRAFANA = DEPLOY / "grafana"
DASHBOARD = GRAFANA / "dashboards" / "fraudstream.json"
DATASOURCES = GRAFANA / "provisioning" / "datasources" / "prometheus.yml"
DASHBOARD_PROVIDERS = GRAFANA / "provisioning" / "dashboards" / "fraudstream.yml"
SERVICES: dict[str, dict[str, Any]] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())[
    "services"
]

# Grafana's interval variables, replaced by a duration to evaluate a panel's query elsewhere.
GRAFANA_VARIABLES = ("$__rate_interval", "$__interval", "$__range")
METRIC_NAME = re.compile(r"(?<![\w:])fraudstream_\w+(?![\w:])")
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")


# --- helpers (tests/test_prometheus.py uses them too) --------------------------------------


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"true", "1", "yes"}


def require_binary(name: str) -> str:
    """Path of a Prometheus tool; skipped when absent, except under CI where it must be there."""
    path = shutil.which(name)
    if path is None:
        reason = f"`{name}` is not installed (Debian package `prometheus`; .ci/run installs it)"
        if in_ci():
            pytest.fail(reason)
        pytest.skip(reason)
    return path


def metrics_port(proc: subprocess.Popen[bytes], log_path: Path, timeout_s: float = 60.0) -> int:
    """The port a `fraudstream ... --metrics-port 0` process bound, read from its log."""
    pattern = re.compile(rb"metrics on http://127\.0\.0\.1:(\d+)/metrics")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        match = pattern.search(log_path.read_bytes())
        if match:
            return int(match.group(1))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    pytest.fail(f"no metrics port in {log_path.name}:\n{log_path.read_text()[-3000:]}")


def scrape(port: int, timeout_s: float = 5.0) -> str:
    url = f"http://127.0.0.1:{port}/metrics"
    with urllib.request.urlopen(url, timeout=timeout_s) as response:  # noqa: S310 (loopback)
        return response.read().decode()


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Every sample of a /metrics page: (name, labels) -> value."""
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def served_names(text: str) -> dict[str, str]:
    """Every metric name a /metrics page serves -> its type. Families with labels but no
    child yet still have their `# HELP`/`# TYPE` lines; the parser drops a counter's `_total`
    from the family name, so it is added back."""
    out: dict[str, str] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = family.type
        if family.type == "counter":
            out[family.name + "_total"] = family.type
        for s in family.samples:
            out[s.name] = family.type
    return out


def dashboard_exprs() -> list[str]:
    def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        for panel in items:
            yield panel
            yield from panels(panel.get("panels", []))

    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in panels(dashboard["panels"]) for t in p.get("targets", [])]


def alert_rules() -> list[dict[str, Any]]:
    return [
        rule for group in yaml.safe_load(ALERTS.read_text())["groups"] for rule in group["rules"]
    ]


def grafana_to_promql(expr: str, duration: str) -> str:
    for variable in GRAFANA_VARIABLES:
        expr = expr.replace(variable, duration)
    return expr


def referenced_names(expr: str) -> set[str]:
    without_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # label values are no names
    return set(METRIC_NAME.findall(without_strings))


def _promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_binary("promtool")
    result = subprocess.run(
        [tool, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, f"promtool {' '.join(args)}:\n{result.stdout}{result.stderr}"
    return result


def _mounts(service: str) -> dict[str, Path]:
    """Container path -> repository path of a service's bind mounts."""
    out = {}
    for volume in SERVICES[service].get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if source.startswith("."):
            out[target] = (ROOT / source).resolve()
    return out


def _service_with_image(prefix: str) -> str:
    names = [n for n, svc in SERVICES.items() if str(svc.get("image", "")).startswith(prefix)]
    assert len(names) == 1, f"expected one service running {prefix}, found {names}"
    return names[0]


# --- promtool ------------------------------------------------------------------------------


def test_alert_rules_are_valid() -> None:
    _promtool("check", "rules", str(ALERTS))


def test_alert_rules_pass_their_unit_tests() -> None:
    _promtool("test", "rules", str(ALERTS_TEST))


def test_prometheus_config_is_valid() -> None:
    result = _promtool("check", "config", str(PROMETHEUS_CONFIG))
    assert "1 rule files found" in result.stdout + result.stderr


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": grafana_to_promql(expr, "1m")}
                    for i, expr in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard_rules.yml"
    path.write_text(yaml.safe_dump(rules))
    _promtool("check", "rules", str(path))


# --- alert rules ---------------------------------------------------------------------------


def test_every_alert_has_a_duration_a_severity_and_annotations() -> None:
    alerts = [r for r in alert_rules() if "alert" in r]
    names = [r["alert"] for r in alerts]
    assert len(names) == len(set(names)), "duplicate alert names"
    for rule in alerts:
        assert rule.get("for"), f"{rule['alert']}: no `for:` (one bad scrape would page)"
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"].get("summary"), rule["alert"]
        assert rule["annotations"].get("description"), rule["alert"]


def test_every_alert_is_unit_tested_firing_and_silent() -> None:
    tests = yaml.safe_load(ALERTS_TEST.read_text())
    assert [Path(f).name for f in tests["rule_files"]] == [ALERTS.name]
    fired: set[str] = set()
    silent: set[str] = set()
    for case in tests["tests"]:
        for check in case.get("alert_rule_test", []):
            (fired if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = {r["alert"] for r in alert_rules() if "alert" in r}
    assert alerts <= fired, f"never shown firing: {alerts - fired}"
    assert alerts <= silent, f"never shown silent: {alerts - silent}"


def test_the_requested_conditions_are_covered() -> None:
    exprs = {r["alert"]: r["expr"] for r in alert_rules() if "alert" in r}
    joined = "\n".join(exprs.values())
    for needle in (
        "fraudstream_consumer_lag",  # lag growing
        "deriv(fraudstream_consumer_lag",
        "rate(fraudstream_transactions_scored_total",  # nothing scored
        "fraudstream_fraud_rate",  # out of its band
        "fraudstream_model_roc_auc",  # AUC low / dropped
        "rate(fraudstream_dlq_total",  # dead letters
        "up{",  # targets down
        "fraudstream_snapshots_held_total",  # guardrails holding the model back
        "fraudstream_snapshots_refused_total",  # forged or tampered snapshots
        'cause="conflict"',  # labels contradicting each other
        "fraudstream_labels_refused_total",  # quarantined label sources
    ):
        assert needle in joined, needle


# --- configuration wiring ------------------------------------------------------------------


def test_prometheus_loads_the_mounted_rules_and_sends_to_alertmanager() -> None:
    prometheus = _service_with_image("prom/prometheus")
    config = yaml.safe_load(PROMETHEUS_CONFIG.read_text())
    mounts = _mounts(prometheus)
    config_dir = Path("/etc/prometheus")
    assert mounts[str(config_dir / "prometheus.yml")] == PROMETHEUS_CONFIG
    assert config["rule_files"], "no rule files"
    for rule_file in config["rule_files"]:
        in_container = config_dir / rule_file  # relative paths: from the config's directory
        assert mounts.get(str(in_container)) == (PROMETHEUS_CONFIG.parent / rule_file).resolve()
    alertmanager = _service_with_image("prom/alertmanager")
    (am,) = config["alerting"]["alertmanagers"]
    targets = [t for static in am["static_configs"] for t in static["targets"]]
    assert targets == [f"{alertmanager}:9093"]  # the image listens on :9093
    assert alertmanager in SERVICES[prometheus]["depends_on"]


def test_alertmanager_config_routes_to_a_defined_receiver() -> None:
    alertmanager = _service_with_image("prom/alertmanager")
    assert _mounts(alertmanager)["/etc/alertmanager/alertmanager.yml"] == ALERTMANAGER_CONFIG, (
        "the image reads /etc/alertmanager/alertmanager.yml"
    )
    config = yaml.safe_load(ALERTMANAGER_CONFIG.read_text())
    receivers = {r["name"] for r in config["receivers"]}
    assert config["route"]["receiver"] in receivers
    for route in config["route"].get("routes", []):
        assert route["receiver"] in receivers


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard() -> None:
    grafana = _service_with_image("grafana/grafana")
    svc = SERVICES[grafana]
    assert svc["image"] == "grafana/grafana:11.2.0"
    assert "127.0.0.1:3000:3000" in [str(p) for p in svc["ports"]]
    mounts = _mounts(grafana)
    assert mounts["/etc/grafana/provisioning"] == (GRAFANA / "provisioning").resolve()

    (datasource,) = yaml.safe_load(DATASOURCES.read_text())["datasources"]
    assert datasource["type"] == "prometheus"
    prometheus = _service_with_image("prom/prometheus")
    assert datasource["url"] == f"http://{prometheus}:9090"
    scrape_interval = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["global"]["scrape_interval"]
    assert datasource["jsonData"]["timeInterval"] == scrape_interval

    (provider,) = yaml.safe_load(DASHBOARD_PROVIDERS.read_text())["providers"]
    assert provider["type"] == "file"
    assert mounts[provider["options"]["path"]] == DASHBOARD.parent.resolve()
    home = svc["environment"].get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    assert home == f"{provider['options']['path']}/{DASHBOARD.name}"

    # Every panel and query uses the provisioned datasource.
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for item in [panel, *panel.get("targets", [])]:
            if "datasource" in item:
                assert item["datasource"] == {"type": "prometheus", "uid": datasource["uid"]}


def test_dashboard_layout_and_panels() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 36
    ids = [p["id"] for p in dashboard["panels"]]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in dashboard["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["w"] > 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["targets"] and all(t["expr"] for t in panel["targets"]), panel["title"]
            refs = [t["refId"] for t in panel["targets"]]
            assert len(refs) == len(set(refs)), panel["title"]
    exprs = "\n".join(dashboard_exprs())
    # The panels asked for: throughput produced/scored, lag per partition, fraud rate, latency
    # p50/p99 from the histogram, DLQ by reason, labels learned, model version, AUC/precision/
    # recall, join buffer.
    for needle in (
        "fraudstream_transactions_produced_total",
        "fraudstream_transactions_scored_total",
        "by (group, topic, partition) (fraudstream_consumer_lag)",
        "fraudstream_fraud_rate",
        "histogram_quantile(0.5, sum by (le) (rate(fraudstream_score_latency_seconds_bucket",
        "histogram_quantile(0.99, sum by (le) (rate(fraudstream_score_latency_seconds_bucket",
        "by (topic, reason) (rate(fraudstream_dlq_total",
        "fraudstream_labels_learned_total",
        "fraudstream_model_version",
        "fraudstream_model_roc_auc",
        "fraudstream_model_precision",
        "fraudstream_model_recall",
        "fraudstream_join_pending",
    ):
        assert needle in exprs, needle


# --- metric names are real -----------------------------------------------------------------


@pytest.mark.integration
def test_every_metric_used_is_served_by_a_running_process(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    env = settings_env(settings)
    served: dict[str, str] = {}
    with (
        fraudstream_process(["score", "--metrics-port", "0"], env, tmp_path / "score.log") as sc,
        fraudstream_process(
            ["train", "--no-mlflow", "--metrics-port", "0"], env, tmp_path / "train.log"
        ) as tr,
    ):
        for proc, log in ((sc, "score.log"), (tr, "train.log")):
            served.update(served_names(scrape(metrics_port(proc, tmp_path / log))))
    # The check has teeth: labelled families with no child yet are there, invented names not.
    assert served["fraudstream_dlq_total"] == "counter"
    assert served["fraudstream_consumer_lag"] == "gauge"
    assert served["fraudstream_score_latency_seconds"] == "histogram"
    assert "fraudstream_no_such_metric" not in served

    used: dict[str, set[str]] = {}
    for rule in alert_rules():
        for name in referenced_names(rule["expr"]):
            used.setdefault(name, set()).add(f"alerts.yml {rule.get('alert') or rule['record']}")
    for expr in dashboard_exprs():
        for name in referenced_names(expr):
            used.setdefault(name, set()).add(f"dashboard: {expr}")
    assert len(used) >= 15, sorted(used)

    def base(name: str) -> str:
        for suffix in HISTOGRAM_SUFFIXES:
            if name.endswith(suffix) and served.get(name[: -len(suffix)]) == "histogram":
                return name[: -len(suffix)]
        return name

    unknown = {
        n: sorted(where) for n, where in used.items() if n not in served and base(n) not in served
    }
    assert not unknown, f"metrics no process serves: {unknown}"

    # And each is used as what it is: rate()/increase() of counters and histogram parts,
    # histogram_quantile() of buckets, deriv() of gauges.
    exprs = [r["expr"] for r in alert_rules()] + dashboard_exprs()
    for expr in exprs:
        for name in re.findall(r"\b(?:rate|irate|increase)\(\s*(fraudstream_\w+)", expr):
            assert served[name] in {"counter", "histogram"}, f"rate of a {served[name]}: {expr}"
        for name in re.findall(r"\bderiv\(\s*(fraudstream_\w+)", expr):
            assert served[name] == "gauge", f"deriv of a {served[name]}: {expr}"
        if "histogram_quantile" in expr:
            assert re.search(r"fraudstream_\w+_bucket", expr), expr
