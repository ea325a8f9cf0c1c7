"""MLflow logging off the training path: a background thread logs what the trainer hands it.

Logging is slow (seconds for a model) and the tracking server may be down; neither may stall
learning. The trainer only queues: a metric point per snapshot (step = labels learned,
timestamp = when the snapshot was taken) and, every `trainer.mlflow_every_s`, the snapshot to
log as a model. While the server is unreachable the thread retries with backoff, counting each
failure (`fraudstream_mlflow_failures_total`); metric points wait in a bounded backlog and the
newest model replaces an older one still waiting, so when the server returns the run catches
up: every point in order, and the model in service registered.

Each logged model is packaged by `trainer.pyfunc.log_pyfunc_model`, with the lineage of
`trainer.lineage`, and registered by `trainer.registration` (a new version aliased champion).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from typing import Any

from core.snapshot import Snapshot
from infra.config import Settings
from infra.metrics import Metrics
from infra.registry import configure_http, default_artifact_location
from trainer.lineage import code_version, config_params, lineage
from trainer.registration import already_registered, register

log = logging.getLogger(__name__)

# Per log_batch call (MLflow's limit is 1000 metrics).
BATCH = 1000


class MlflowLogger:
    def __init__(
        self, settings: Settings, params: dict[str, Any], metrics: Metrics | None = None
    ) -> None:
        self.settings = settings
        self.params = params
        self.metrics = metrics
        self.run_id: str | None = None
        self.logged_versions = 0
        self.failures = 0
        self.dropped_points = 0
        # Extra run tags the trainer sets before start() (e.g. where it warm-started from).
        self.tags: dict[str, str] = {}
        # Registry version of the last model logged (None: none yet).
        self.registered_version: str | None = None
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        # (step, timestamp ms, metrics): every snapshot's, in order.
        self._points: deque[tuple[int, int, dict[str, float]]] = deque()
        self._pending_tags: dict[str, str] = {}
        self._model: Snapshot | None = None
        self._last_point_version = -1
        self._last_model_version = -1
        self._down_since: float | None = None
        self._params_logged = False
        self._thread = threading.Thread(target=self._run, name="mlflow-logger", daemon=True)

    # -- the trainer's side (never blocks) -------------------------------------------------------

    def start(self) -> MlflowLogger:
        self._thread.start()
        return self

    def submit(self, snapshot: Snapshot, pipeline: Any = None, with_model: bool = False) -> None:
        """Queue a snapshot's metrics, and the snapshot itself as a model if `with_model`.
        (`pipeline` is unused: the snapshot holds the model.)"""
        with self._lock:
            if snapshot.version > self._last_point_version:
                self._last_point_version = snapshot.version
                point = {
                    **snapshot.metrics,
                    "model_version": float(snapshot.version),
                    **{f"labels_{k}": float(v) for k, v in snapshot.label_counts.items()},
                }
                self._add_point(snapshot.labels_learned, snapshot.created_at, point)
            # A warm start's champion is in the registry already.
            fresh = snapshot.origin != "registry"
            if with_model and fresh and snapshot.version > self._last_model_version:
                self._model = snapshot
            self._update_pending()
        self._wake.set()

    def record(self, step: int, values: dict[str, float], tags: dict[str, str]) -> None:
        """Queue an event: metric values at `step` and run tags (e.g. a guardrail hold)."""
        from datetime import UTC, datetime

        with self._lock:
            self._add_point(step, datetime.now(UTC), values)
            self._pending_tags.update(tags)
            self._update_pending()
        self._wake.set()

    def close(self, timeout_s: float = 60.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)
        if self._thread.is_alive():
            log.warning("mlflow logging did not finish within %.0f s", timeout_s)

    @property
    def pending(self) -> int:
        return len(self._points) + (self._model is not None)

    def _add_point(self, step: int, when: Any, values: dict[str, float]) -> None:
        if len(self._points) >= self.settings.trainer.mlflow_backlog:
            self._points.popleft()
            self.dropped_points += 1
        self._points.append((step, int(when.timestamp() * 1000), values))

    def _update_pending(self) -> None:
        if self.metrics is not None:
            self.metrics.mlflow_pending.set(self.pending)

    # -- the logging thread ----------------------------------------------------------------------

    def _run(self) -> None:
        import mlflow

        configure_http(self.settings)
        mlflow.set_tracking_uri(self.settings.mlflow_uri())
        backoff = 1.0
        try:
            while True:
                stopping = self._stop.is_set()
                try:
                    self._flush()
                except Exception as exc:  # noqa: BLE001  tracking down must not stop learning
                    self._failed(exc)
                    if stopping:
                        log.warning(
                            "mlflow: giving up at shutdown, %d item(s) not logged", self.pending
                        )
                        return
                    self._stop.wait(backoff)
                    backoff = min(backoff * 2, self.settings.trainer.mlflow_retry_max_s)
                    continue
                backoff = 1.0
                if stopping:
                    return
                self._wake.wait()
                self._wake.clear()
        finally:
            self._end_run()

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self.metrics is not None:
            self.metrics.mlflow_failures.inc()
        first = self._down_since is None
        if first:
            self._down_since = time.monotonic()
        # One line when it goes down, then every tenth failed attempt.
        if first or self.failures % 10 == 0:
            line = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
            log.warning(
                "mlflow unavailable (%s); learning and Kafka snapshots go on, %d item(s) wait "
                "(%d failures so far)",
                line,
                self.pending,
                self.failures,
            )

    def _flush(self) -> None:
        if self.run_id is None:
            self._start_run()
        if not self._params_logged:
            self._log_params()
        self._flush_points()
        with self._lock:
            tags, self._pending_tags = self._pending_tags, {}
        if tags:
            try:
                self._client().log_batch(self.run_id, tags=[_tag(k, v) for k, v in tags.items()])
            except Exception:
                with self._lock:
                    self._pending_tags = {**tags, **self._pending_tags}
                raise
        with self._lock:
            model = self._model
        if model is not None:
            if not already_registered(self.settings, self._client(), model):
                self._log_model(model)
            with self._lock:
                self._last_model_version = max(self._last_model_version, model.version)
                if self._model is model:
                    self._model = None
        with self._lock:
            self._update_pending()
        if self._down_since is not None:
            log.info(
                "mlflow reachable again after %.0f s: caught up",
                time.monotonic() - self._down_since,
            )
            self._down_since = None

    def _client(self) -> Any:
        from mlflow import MlflowClient

        uri = self.settings.mlflow_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)

    def _start_run(self) -> None:
        import mlflow

        client = self._client()
        name = self.settings.mlflow_experiment
        experiment = client.get_experiment_by_name(name)
        if experiment is None:
            experiment_id = client.create_experiment(
                name, artifact_location=default_artifact_location(self.settings.mlflow_uri())
            )
        else:
            experiment_id = experiment.experiment_id
        code = code_version()
        tags = {**self.tags, "code_version": code["code_version"]}
        if "git_commit" in code:
            tags["mlflow.source.git.commit"] = code["git_commit"]
        # Active in this thread only (MLflow keeps the active run per thread): log_model
        # attaches its model to it.
        run = mlflow.start_run(experiment_id=experiment_id, run_name="trainer", tags=tags)
        self.run_id = run.info.run_id
        log.info("mlflow run %s at %s", self.run_id, self.settings.mlflow_uri())

    def _log_params(self) -> None:
        client = self._client()
        params = {**config_params(self.settings), **{k: str(v) for k, v in self.params.items()}}
        params["features.dense"] = ",".join(_dense_features())
        items = [_param(k, v) for k, v in sorted(params.items())]
        for i in range(0, len(items), 100):
            client.log_batch(self.run_id, params=items[i : i + 100])
        self._params_logged = True

    def _flush_points(self) -> None:
        from mlflow.entities import Metric

        client = self._client()
        while True:
            with self._lock:
                chunk: list[tuple[int, int, dict[str, float]]] = []
                n = 0
                for point in self._points:
                    if chunk and n + len(point[2]) > BATCH:
                        break
                    chunk.append(point)
                    n += len(point[2])
            if not chunk:
                return
            metrics = [
                Metric(key, float(value), ts, step)
                for step, ts, values in chunk
                for key, value in values.items()
            ]
            client.log_batch(self.run_id, metrics=metrics)
            with self._lock:
                for _ in chunk:
                    self._points.popleft()

    def _log_model(self, snapshot: Snapshot) -> None:
        from mlflow.entities import Metric

        from trainer.pyfunc import log_pyfunc_model, model_features

        started = time.monotonic()
        pipeline = snapshot.load_model()
        features = model_features(pipeline)
        info = lineage(self.settings, snapshot, features)
        client = self._client()
        logged = log_pyfunc_model(snapshot, pipeline, info)
        ts = int(snapshot.created_at.timestamp() * 1000)
        if snapshot.metrics:
            client.log_batch(
                self.run_id,
                metrics=[
                    Metric(k, float(v), ts, snapshot.labels_learned, model_id=logged.model_id)
                    for k, v in snapshot.metrics.items()
                ],
            )
        version = "-"
        if self.settings.registry.enabled:
            version = register(self.settings, client, self.run_id, logged, snapshot, info)
            self.registered_version = version
        self.logged_versions += 1
        if self.metrics is not None:
            self.metrics.mlflow_models_logged.inc()
        log.info(
            "mlflow: logged model v%d (%d labels) as registry version %s in %.1f s",
            snapshot.version,
            snapshot.labels_learned,
            version,
            time.monotonic() - started,
        )

    def _end_run(self) -> None:
        if self.run_id is None:
            return
        try:
            import mlflow

            mlflow.end_run()
        except Exception as exc:  # noqa: BLE001  the server may be down at shutdown
            log.warning("mlflow: could not end run %s: %s", self.run_id, exc)


def _dense_features() -> tuple[str, ...]:
    from core.features import DENSE_FEATURES

    return DENSE_FEATURES


def _param(key: str, value: str) -> Any:
    from mlflow.entities import Param

    return Param(key, value[:6000])


def _tag(key: str, value: str) -> Any:
    from mlflow.entities import RunTag

    return RunTag(key, value[:8000])
