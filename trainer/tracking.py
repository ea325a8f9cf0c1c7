"""MLflow logging off the training path: a background thread logs the latest snapshot.

Logging is slow (seconds) and the tracking server may be down; neither may stall learning.
"""

from __future__ import annotations

import logging
import pickle
import queue
import tempfile
import threading
from pathlib import Path
from typing import Any

import mlflow

from infra.config import Settings
from schemas.snapshot import Snapshot

log = logging.getLogger(__name__)


def _pip_requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["mlflow", "river", "pandas", "numpy", "pydantic", "orjson", "fraudstream"]
    out = []
    for p in pkgs:
        try:
            out.append(f"{p}=={version(p)}")
        except Exception:  # noqa: BLE001,S112  not installed as a distribution: leave unpinned
            out.append(p)
    return out


class MlflowLogger:
    def __init__(self, settings: Settings, params: dict[str, Any]) -> None:
        self.settings = settings
        self.params = params
        self.run_id: str | None = None
        self.logged_versions = 0
        self.failures = 0
        self._queue: queue.Queue[tuple[Snapshot, Any, bool] | None] = queue.Queue(maxsize=1)
        self._thread = threading.Thread(target=self._run, name="mlflow-logger", daemon=True)
        self._done = threading.Event()

    def start(self) -> MlflowLogger:
        self._thread.start()
        return self

    def submit(self, snapshot: Snapshot, pipeline: Any, with_model: bool) -> None:
        """Queue a snapshot; a newer one replaces one still waiting (only the latest matters)."""
        item = (snapshot, pickle.loads(pickle.dumps(pipeline)), with_model)
        try:
            self._queue.get_nowait()
        except queue.Empty:
            pass
        self._queue.put_nowait(item)

    def close(self, timeout_s: float = 60.0) -> None:
        self._queue.put(None)
        self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("mlflow logging did not finish within %.0f s", timeout_s)

    def _run(self) -> None:
        try:
            mlflow.set_tracking_uri(self.settings.mlflow_uri())
            mlflow.set_experiment(self.settings.mlflow_experiment)
            run = mlflow.start_run(run_name="trainer")
            self.run_id = run.info.run_id
            mlflow.log_params(self.params)
            log.info("mlflow run %s at %s", self.run_id, self.settings.mlflow_uri())
        except Exception as exc:  # noqa: BLE001  tracking down must not stop learning
            log.warning("mlflow unavailable (%s); snapshots are still published to Kafka", exc)
            self.failures += 1
            return
        try:
            while True:
                item = self._queue.get()
                if item is None:
                    break
                snapshot, pipeline, with_model = item
                try:
                    self._log(snapshot, pipeline, with_model)
                except Exception as exc:  # noqa: BLE001
                    self.failures += 1
                    log.warning("mlflow logging of v%d failed: %s", snapshot.version, exc)
        finally:
            mlflow.end_run()

    def _log(self, snapshot: Snapshot, pipeline: Any, with_model: bool) -> None:
        step = snapshot.labels_learned
        mlflow.log_metrics(
            {**snapshot.metrics, "model_version": float(snapshot.version)}, step=step
        )
        if not with_model:
            return
        from trainer.pyfunc import FraudModel

        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "pipeline.pkl"
            path.write_bytes(pickle.dumps(pipeline))
            # No signature: the model takes feature vectors or raw transactions (see pyfunc.py).
            mlflow.pyfunc.log_model(
                name="model",
                python_model=FraudModel(),
                artifacts={"pipeline": str(path)},
                pip_requirements=_pip_requirements(),
                metadata={"fraudstream_version": snapshot.version, "labels_learned": step},
            )
        self.logged_versions += 1
        log.info("mlflow: logged model v%d (%d labels)", snapshot.version, step)
