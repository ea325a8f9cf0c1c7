"""The package layout's rules (docs/design.md, "Package layout"): the core is Kafka-free and
imports no process package; `evaluate` and the MLflow model use the core, never a Kafka loop;
importing a library module changes no process-wide setting."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORE_MODULES = sorted(f"core.{p.stem}" for p in (ROOT / "core").glob("*.py"))
PROCESS_PACKAGES = ("producer", "scorer", "trainer", "fraudstream", "evaluation")
# Signing and verifying a snapshot use the project's key handling, imported when called.
CORE_MAY_IMPORT = {"infra.signing"}


def _imports(path: Path) -> set[str]:
    """Every module a file imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            names.add(node.module)
    return names


def _top(name: str) -> str:
    return name.split(".")[0]


def test_the_core_imports_no_kafka_client_and_no_process_package() -> None:
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in sorted((ROOT / "core").glob("*.py"))
        for name in _imports(path)
        if name not in CORE_MAY_IMPORT
        and _top(name) in {*PROCESS_PACKAGES, "infra", "schemas", "confluent_kafka"}
    }
    assert not offending


def test_evaluate_and_the_mlflow_model_import_the_core_never_a_kafka_loop() -> None:
    files = [*sorted((ROOT / "evaluation").rglob("*.py")), *sorted(ROOT.glob("trainer/pyfunc*.py"))]
    assert any(p.name == "pyfunc.py" for p in files)
    offending = {
        f"{path.relative_to(ROOT)}: {name}"
        for path in files
        for name in _imports(path)
        # (the models-from-code file MLflow runs loads the pyfunc beside it)
        if _top(name) in {"scorer", "trainer"} and name != "trainer.pyfunc"
    }
    assert not offending


def _run(code: str) -> dict[str, object]:
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER"}
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    result: dict[str, object] = json.loads(out.stdout.splitlines()[-1])
    return result


def test_importing_the_core_loads_no_kafka_client_and_sets_no_numba_setting() -> None:
    result = _run(
        f"""
import json, sys, warnings
import numba
from numba.core.errors import NumbaPerformanceWarning

def numba_filters():
    return sum(f[2] is NumbaPerformanceWarning for f in warnings.filters)

layer, filters = numba.config.THREADING_LAYER, numba_filters()
for name in {CORE_MODULES!r}:
    __import__(name)
loaded = sorted({{m.split(".")[0] for m in sys.modules}})
same = [numba.config.THREADING_LAYER == layer, numba_filters() == filters]
from core.codec_compiled import configure_numba
configure_numba()
print(json.dumps({{"loaded": loaded, "same": same, "layer": numba.config.THREADING_LAYER,
                  "filters": numba_filters() - filters}}))
"""
    )
    loaded = set(result["loaded"])  # type: ignore[call-overload]
    assert not loaded & {*PROCESS_PACKAGES, "infra", "confluent_kafka"}
    assert result["same"] == [True, True]
    # The process that asks for them gets the fork-safe pool and the warning filter.
    assert result["layer"] == "workqueue"
    assert result["filters"] == 1
