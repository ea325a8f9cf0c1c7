"""Every exception the project defines derives from `FraudstreamError`, keeping its usual kind."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

from core.errors import FraudstreamError

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "core",
    "evaluation",
    "fraudstream",
    "infra",
    "producer",
    "schemas",
    "scorer",
    "trainer",
)


def _project_exceptions() -> list[type[BaseException]]:
    """Every class defined in the project's modules that is an exception."""
    found = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            tree = ast.parse(path.read_text())
            names = [node.name for node in tree.body if isinstance(node, ast.ClassDef)]
            if not names:
                continue
            module = importlib.import_module(".".join(path.relative_to(ROOT).with_suffix("").parts))
            found += [
                cls
                for name in names
                if isinstance(cls := getattr(module, name), type) and issubclass(cls, BaseException)
            ]
    return found


def test_every_project_exception_is_a_fraudstream_error() -> None:
    exceptions = _project_exceptions()
    assert len(exceptions) >= 10
    outside = [f"{c.__module__}.{c.__qualname__}" for c in exceptions]
    outside = [
        name
        for name, c in zip(outside, exceptions, strict=True)
        if not issubclass(c, FraudstreamError)
    ]
    assert outside == []


def test_exceptions_keep_their_usual_kind() -> None:
    from core.snapshot import SnapshotError
    from infra.config import ConfigError
    from infra.kafka import BrokerUnreachable

    assert issubclass(SnapshotError, ValueError) and issubclass(ConfigError, ValueError)
    assert issubclass(BrokerUnreachable, RuntimeError)
