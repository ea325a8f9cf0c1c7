"""Writes the Prometheus Operator `PrometheusRule` of infra/deploy/k8s/ from the alert rules
Prometheus loads in compose (infra/deploy/alerts.yml), so the two never differ:
`python -m infra.k8s_rules` (tests/test_k8s_manifests.py checks the file is current)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).parent / "deploy"
ALERTS = DEPLOY / "alerts.yml"
RULE_FILE = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"

HEADER = (
    "# Generated from infra/deploy/alerts.yml by `python -m infra.k8s_rules`: edit that file,\n"
    "# then regenerate this one.\n"
)


def prometheus_rule() -> dict[str, Any]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {"name": "fraudstream", "labels": {"prometheus": "fraudstream"}},
        "spec": {"groups": groups},
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (PromQL, descriptions) as literal blocks, as written by hand."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render() -> str:
    return HEADER + yaml.dump(prometheus_rule(), Dumper=_Dumper, sort_keys=False, width=100)


if __name__ == "__main__":
    RULE_FILE.write_text(render())
    print(f"wrote {RULE_FILE}")
