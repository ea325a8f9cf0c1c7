"""The Kubernetes manifests (infra/deploy/k8s/): every object valid against the Kubernetes
schemas offline (`kubernetes-validate`), the KEDA and Prometheus Operator objects checked
structurally, and what they say about the code true of the code: image and entry point,
CLI flags, ports, probe paths, settings names, topic and group names, Prometheus jobs.
Overlays are applied as kustomize applies them (strategic merge by kind and name; containers
by name) and checked again."""

from __future__ import annotations

import copy
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from pydantic import BaseModel

from fraudstream.api.app import create_app
from fraudstream.cli import build_parser
from infra import k8s_rules
from infra.config import ScorerSettings, Settings, Topics

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "infra" / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAYS = sorted(p.parent for p in K8S.glob("overlays/*/kustomization.yaml"))
K8S_VERSION = "1.30.0"
CRD_KINDS = {"ScaledObject", "ServiceMonitor", "PrometheusRule"}

Doc = dict[str, Any]


def _docs(path: Path) -> list[Doc]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _key(doc: Doc) -> tuple[str, str]:
    return doc["kind"], doc["metadata"]["name"]


def _merge(base: Any, patch: Any) -> Any:
    """Strategic merge as kustomize does it for these patches: maps merged, lists of named
    items (containers) merged by name, other lists replaced."""
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for k, v in patch.items():
            out[k] = _merge(base[k], v) if k in base else copy.deepcopy(v)
        return out
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(i, dict) and "name" in i for i in base + patch)
    ):
        by_name = {i["name"]: i for i in base}
        merged = [_merge(by_name[i["name"]], i) if i["name"] in by_name else i for i in patch]
        names = {i["name"] for i in patch}
        return merged + [i for i in base if i["name"] not in names]
    return copy.deepcopy(patch)


def build(directory: Path) -> dict[tuple[str, str], Doc]:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    objects: dict[tuple[str, str], Doc] = {}
    for ref in kustomization.get("resources", []):
        target = directory / ref
        if target.is_dir():
            objects.update(build(target))
        else:
            for doc in _docs(target):
                objects[_key(doc)] = doc
    for patch in kustomization.get("patches", []):
        for doc in _docs(directory / patch["path"]):
            assert _key(doc) in objects, f"{patch['path']} patches {_key(doc)}: not in the base"
            objects[_key(doc)] = _merge(objects[_key(doc)], doc)
    return objects


BUILDS = {"base": build(BASE), **{f"overlays/{p.name}": build(p) for p in OVERLAYS}}


def _containers(objects: dict[tuple[str, str], Doc]) -> list[tuple[Doc, Doc]]:
    return [
        (doc, c)
        for doc in objects.values()
        if doc["kind"] in ("Deployment", "Job")
        for c in doc["spec"]["template"]["spec"]["containers"]
    ]


