"""Offline progressive validation: a stream replayed in event time through the live feature code.

A stream (`evaluation.streams`) is transactions in event-time order, each with a ground truth
(when known) and the time its label arrives (never, for labels that do not come). The replay
keeps two clocks honest:

- features: transactions are built in small batches, as the scorer does; before a batch,
  the label of every transaction whose label time is strictly before the batch's first event
  time is fed to `FeatureBuilder.observe_label` (the label-fed state, `core.label_state`), in
  arrival order, as the trainer feeds it. A label is never used before it arrives; at worst it
  is used one batch late.
- learners: each transaction is scored by every learner as it stands at the transaction's
  event time; a label is learned (on the features served with its transaction, as the
  trainer does) once the clock passes its arrival time. Scores are therefore always made
  before the label of that transaction, or of any later one, is known.

Learners are independent given the features, so they run in parallel processes (fork).
A learner that can explain its scores (the online logistic model) also keeps its `top`
highest-scored transactions with the reasons it gave them at scoring time (`TopScored`).
"""

from __future__ import annotations

import heapq
import math
import multiprocessing
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from core.features import FeatureBatch, FeatureBuilder
from core.model_compiled import CompiledModel
from core.model_settings import ModelSettings
from evaluation.learners import (
    DriftMonitor,
    Forest,
    OnlineLogistic,
    StaticLogistic,
)
from evaluation.streams import Stream

FEATURE_BATCH = 500


# ------------------------------------------------------------------------------- features


@dataclass
class Features:
    batch: FeatureBatch
    labels_fed: np.ndarray  # per transaction: labels fed to the risk tables before its batch


def build_features(stream: Stream, batch_size: int = FEATURE_BATCH) -> Features:
    """Serving-time features of every transaction, with labels fed as they arrive."""
    builder = FeatureBuilder()
    txs = stream.transactions
    n = len(txs)
    arrivals = np.argsort(stream.label_time, kind="mergesort")
    arrival_times = stream.label_time[arrivals]
    fed = 0
    dense: list[np.ndarray] = []
    sparse: list[tuple[str, ...]] = []
    labels_fed = np.zeros(n, dtype=np.int64)
    for lo in range(0, n, batch_size):
        first = stream.ts[lo]
        while fed < n and arrival_times[fed] < first:
            i = int(arrivals[fed])
            builder.observe_label(txs[i], bool(stream.y[i]))
            fed += 1
        batch = builder.build(txs[lo : lo + batch_size])
        dense.append(batch.dense)
        sparse.extend(batch.sparse)
        labels_fed[lo : lo + batch_size] = fed
    matrix = np.concatenate(dense) if dense else FeatureBuilder().build([]).dense
    return Features(FeatureBatch(matrix, sparse), labels_fed)


# ------------------------------------------------------------------------------- learners


@dataclass
class LearnerResult:
    name: str
    scores: np.ndarray  # per transaction; NaN where the learner did not exist yet
    updates: int
    learned_until: float  # label time of the last label learned (-inf: none)
    detections: list[dict[str, Any]]
    reactions: int = 0
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    # The highest-scored transactions, best first (learners that explain their scores).
    top: list[Scored] = field(default_factory=list)


@dataclass(frozen=True)
class Scored:
    """One top-scored transaction: its row, score, and the learner's explanation then."""

    row: int
    score: float
    explanation: dict[str, Any]


class TopScored:
    """The `k` highest scores of a replay, each explained when it is given.

    A min-heap of `k` entries: memory is bounded whatever the stream length, and the model is
    asked for reasons only for records that may enter it. Equal scores (River's probability is
    exactly 1.0 beyond a logit of 30) are ranked by the explanation's logit, then the earlier
    record first.
    """

    def __init__(self, k: int) -> None:
        self.k = max(k, 0)
        self._heap: list[tuple[float, float, int, Scored]] = []

    def wants(self, score: float, row: int) -> bool:
        """Whether `add` may keep this score: ask for the explanation only then."""
        if not self.k or not math.isfinite(score):
            return False
        heap = self._heap
        return len(heap) < self.k or score >= heap[0][0]

    def add(self, score: float, row: int, explanation: dict[str, Any]) -> None:
        logit = float(explanation.get("logit", 0.0))
        item = (score, logit, -row, Scored(row, score, explanation))
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, item)
        elif item[:3] > self._heap[0][:3]:
            heapq.heapreplace(self._heap, item)

    def best(self) -> list[Scored]:
        return [e[3] for e in sorted(self._heap, key=lambda e: e[:3], reverse=True)]


@dataclass
class Plan:
    """What to replay: shared by the worker processes (inherited through fork)."""

    ts: np.ndarray
    y: np.ndarray
    label_time: np.ndarray
    dicts: list[dict[str, float]]
    batch: FeatureBatch
    static_until: float
    model: ModelSettings
    reaction: str
    seed: int
    forest_models: int
    legit_sample: float
    adwin_delta: float
    # Top-scored transactions kept with their reasons, and reasons per transaction.
    top: int = 20
    top_reasons: int = 3


_PLAN: Plan | None = None


