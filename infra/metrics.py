"""All Prometheus metrics, built in one factory over a given registry (tests use fresh ones)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Sequence

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Enum,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from prometheus_client.core import HistogramMetricFamily
from prometheus_client.registry import Collector

LATENCY_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)  # fmt: skip

# Label lag runs from seconds (a live investigation) to months (chargebacks).
LABEL_LAG_BUCKETS: tuple[float, ...] = tuple(
    float(s) for s in (
        1, 10, 60, 300, 1800, 3600, 6 * 3600, 86400, 3 * 86400, 7 * 86400, 14 * 86400,
        30 * 86400, 60 * 86400, 90 * 86400, 120 * 86400, 180 * 86400,
    )
)  # fmt: skip


# What a process is doing before it does its work (`fraudstream_process_state`), in order.
PROCESS_STATES: tuple[str, ...] = (
    "starting", "compiling", "loading_model", "joining_group", "catching_up", "running",
    "stopping",
)  # fmt: skip


class BatchHistogram(Collector):
    """A histogram observed a whole numpy batch at a time (prometheus_client observes one value
    per call under a lock, too slow for every scored transaction)."""

    def __init__(self, name: str, documentation: str, buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.bounds = np.asarray(buckets, dtype=np.float64)
        self._counts = np.zeros(len(buckets) + 1, dtype=np.int64)
        self._sum = 0.0
        self._lock = threading.Lock()

    def observe_many(self, values: np.ndarray) -> None:
        if values.size == 0:
            return
        idx = np.searchsorted(self.bounds, values, side="left")
        counts = np.bincount(idx, minlength=len(self._counts))
        with self._lock:
            self._counts += counts
            self._sum += float(values.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        with self._lock:
            cumulative = np.cumsum(self._counts)
            total_sum = self._sum
        buckets = [(repr(float(b)), int(c)) for b, c in zip(self.bounds, cumulative, strict=False)]
        buckets.append(("+Inf", int(cumulative[-1])))
        yield HistogramMetricFamily(
            self.name, self.documentation, buckets=buckets, sum_value=total_sum
        )


class RollingRate:
    """Share of positives over the last `window_s` seconds, in one-second buckets."""

    def __init__(self, window_s: int = 60) -> None:
        self.window_s = window_s
        self._total = np.zeros(window_s, dtype=np.int64)
        self._pos = np.zeros(window_s, dtype=np.int64)
        self._second = np.full(window_s, -1, dtype=np.int64)
        self._lock = threading.Lock()

    def add(self, total: int, positives: int, now: float | None = None) -> None:
        sec = int(now if now is not None else time.time())
        i = sec % self.window_s
        with self._lock:
            if self._second[i] != sec:
                self._second[i] = sec
                self._total[i] = 0
                self._pos[i] = 0
            self._total[i] += total
            self._pos[i] += positives

    def value(self, now: float | None = None) -> float:
        sec = int(now if now is not None else time.time())
        with self._lock:
            live = self._second > sec - self.window_s
            total = int(self._total[live].sum())
            pos = int(self._pos[live].sum())
        return pos / total if total else 0.0


class Metrics:
    """Every fraudstream metric. Each process uses the subset it needs."""

    def __init__(self, registry: CollectorRegistry | None = None, fraud_window_s: int = 60) -> None:
        disable_created_metrics()  # `_created` series only add noise to every counter
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.state = Enum(
            "fraudstream_process_state",
            "What the process is doing: starting, compiling kernels, loading its model, "
            "joining its consumer group, catching up after a restart, running, stopping",
            states=list(PROCESS_STATES),
            registry=r,
        )
        self.consumer_lag = Gauge(
            "fraudstream_consumer_lag",
            "Records behind the partition's high watermark (librdkafka statistics)",
            ["group", "topic", "partition"],
            registry=r,
        )
        self.transactions_produced = Counter(
            "fraudstream_transactions_produced_total", "Transactions published", registry=r
        )
        self.labels_produced = Counter(
            "fraudstream_labels_produced_total", "Labels published", registry=r
        )
        self.scored = Counter(
            "fraudstream_transactions_scored_total", "Transactions scored", registry=r
        )
        self.flagged = Counter(
            "fraudstream_transactions_flagged_total",
            "Transactions scored at or above the threshold",
            registry=r,
        )
        self.labels = Counter(
            "fraudstream_labels_total", "Labels consumed by the trainer", ["is_fraud"], registry=r
        )
        self.labels_learned = Counter(
            "fraudstream_labels_learned_total",
            "Labels joined with their score and learned",
            registry=r,
        )
        self.join_evicted = Counter(
            "fraudstream_join_evicted_total",
            "Unjoined scores or labels dropped from the trainer's bounded buffer",
            ["side", "cause"],
            registry=r,
        )
        self.join_ignored = Counter(
            "fraudstream_join_ignored_total",
            "Scores or labels ignored: repeats of a joined transaction, or contradicting labels",
            ["side", "cause"],
            registry=r,
        )
        self.join_pending = Gauge(
            "fraudstream_join_pending",
            "Scores or labels waiting in the trainer's join buffer",
            ["side"],
            registry=r,
        )
        self.label_state_values = Gauge(
            "fraudstream_label_state_values",
            "Values (merchants, categories, countries) the label-fed state holds, by table",
            ["table"],
            registry=r,
        )
        self.label_state_evicted = Gauge(
            "fraudstream_label_state_evicted",
            "Values forgotten by the label-fed state past model.label_state_max_keys, by table "
            "(since the state began: it travels in the snapshots)",
            ["table"],
            registry=r,
        )
        self.dlq = Counter(
            "fraudstream_dlq_total",
            "Records sent to a dead-letter topic",
            ["topic", "reason"],
            registry=r,
        )
        self.produce_errors = Counter(
            "fraudstream_produce_errors_total",
            "Records a producer could not deliver, by error: retried after a back-off, or "
            "dropped (a permanent error such as a record too large or a topic not authorised)",
            ["topic", "error", "action"],
            registry=r,
        )
        self.model_version = Gauge(
            "fraudstream_model_version", "Version of the model in use", registry=r
        )
        self.label_to_serving = Histogram(
            "fraudstream_label_to_serving_seconds",
            "Arrival of the newest label a model learned -> a scorer serving that model",
            buckets=(0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 300.0),
            registry=r,
        )
        self.model_age = Gauge(
            "fraudstream_model_age_seconds",
            "Time since the model in use was trained (its snapshot was taken)",
            registry=r,
        )
        self.model_log_loss = Gauge(
            "fraudstream_model_log_loss", "Rolling log loss, evaluated before learning", registry=r
        )
        self.model_roc_auc = Gauge(
            "fraudstream_model_roc_auc", "Rolling ROC AUC, evaluated before learning", registry=r
        )
        self.model_precision = Gauge(
            "fraudstream_model_precision", "Rolling precision at the threshold", registry=r
        )
        self.model_recall = Gauge(
            "fraudstream_model_recall", "Rolling recall at the threshold", registry=r
        )
        self.snapshots = Counter(
            "fraudstream_snapshots_total", "Model snapshots published", registry=r
        )
        self.cards_tracked = Gauge(
            "fraudstream_cards_tracked", "Cards with per-card feature state", registry=r
        )
        self.cards_evicted = Counter(
            "fraudstream_cards_evicted_total",
            "Per-card states dropped to keep within scorer.max_cards (least recently seen)",
            registry=r,
        )
        self.fraud_rate_window = RollingRate(fraud_window_s)
        self.fraud_rate = Gauge(
            "fraudstream_fraud_rate",
            f"Share of scores flagged over the last {fraud_window_s} s",
            registry=r,
        )
        self.fraud_rate.set_function(self.fraud_rate_window.value)
        self.score_latency = BatchHistogram(
            "fraudstream_score_latency_seconds",
            "Event time to score produced",
            LATENCY_BUCKETS,
        )
        r.register(self.score_latency)
        self.snapshots_held = Counter(
            "fraudstream_snapshots_held_total",
            "Snapshots the trainer held back: guardrail failed, serving model kept",
            ["reason"],
            registry=r,
        )
        self.snapshots_refused = Counter(
            "fraudstream_snapshots_refused_total",
            "Snapshots from model-updates refused (unsigned, tampered, incompatible, broken)",
            ["reason"],
            registry=r,
        )
        self.mlflow_failures = Counter(
            "fraudstream_mlflow_failures_total",
            "MLflow logging attempts that failed (tracking server down); retried",
            registry=r,
        )
        self.mlflow_models_logged = Counter(
            "fraudstream_mlflow_models_logged_total",
            "Snapshots logged to MLflow as models and registered",
            registry=r,
        )
        self.mlflow_pending = Gauge(
            "fraudstream_mlflow_pending",
            "Metric points and models waiting to be logged to MLflow",
            registry=r,
        )
        self.promotions = Counter(
            "fraudstream_promotions_total",
            "Challengers promoted to champion (the model the trainer publishes)",
            registry=r,
        )
        self.challenger_roc_auc = Gauge(
            "fraudstream_challenger_roc_auc",
            "Rolling ROC AUC of each challenger, evaluated before learning",
            ["candidate"],
            registry=r,
        )
        # Labels as they really arrive (trainer.maturation_s): most transactions get none.
        # Observed a loop turn's labels at a time (the trainer learns ~10k labels/s).
        self.label_lag = BatchHistogram(
            "fraudstream_label_lag_seconds",
            "Label lag: the label record's timestamp - its transaction's event time",
            LABEL_LAG_BUCKETS,
        )
        r.register(self.label_lag)
        self.label_coverage = Gauge(
            "fraudstream_label_coverage",
            "Share of the transactions the model learned that had an explicit label (the rest "
            "matured unlabelled and were learned as legitimate)",
            registry=r,
        )
        self.matured = Counter(
            "fraudstream_matured_total",
            "Scored transactions with no label within the maturation window: learned as legitimate",
            registry=r,
        )
        self.late_labels = Counter(
            "fraudstream_late_labels_total",
            "Labels for a transaction that had already matured: honoured (a fraud label, "
            "learned), confirmed (a legitimate one), unmatched (its score was forgotten or gone)",
            ["outcome"],
            registry=r,
        )

        # Label trust (trainer/label_trust.py).
        self.labels_refused = Counter(
            "fraudstream_labels_refused_total",
            "Labels not learned because of their source: untrusted_source (not configured), "
            "missing_source, rate_limited; by source name (refused names beyond "
            "labels.max_tracked_sources count as '(other)')",
            ["source", "reason"],
            registry=r,
        )
        self.label_overrides = Counter(
            "fraudstream_label_overrides_total",
            "Labels from a higher-trust source for a transaction labelled by a lower one: "
            "corrected (contradicted the learned label: correction learned), unmatched (its "
            "score is gone: not learned), confirmed (agreed), replaced (the lower label was "
            "still waiting for its score)",
            ["outcome"],
            registry=r,
        )

    def set_lag(self, group: str, topic: str, partition: int, lag: int) -> None:
        self.consumer_lag.labels(group, topic, str(partition)).set(lag)

    def serve(self, port: int | None, addr: str = "127.0.0.1") -> int | None:
        """Serve /metrics on `port` (0 = any free port). Returns the port, or None if disabled."""
        if port is None:
            return None
        server, _thread = start_http_server(port, addr=addr, registry=self.registry)
        return int(server.server_address[1])