def test_every_base_file_is_listed_in_the_kustomization() -> None:
    listed = set(yaml.safe_load((BASE / "kustomization.yaml").read_text())["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert {p.name for p in OVERLAYS} >= {"dev", "production"}


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_every_builtin_object_is_valid_against_the_kubernetes_schemas(name: str) -> None:
    objects = BUILDS[name]
    builtin = [d for d in objects.values() if d["kind"] not in CRD_KINDS]
    assert len(builtin) >= 10
    for doc in builtin:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


@pytest.mark.parametrize("name", sorted(BUILDS))
def test_keda_scales_the_scorer_on_transactions_lag_up_to_one_replica_per_partition(
    name: str,
) -> None:
    objects = BUILDS[name]
    so = objects[("ScaledObject", "scorer")]
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    target = spec["scaleTargetRef"]["name"]
    assert ("Deployment", target) in objects
    assert "replicas" not in objects[("Deployment", target)]["spec"], "KEDA owns the count"
    partitions = int(objects[("ConfigMap", "fraudstream-config")]["data"]["FRAUDSTREAM_PARTITIONS"])
    assert spec["maxReplicaCount"] == partitions
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "kafka"
    meta = trigger["metadata"]
    assert meta["topic"] == Topics().transactions
    assert meta["consumerGroup"] == ScorerSettings().group_id
    assert int(meta["lagThreshold"]) > 0
    assert all(isinstance(v, str) for v in meta.values()), "KEDA metadata values are strings"
    config = objects[("ConfigMap", "fraudstream-config")]["data"]
    assert meta["bootstrapServers"] == config["FRAUDSTREAM_BOOTSTRAP_SERVERS"]


def test_trainer_is_one_replica_replaced_by_recreate_and_never_autoscaled() -> None:
    for objects in BUILDS.values():
        trainer = objects[("Deployment", "trainer")]
        assert trainer["spec"]["replicas"] == 1
        assert trainer["spec"]["strategy"] == {"type": "Recreate"}
        scaled = {
            d["spec"]["scaleTargetRef"]["name"]
            for d in objects.values()
            if d["kind"] in ("ScaledObject", "HorizontalPodAutoscaler")
        }
        assert "trainer" not in scaled


def test_api_has_an_hpa_and_probes_on_routes_the_app_serves() -> None:
    paths = {getattr(r, "path", None) for r in create_app(Settings()).routes}
    for objects in BUILDS.values():
        hpa = objects[("HorizontalPodAutoscaler", "api")]
        assert hpa["spec"]["scaleTargetRef"] == {
            "apiVersion": "apps/v1", "kind": "Deployment", "name": "api",
        }  # fmt: skip
        assert hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
        (api,) = objects[("Deployment", "api")]["spec"]["template"]["spec"]["containers"]
        assert api["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert api["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for _doc, c in _containers(objects):
            for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                get = c.get(probe, {}).get("httpGet")
                if get:
                    if c["name"] == "api":
                        assert get["path"] in paths
                    else:
                        assert get["path"] == "/metrics"
                    assert get["port"] in {p["name"] for p in c["ports"]}


def _flag(args: list[str], flag: str) -> str:
    return args[args.index(flag) + 1]


def test_containers_run_the_image_entry_point_with_valid_flags_and_their_ports() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert 'ENTRYPOINT ["fraudstream"]' in dockerfile
    images = yaml.safe_load((BASE / "kustomization.yaml").read_text())["images"]
    assert [i["name"] for i in images] == ["fraudstream"]
    parser = build_parser()
    for name, objects in BUILDS.items():
        for _doc, c in _containers(objects):
            assert c["image"] == "fraudstream", (name, c["name"])
            assert "command" not in c, "the image's entry point is `fraudstream`"
            args = parser.parse_args(c["args"])  # SystemExit on an unknown flag or command
            ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
            if "--metrics-port" in c["args"]:
                assert ports["metrics"] == int(_flag(c["args"], "--metrics-port"))
            if args.command == "api":
                assert ports["http"] == args.port
                assert args.host == "0.0.0.0"
            resources = c["resources"]
            assert set(resources) == {"requests", "limits"}


def _known_setting(name: str) -> bool:
    """`FRAUDSTREAM_A__B` names a field of Settings (nested with __), as infra/config.py reads."""
    assert name.startswith("FRAUDSTREAM_")
    rest = name[len("FRAUDSTREAM_") :]
    if rest.startswith("KAFKA_"):
        return True  # librdkafka pass-through
    model: type[BaseModel] = Settings
    parts = rest.lower().split("__")
    for i, part in enumerate(parts):
        field = model.model_fields.get(part)
        if field is None:
            return False
        annotation = field.annotation
        if i < len(parts) - 1:
            if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
                return False
            model = annotation
    return True


def test_every_environment_variable_is_a_setting_and_every_reference_resolves() -> None:
    for name, objects in BUILDS.items():
        config = objects[("ConfigMap", "fraudstream-config")]["data"]
        secret = objects[("Secret", "fraudstream-secrets")]["stringData"]
        for key in [*config, *secret]:
            assert _known_setting(key), f"{name}: {key} is not a setting"
        for _doc, c in _containers(objects):
            for env in c.get("env", []):
                assert _known_setting(env["name"]), f"{name}: {env['name']}"
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "fraudstream-secrets" and ref["key"] in secret
                    assert ref["key"] == env["name"]
            for source in c.get("envFrom", []):
                assert ("ConfigMap", source["configMapRef"]["name"]) in objects
        # The values parse as settings.
        env = {**config, **secret}
        values = {k[len("FRAUDSTREAM_") :].lower(): v for k, v in env.items() if "__" not in k}
        Settings.model_validate({k: v for k, v in values.items() if k != "snapshot_key"})
        api_clients = yaml.safe_load(secret["FRAUDSTREAM_API__CLIENTS"])
        Settings.model_validate({"api": {"clients": api_clients}})


def test_pdbs_and_services_select_running_pods() -> None:
    for objects in BUILDS.values():
        pod_labels = {
            d["metadata"]["name"]: d["spec"]["template"]["metadata"]["labels"]
            for d in objects.values()
            if d["kind"] == "Deployment"
        }
        for doc in objects.values():
            if doc["kind"] == "PodDisruptionBudget":
                selector = doc["spec"]["selector"]["matchLabels"]
            elif doc["kind"] == "Service":
                selector = doc["spec"]["selector"]
            else:
                continue
            assert any(selector.items() <= labels.items() for labels in pod_labels.values())
        pdbs = {
            d["metadata"]["name"] for d in objects.values() if d["kind"] == "PodDisruptionBudget"
        }
        assert pdbs == {"scorer", "api"}


def test_servicemonitor_scrapes_every_process_under_the_job_names_the_alerts_use() -> None:
    objects = BUILDS["base"]
    sm = objects[("ServiceMonitor", "fraudstream")]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    selector = sm["spec"]["selector"]["matchLabels"]
    scraped = {
        d["metadata"]["name"]: d
        for d in objects.values()
        if d["kind"] == "Service" and selector.items() <= d["metadata"]["labels"].items()
    }
    assert set(scraped) == {"scorer", "trainer", "api"}
    endpoint_ports = {e["port"] for e in sm["spec"]["endpoints"]}
    assert all(e["path"] == "/metrics" for e in sm["spec"]["endpoints"])
    for svc in scraped.values():
        assert {p["name"] for p in svc["spec"]["ports"]} & endpoint_ports
    alerts = (ROOT / "infra" / "deploy" / "alerts.yml").read_text()
    jobs = set(re.findall(r'job="(\w+)"', alerts))
    # The producer is a load generator and not deployed; every other job is a Service.
    assert jobs - {"producer"} <= set(scraped)


def test_prometheusrule_is_generated_from_the_alert_rules() -> None:
    rule_file = BASE / "prometheusrule.yaml"
    assert rule_file.read_text() == k8s_rules.render(), "run `python -m infra.k8s_rules`"
    rule = yaml.safe_load(rule_file.read_text())
    alerts = yaml.safe_load((ROOT / "infra" / "deploy" / "alerts.yml").read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == alerts["groups"]


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="kubectl not installed")
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_kubectl_kustomize_builds_each_overlay_as_checked_here(overlay: Path) -> None:
    out = subprocess.run(
        ["kubectl", "kustomize", str(overlay)], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    built = {_key(d): d for d in yaml.safe_load_all(out.stdout) if d}
    ours = BUILDS[f"overlays/{overlay.name}"]
    assert set(built) == set(ours)
    for doc in built.values():
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
    # What the overlays change is what this module's own merge made of them.
    for key in (
        ("ScaledObject", "scorer"),
        ("HorizontalPodAutoscaler", "api"),
        ("PodDisruptionBudget", "scorer"),
    ):
        assert built[key]["spec"] == ours[key]["spec"], key
    config = ("ConfigMap", "fraudstream-config")
    assert built[config]["data"] == ours[config]["data"]
    deployment = built[("Deployment", "trainer")]["spec"]
    assert deployment["replicas"] == 1 and deployment["strategy"] == {"type": "Recreate"}