def _progressive(learner: Any, plan: Plan) -> LearnerResult:
    """Predict each transaction, then learn each label once the clock passes its arrival."""
    started = time.perf_counter()
    n = len(plan.ts)
    scores = np.empty(n)
    arrivals = np.argsort(plan.label_time, kind="mergesort")
    arrival_times = plan.label_time[arrivals]
    monitor = DriftMonitor(plan.adwin_delta)
    on_drift = getattr(learner, "on_drift", None)
    explain = getattr(learner, "explain", None)
    top = TopScored(plan.top if explain is not None else 0)
    dicts, y, ts, batch = plan.dicts, plan.y, plan.ts, plan.batch
    predict, learn = learner.predict_one, learner.learn_one
    j = 0
    last = -math.inf
    for i in range(n):
        t = ts[i]
        while j < n and arrival_times[j] < t:
            k = int(arrivals[j])
            label = bool(y[k])
            last = float(arrival_times[j])
            found = monitor.update(label, scores[k], last)
            if found is not None and on_drift is not None:
                on_drift(found)
            learn(dicts[k], label)
            j += 1
        p = scores[i] = predict(dicts[i])
        if explain is not None and top.wants(p, i):
            # Explained now, by the model that gave the score (it learns on afterwards).
            row = FeatureBatch(batch.dense[i : i + 1], [batch.sparse[i]])
            top.add(p, i, explain(row, plan.top_reasons))
    return LearnerResult(
        learner.name,
        scores,
        learner.updates,
        last,
        [vars(d) | {"worse": d.worse} for d in monitor.detections],
        getattr(learner, "reactions", 0),
        time.perf_counter() - started,
        {"skipped_legit_labels": getattr(learner, "skipped", 0)},
        top.best(),
    )


def _static(plan: Plan) -> LearnerResult:
    """Train once on labels that arrived before `static_until`; score the rest in one batch."""
    started = time.perf_counter()
    learner = StaticLogistic(plan.model, seed=plan.seed)
    known = np.nonzero(plan.label_time < plan.static_until)[0]
    order = known[np.argsort(plan.label_time[known], kind="mergesort")]
    learner.fit([(plan.dicts[k], bool(plan.y[k])) for k in order])
    scores = np.full(len(plan.ts), np.nan)
    after = plan.ts >= plan.static_until
    compiled = CompiledModel.from_pipeline(learner.pipeline, 1)
    rows = np.nonzero(after)[0]
    if len(rows):
        sub = FeatureBatch(plan.batch.dense[rows], [plan.batch.sparse[r] for r in rows])
        scores[rows] = compiled.predict_proba(sub)
    # Monitoring only: the static model cannot react, but its loss shows the drift too.
    monitor = DriftMonitor(plan.adwin_delta)
    for k in np.argsort(plan.label_time, kind="mergesort"):
        if not math.isfinite(plan.label_time[k]):
            break
        if plan.ts[k] >= plan.static_until:
            monitor.update(bool(plan.y[k]), float(scores[k]), float(plan.label_time[k]))
    last = float(plan.label_time[order[-1]]) if len(order) else -math.inf
    return LearnerResult(
        "static",
        scores,
        learner.updates,
        last,
        [vars(d) | {"worse": d.worse} for d in monitor.detections],
        0,
        time.perf_counter() - started,
        {"trained_on_labels": len(order), "epochs": learner.epochs},
    )


def _run(name: str) -> LearnerResult:
    plan = _PLAN
    if plan is None:
        raise RuntimeError("no replay plan")
    if name == "static":
        return _static(plan)
    if name == "online":
        return _progressive(OnlineLogistic(plan.model, plan.reaction), plan)
    if name == "forest":
        return _progressive(Forest(plan.forest_models, plan.legit_sample, plan.seed), plan)
    raise ValueError(f"unknown learner {name!r}")


def run_learners(
    stream: Stream,
    features: Features,
    learners: Sequence[str],
    static_until: float,
    model: ModelSettings | None = None,
    reaction: str = "none",
    seed: int = 0,
    forest_models: int = 6,
    legit_sample: float = 0.1,
    adwin_delta: float = 0.002,
    jobs: int | None = None,
    top: int = 20,
    top_reasons: int = 3,
) -> dict[str, LearnerResult]:
    """Replay every learner over the stream; in parallel processes when fork is available."""
    global _PLAN
    _PLAN = Plan(
        stream.ts,
        stream.y,
        stream.label_time,
        features.batch.dicts(),
        features.batch,
        static_until,
        model or ModelSettings(),
        reaction,
        seed,
        forest_models,
        legit_sample,
        adwin_delta,
        top,
        top_reasons,
    )
    try:
        jobs = jobs if jobs is not None else min(len(learners), os.cpu_count() or 1)
        # The slowest first, so it does not start last.
        order = sorted(learners, key=lambda n: ("forest", "online", "static").index(n))
        if jobs > 1 and "fork" in multiprocessing.get_all_start_methods():
            ctx = multiprocessing.get_context("fork")
            with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
                results = list(pool.map(_run, order))
        else:
            results = [_run(name) for name in order]
    finally:
        _PLAN = None
    by_name = {r.name: r for r in results}
    return {name: by_name[name] for name in learners}
