"""The deployment files agree with the code: docker-compose.yml, Dockerfile, .dockerignore and
infra/deploy/prometheus.yml are parsed (no Docker needed) and checked against the CLI parser,
the settings model and each other."""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import BaseModel

from fraudstream.cli import build_parser
from infra.config import ENV_PREFIX, KAFKA_ENV_PREFIX, Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = ROOT / "Dockerfile"
COMPOSE: dict[str, Any] = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
# Services built from this repository's Dockerfile run the `fraudstream` console script.
APP_SERVICES = sorted(name for name, svc in SERVICES.items() if "build" in svc)
# Ports `score` and `train` serve metrics on when neither the flag nor the env var says
# (fraudstream/commands/processes.py: cmd_score, cmd_train). `produce` serves none by default.
DEFAULT_METRICS_PORTS = {"score": 9101, "train": 9102}


def _argv(service: str) -> list[str]:
    command = SERVICES[service].get("command", [])
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def _env(service: str) -> dict[str, str]:
    env = SERVICES[service].get("environment") or {}
    if isinstance(env, list):  # the `- KEY=value` form
        env = dict(item.split("=", 1) for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _parse(service: str) -> Any:
    argv = _argv(service)
    try:
        return build_parser().parse_args(argv)
    except SystemExit:
        pytest.fail(f"service {service!r}: `fraudstream {shlex.join(argv)}` does not parse")


def _metrics_port(service: str) -> int | None:
    args = _parse(service)
    if getattr(args, "metrics_port", None) is not None:
        return args.metrics_port
    from_env = _env(service).get(ENV_PREFIX + "METRICS_PORT")
    if from_env is not None:
        return int(from_env)
    return DEFAULT_METRICS_PORTS.get(args.command)


def _flags(argv: list[str]) -> dict[str, str | None]:
    """`--name=value`, `--name value` and bare `--name` flags of a command line."""
    out: dict[str, str | None] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        if arg.startswith("--"):
            if "=" in arg:
                name, value = arg.split("=", 1)
                out[name] = value
            elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                out[arg] = argv[i + 1]
                i += 1
            else:
                out[arg] = None
        i += 1
    return out


def _depends_on(service: str) -> dict[str, dict[str, Any]]:
    deps = SERVICES[service].get("depends_on") or {}
    if isinstance(deps, list):
        return {name: {"condition": "service_started"} for name in deps}
    return deps


def _dockerfile_instructions() -> list[tuple[str, str]]:
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def _prometheus_service() -> dict[str, Any]:
    matches = [svc for svc in SERVICES.values() if "prom/prometheus" in svc.get("image", "")]
    assert len(matches) == 1, "expected exactly one prometheus service"
    return matches[0]


def _prometheus_config_path() -> Path:
    for volume in _prometheus_service().get("volumes", []):
        source, target = str(volume).split(":")[:2]
        if target == "/etc/prometheus/prometheus.yml":
            return (ROOT / source).resolve()
    pytest.fail("prometheus service mounts no /etc/prometheus/prometheus.yml")


def _scraped() -> set[tuple[str, int]]:
    """(host, port) of every scrape target, static or found by DNS."""
    config = yaml.safe_load(_prometheus_config_path().read_text())
    out: set[tuple[str, int]] = set()
    for job in config["scrape_configs"]:
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                out.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns.get("type", "SRV") == "A", "A records: SRV needs no port, compose has none"
            out.update((name, int(dns["port"])) for name in dns["names"])
    return out


# --- compose structure ---------------------------------------------------------------------


def test_compose_uses_the_spec_format_and_runs_every_process() -> None:
    assert "version" not in COMPOSE, "the compose spec has no `version:` key"
    commands = {_parse(name).command for name in APP_SERVICES}
    assert {"topics", "produce", "score", "train"} <= commands


def test_app_services_build_this_repository_and_keep_the_entrypoint() -> None:
    for name in APP_SERVICES:
        build = SERVICES[name]["build"]
        context = build if isinstance(build, str) else build.get("context", ".")
        assert (COMPOSE_FILE.parent / context).resolve() == ROOT, name
        assert "entrypoint" not in SERVICES[name], f"{name} must run the `fraudstream` script"


@pytest.mark.parametrize("service", APP_SERVICES)
def test_command_is_a_real_subcommand(service: str) -> None:
    argv = _argv(service)
    assert argv, f"{service} has no command (the image's default only prints help)"
    (subcommands,) = [
        action.choices
        for action in build_parser()._actions
        if isinstance(action, argparse._SubParsersAction)
    ]
    assert argv[0] in subcommands, f"{service}: unknown subcommand {argv[0]!r}"
    _parse(service)


@pytest.mark.parametrize("service", APP_SERVICES)
def test_env_vars_are_settings_fields(
    service: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    env = {k: v for k, v in _env(service).items() if k.startswith(ENV_PREFIX)}
    for key in env:
        if key.startswith(KAFKA_ENV_PREFIX) or key == ENV_PREFIX + "CONFIG":
            continue  # librdkafka pass-through / the settings file: not model fields
        top, *nested = key[len(ENV_PREFIX) :].lower().split("__")
        assert top in Settings.model_fields, f"{service}: {key} is no setting"
        if nested:
            model = Settings.model_fields[top].annotation
            assert isinstance(model, type) and issubclass(model, BaseModel), (
                f"{service}: {key}: {top} has no nested fields"
            )
            assert nested == [nested[0]] and nested[0] in model.model_fields, (
                f"{service}: {key}: {top} has no field {'__'.join(nested)}"
            )
    # And the values are valid: load the settings the way the process will.
    monkeypatch.chdir(tmp_path)  # no stray params.yaml
    for key in [k for k in os.environ if k.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    load_settings()


def test_app_services_start_after_the_topics_exist() -> None:
    topics = [name for name in APP_SERVICES if _parse(name).command == "topics"]
    assert len(topics) == 1
    (topics_service,) = topics
    for name in APP_SERVICES:
        if name == topics_service:
            continue
        dep = _depends_on(name).get(topics_service)
        assert dep == {"condition": "service_completed_successfully"}, name
    # After Kafka is healthy and its users and ACLs exist (a one-shot that waits for it).
    for dep_name, dep in _depends_on(topics_service).items():
        if dep["condition"] == "service_completed_successfully":
            assert SERVICES[dep_name].get("restart") == "no", dep_name
            for inner, inner_dep in _depends_on(dep_name).items():
                assert inner_dep["condition"] == "service_healthy", inner
                assert "healthcheck" in SERVICES[inner], f"{inner} has no healthcheck"
            continue
        assert dep["condition"] == "service_healthy", dep_name
        assert "healthcheck" in SERVICES[dep_name], f"{dep_name} has no healthcheck"


def test_services_reach_kafka_on_its_advertised_listener() -> None:
    kafka_env = {str(k): str(v) for k, v in SERVICES["kafka"]["environment"].items()}
    advertised = {
        url.split("://", 1)[1] for url in kafka_env["KAFKA_ADVERTISED_LISTENERS"].split(",")
    }
    protocols = dict(
        p.split(":") for p in kafka_env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    for url in kafka_env["KAFKA_LISTENERS"].split(","):
        assert url.split("://", 1)[0] in protocols, url
    assert "broker" in kafka_env["KAFKA_PROCESS_ROLES"] and "CLUSTER_ID" in kafka_env  # KRaft
    for name in APP_SERVICES:
        bootstrap = _env(name).get(ENV_PREFIX + "BOOTSTRAP_SERVERS")
        assert bootstrap, f"{name} would start the embedded broker"
        assert set(bootstrap.split(",")) <= advertised, name


def test_mlflow_server_matches_the_clients() -> None:
    mlflow = SERVICES["mlflow"]
    flags = _flags(_argv("mlflow"))
    assert flags.get("--host") == "0.0.0.0"
    assert "--serve-artifacts" in flags, "clients upload artifacts over HTTP, not to a path"
    assert "--default-artifact-root" not in flags
    allowed = [h.strip() for h in (flags.get("--allowed-hosts") or "").split(",")]
    for name in APP_SERVICES:
        uri = urlsplit(_env(name)[ENV_PREFIX + "MLFLOW_TRACKING_URI"])
        assert uri.hostname == "mlflow" and str(uri.port) == flags.get("--port"), name
        # MLflow >= 3.5 rejects requests whose Host header it does not allow.
        assert any(fnmatch.fnmatch(uri.netloc, pattern) for pattern in allowed), uri.netloc
    # The client installed in the image must speak the server's API (MLflow 3 logs models
    # through endpoints a 2.x server lacks).
    server_version = mlflow["image"].rsplit(":v", 1)[1]
    args = dict(rest.split("=", 1) for kw, rest in _dockerfile_instructions() if kw == "ARG")
    assert args.get("MLFLOW_VERSION") == server_version


# --- Dockerfile and .dockerignore ----------------------------------------------------------


def test_dockerfile_installs_the_console_script_as_non_root() -> None:
    instructions = _dockerfile_instructions()
    assert instructions[0] == ("FROM", "python:3.11-slim")
    entrypoint = [json.loads(rest) for kw, rest in instructions if kw == "ENTRYPOINT"]
    assert entrypoint == [["fraudstream"]]
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["fraudstream"] == "fraudstream.cli:main"
    runs = " ".join(rest for kw, rest in instructions if kw == "RUN")
    assert re.search(r"pip install --no-cache-dir \S*src", runs)
    users = [rest for kw, rest in instructions if kw == "USER"]
    assert users and users[-1] not in {"root", "0"}


def test_dockerignore_keeps_the_build_inputs() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {p.rstrip("*") for p in packages}
    for name in needed:
        assert not any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is ignored"
    for name in (".venv", ".git", "mlruns", "mlflow.db", ".fraudstream"):
        assert any(fnmatch.fnmatch(name, p) for p in patterns), f"{name} is sent to Docker"


# --- Prometheus ----------------------------------------------------------------------------


def test_prometheus_config_is_mounted_from_the_repo() -> None:
    path = _prometheus_config_path()
    assert path.is_file() and path.is_relative_to(ROOT), path
    config = yaml.safe_load(path.read_text())
    assert config["global"]["scrape_interval"] == "5s"


def test_metrics_ports_match_the_scrape_targets() -> None:
    served = {(name, port) for name in APP_SERVICES if (port := _metrics_port(name)) is not None}
    scraped = {(host, port) for host, port in _scraped() if host in SERVICES}
    assert served == scraped
    unknown = {host for host, _ in _scraped()} - set(SERVICES) - {"localhost"}
    assert not unknown, f"scrape targets that are no compose service: {unknown}"


def test_scaled_services_are_found_by_dns_and_publish_no_host_ports() -> None:
    config = yaml.safe_load(_prometheus_config_path().read_text())
    by_dns = {
        name
        for job in config["scrape_configs"]
        for dns in job.get("dns_sd_configs", [])
        for name in dns["names"]
    }
    assert "scorer" in by_dns
    for name in by_dns:
        assert "ports" not in SERVICES[name], f"{name} replicas would clash on host ports"
        assert "container_name" not in SERVICES[name], f"{name} could not be scaled"


# --- closed by default ---------------------------------------------------------------------

ENV_REFERENCE = re.compile(r"^\$\{(\w+):\?[^}]+\}$")  # ${VAR:?message}: required, no default


def _kafka_env_map() -> dict[str, str]:
    return {str(k): str(v) for k, v in SERVICES["kafka"]["environment"].items()}


def _init_script() -> str:
    (init,) = [n for n, svc in SERVICES.items() if "kafka-acls.sh" in str(svc.get("command"))]
    assert SERVICES[init].get("network_mode") == "service:kafka", "the loopback listener"
    return "\n".join(str(part) for part in SERVICES[init]["command"])


def _acls() -> dict[tuple[str, str], set[str]]:
    """(operation, "topic:<name>" / "group:<name>") -> principals, from the kafka-init script."""
    out: dict[tuple[str, str], set[str]] = {}
    for line in _init_script().splitlines():
        words = shlex.split(line.strip())
        if not words or words[0] != "acl":
            continue
        user = words[1]
        flags = words[2:]
        op = flags[flags.index("--operation") + 1]
        prefixed = "--resource-pattern-type" in flags
        for i, word in enumerate(flags):
            if word in ("--topic", "--group"):
                name = flags[i + 1] + ("*" if prefixed else "")
                out.setdefault((op, f"{word[2:]}:{name}"), set()).add(user)
    return out


def _users() -> set[str]:
    return {
        shlex.split(line.strip())[1]
        for line in _init_script().splitlines()
        if line.strip().startswith("user ")
    }


def test_published_ports_listen_on_loopback_only() -> None:
    for name, svc in SERVICES.items():
        for port in svc.get("ports", []):
            assert str(port).startswith("127.0.0.1:"), f"{name} publishes {port} on every interface"


def test_kafka_authenticates_and_authorises_every_client() -> None:
    env = _kafka_env_map()
    protocols = dict(p.split(":") for p in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(","))
    for url in env["KAFKA_LISTENERS"].split(","):
        name, address = url.split("://", 1)
        if protocols[name] == "PLAINTEXT":  # unauthenticated: the container's loopback only
            assert address.startswith("127.0.0.1:"), url
        else:
            assert protocols[name] in ("SASL_PLAINTEXT", "SASL_SSL"), url
    assert env["KAFKA_SASL_ENABLED_MECHANISMS"] == "SCRAM-SHA-512"
    assert env["KAFKA_AUTHORIZER_CLASS_NAME"].endswith("StandardAuthorizer")
    assert env["KAFKA_ALLOW_EVERYONE_IF_NO_ACL_FOUND"] == "false"
    for name in APP_SERVICES:
        client = _env(name)
        assert client[KAFKA_ENV_PREFIX + "SECURITY_PROTOCOL"].startswith("SASL_"), name
        assert client[KAFKA_ENV_PREFIX + "SASL_MECHANISMS"] == "SCRAM-SHA-512", name
        assert client[KAFKA_ENV_PREFIX + "SASL_USERNAME"] in _users(), name
        assert ENV_REFERENCE.match(client[KAFKA_ENV_PREFIX + "SASL_PASSWORD"]), name


def test_acls_give_each_topic_its_only_writers() -> None:
    acls = _acls()
    writers = {k[1]: v for k, v in acls.items() if k[0] == "Write"}
    assert writers["topic:model-updates"] == {"trainer"}
    assert writers["topic:labels"] == {"investigations"}
    assert writers["topic:scores"] == {"scorer"}
    # What each process does is allowed (default topic and group names).
    topics = Settings().topics
    user = {_parse(n).command: _env(n)[KAFKA_ENV_PREFIX + "SASL_USERNAME"] for n in APP_SERVICES}
    needs = {
        "score": [("Read", f"topic:{topics.transactions}"), ("Read", "group:fraudstream-scorer"),
                  ("Read", f"topic:{topics.model_updates}"), ("Write", f"topic:{topics.scores}"),
                  ("Write", f"topic:{topics.transactions_dlq}"),
                  ("Read", "group:fraudstream-model-reader-*")],
        "train": [("Read", f"topic:{topics.scores}"), ("Read", f"topic:{topics.labels}"),
                  ("Read", "group:fraudstream-trainer*"),
                  ("Write", f"topic:{topics.model_updates}"),
                  ("Write", f"topic:{topics.labels_dlq}")],
        "produce": [("Write", f"topic:{topics.transactions}"), ("Write", f"topic:{topics.labels}")],
    }  # fmt: skip
    for command, allowed in needs.items():
        for acl in allowed:
            assert user[command] in acls.get(acl, set()), (command, acl)
    assert "admin" in _kafka_env_map()["KAFKA_SUPER_USERS"]
    assert user["topics"] == "admin"  # creating topics is the admin's


def test_credentials_come_from_the_environment_and_are_all_listed() -> None:
    text = COMPOSE_FILE.read_text()
    referenced = set(re.findall(r"\$\{(\w+)", text))
    for name, svc in SERVICES.items():
        for key, value in (svc.get("environment") or {}).items():
            if re.search(r"PASSWORD|SECRET", key):
                assert ENV_REFERENCE.match(str(value)), f"{name}: {key} is not taken from .env"
    listed = {
        line.split("=", 1)[0]
        for line in (ROOT / ".env.example").read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert referenced == listed
    for ignore in (".gitignore", ".dockerignore"):
        assert ".env" in (ROOT / ignore).read_text().split(), f".env is not in {ignore}"


def test_mlflow_and_grafana_require_a_login() -> None:
    flags = _flags(_argv("mlflow"))
    assert flags.get("--app-name") == "basic-auth"
    env = _env("mlflow")
    assert ENV_REFERENCE.match(env["MLFLOW_AUTH_ADMIN_PASSWORD"])
    mounts = {
        target: (ROOT / source).resolve()
        for source, target in (str(v).split(":")[:2] for v in SERVICES["mlflow"]["volumes"])
        if source.startswith(".")
    }
    auth_ini = mounts[env["MLFLOW_AUTH_CONFIG_PATH"]].read_text()
    assert re.search(r"^default_permission = NO_PERMISSIONS$", auth_ini, re.MULTILINE)
    for name in APP_SERVICES:
        if _parse(name).command in ("train", "score"):
            assert ENV_REFERENCE.match(_env(name)["MLFLOW_TRACKING_PASSWORD"]), name
    (grafana,) = [n for n, svc in SERVICES.items() if "grafana/" in str(svc.get("image"))]
    genv = _env(grafana)
    assert genv["GF_AUTH_ANONYMOUS_ENABLED"] == "false"
    assert ENV_REFERENCE.match(genv["GF_SECURITY_ADMIN_PASSWORD"])


def test_metrics_listen_on_the_compose_network_only_where_configured() -> None:
    assert Settings().metrics_host == "127.0.0.1"  # the default outside a container
    for name in APP_SERVICES:
        if _metrics_port(name) is not None:
            assert _env(name).get(ENV_PREFIX + "METRICS_HOST") == "0.0.0.0", name
            assert "ports" not in SERVICES[name], f"{name}: metrics are not published"
