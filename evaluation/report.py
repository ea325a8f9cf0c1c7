"""Turn replayed scores into the evaluation report: segments, windows, recovery, alerts, drift.

`build_report` returns plain JSON values (what `--json` writes); `evaluation.report_markdown`
renders them as tables and `evaluation.report_plot` as a plot.

Everything is measured on transactions whose ground truth is known, and only where a
learner existed (the static model from the end of its training part). Segments:

- `pre-drift`: from the end of the static model's training part to the drift (or the end);
- `post-drift`: from the drift to the end;
- `overall`: from the end of the training part to the end.

Recovery: the post-drift transactions are cut, in time order, into chunks holding
`chunk_frauds` frauds each. A learner has recovered at the first chunk whose ROC AUC is at
least `recovery_share` of its own pre-drift ROC AUC and stays so over everything from that
chunk to the end, which must span at least `recovery_min_chunks` chunks (so a lucky last
chunk is not a recovery); the labels (all, and fraud) that arrived between the drift and the
start of that chunk are the labels it needed. Single later chunks may still dip below the target
(chunks of 50 frauds are noisy): they are counted, not hidden.

Top scores: for a learner that explains its scores (the online logistic model), its
highest-scored transactions with the features that pushed each score up most, as the live
scorer reports them in a Score's `reasons` (signed contributions to the logit).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.metrics import (
    alert_stats,
    average_precision,
    precision_at_budget,
    recall_at_fpr,
    roc_auc,
)
from evaluation.replay import LearnerResult
from evaluation.streams import DAY_S, Stream, day_index, iso

SWEEP_THRESHOLDS = (0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9)


@dataclass(frozen=True)
class ReportOptions:
    fpr: float = 0.01
    daily_budget: int = 100
    threshold: float = 0.5
    alert_rate: float = 0.01
    calibration_window: int = 20_000
    window_days: float | None = None
    chunk_frauds: int = 50
    recovery_share: float = 0.95
    # A recovery must hold over at least this many chunks (the one it starts at included):
    # a last chunk alone that happens to score well is not a recovery.
    recovery_min_chunks: int = 3


def _nan_to_none(value: Any) -> Any:
    """Plain JSON values: NaN/inf become None, numpy scalars become Python numbers."""
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, np.integer | np.bool_):
        return value.item()
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


def quality(
    y: np.ndarray, s: np.ndarray, ts: np.ndarray, opts: ReportOptions
) -> dict[str, float | int]:
    days = day_index(ts)
    return {
        "transactions": len(y),
        "frauds": int(y.sum()),
        "roc_auc": roc_auc(y, s),
        "average_precision": average_precision(y, s),
        "recall_at_fpr": recall_at_fpr(y, s, opts.fpr),
        "precision_at_budget": precision_at_budget(y, s, days, opts.daily_budget),
        "base_rate": float(y.mean()) if len(y) else math.nan,
    }


def calibrated_thresholds(scores: np.ndarray, rate: float, window: int, step: int = 500) -> Any:
    """Per transaction: the (1 - rate) quantile of the learner's previous `window` scores.

    Causal: the threshold of a transaction only looks at scores given before its block.
    NaN (no decision) until there are scores to calibrate on.
    """
    n = len(scores)
    out = np.full(n, np.nan)
    for lo in range(0, n, step):
        past = scores[max(0, lo - window) : lo]
        past = past[np.isfinite(past)]
        if len(past) >= min(window, 1000):
            out[lo : lo + step] = np.quantile(past, 1.0 - rate)
    return out


def _segments(stream: Stream, start: float) -> dict[str, np.ndarray]:
    measured = stream.known & (stream.ts >= start)
    if stream.drift_time is None:
        return {"overall": measured}
    return {
        "pre-drift": measured & (stream.ts < stream.drift_time),
        "post-drift": measured & (stream.ts >= stream.drift_time),
        "overall": measured,
    }


def _windows(stream: Stream, opts: ReportOptions) -> list[tuple[float, float]]:
    t0, t1 = float(stream.ts[0]), float(stream.ts[-1])
    span = max(t1 - t0, 1.0)
    width = opts.window_days * DAY_S if opts.window_days else max(span / 15.0, 3600.0)
    edges = list(np.arange(t0, t1, width)) + [t1 + 1e-6]
    if stream.drift_time is not None and t0 < stream.drift_time < t1:
        edges = sorted({*edges, stream.drift_time})
        # Do not keep slivers next to the drift edge.
        edges = [
            e
            for e in edges
            if e == stream.drift_time or abs(e - stream.drift_time) >= 0.25 * width or e == t0
        ]
    return list(zip(edges[:-1], edges[1:], strict=True))


def _chunks(idx: np.ndarray, y: np.ndarray, frauds: int) -> list[np.ndarray]:
    """Cut row indices (time order) into runs holding `frauds` frauds each (last may hold more)."""
    cum = np.cumsum(y[idx])
    total = int(cum[-1]) if len(cum) else 0
    if total < frauds:
        return [idx] if len(idx) else []
    cut = [
        int(np.searchsorted(cum, k * frauds, side="left")) + 1 for k in range(1, total // frauds)
    ]
    parts = np.split(idx, cut)
    return [p for p in parts if len(p)]


def recovery(
    stream: Stream, scores: np.ndarray, pre_auc: float, opts: ReportOptions
) -> dict[str, Any]:
    if stream.drift_time is None or not math.isfinite(pre_auc):
        return {}
    idx = np.nonzero(stream.known & (stream.ts >= stream.drift_time) & np.isfinite(scores))[0]
    target = opts.recovery_share * pre_auc
    chunks = _chunks(idx, stream.y, opts.chunk_frauds)
    aucs = [roc_auc(stream.y[c], scores[c]) for c in chunks]
    out: dict[str, Any] = {
        "target_roc_auc": target,
        "chunk_frauds": opts.chunk_frauds,
        "chunk_roc_auc": aucs,
        "lowest_chunk_roc_auc": float(np.nanmin(aucs)) if aucs else math.nan,
        "recovered": False,
    }
    arrived = stream.label_time[np.isfinite(stream.label_time)]
    fraud_arrived = stream.label_time[np.isfinite(stream.label_time) & stream.y]
    for k, (c, auc) in enumerate(zip(chunks, aucs, strict=True)):
        if len(chunks) - k < opts.recovery_min_chunks:
            break
        if not auc >= target:
            continue
        tail = idx[idx >= c[0]]
        tail_auc = roc_auc(stream.y[tail], scores[tail])
        if tail_auc >= target:
            start = float(stream.ts[c[0]])
            after = (arrived >= stream.drift_time) & (arrived < start)
            fraud_after = (fraud_arrived >= stream.drift_time) & (fraud_arrived < start)
            out.update(
                recovered=True,
                labels=int(after.sum()),
                fraud_labels=int(fraud_after.sum()),
                hours=(start - stream.drift_time) / 3600.0,
                recovered_roc_auc=tail_auc,
                chunks_below_after=sum(1 for a in aucs[k + 1 :] if a < target),
                chunks_after=len(aucs) - k - 1,
            )
            break
    return out


def _alerts(
    stream: Stream, scores: np.ndarray, masks: dict[str, np.ndarray], opts: ReportOptions
) -> dict[str, Any]:
    calibrated = calibrated_thresholds(scores, opts.alert_rate, opts.calibration_window)
    out: dict[str, Any] = {}
    for seg, m in masks.items():
        m = m & np.isfinite(scores)
        days = max((stream.ts[m].max() - stream.ts[m].min()) / DAY_S, 1e-9) if m.any() else 0.0
        fixed = alert_stats(stream.y[m], scores[m] >= opts.threshold, days)
        mc = m & np.isfinite(calibrated)
        cal = alert_stats(stream.y[mc], scores[mc] >= calibrated[mc], days)
        out[seg] = {"fixed": fixed, "calibrated": cal}
    return out


def _sweep(stream: Stream, scores: np.ndarray, mask: np.ndarray) -> list[dict[str, float]]:
    m = mask & np.isfinite(scores)
    days = max((stream.ts[m].max() - stream.ts[m].min()) / DAY_S, 1e-9) if m.any() else 0.0
    return [
        {"threshold": t} | alert_stats(stream.y[m], scores[m] >= t, days) for t in SWEEP_THRESHOLDS
    ]


def top_scored(stream: Stream, result: LearnerResult) -> list[dict[str, Any]]:
    """The learner's top-scored transactions, best first, with their reasons."""
    t0 = float(stream.ts[0])
    out = []
    for rank, s in enumerate(result.top, start=1):
        tx = stream.transactions[s.row]
        ex = s.explanation
        out.append(
            {
                "rank": rank,
                "transaction_id": tx.transaction_id,
                "card_id": tx.card_id,
                "score": s.score,
                "is_fraud": bool(stream.y[s.row]) if stream.known[s.row] else None,
                "pattern": stream.patterns[s.row] if stream.patterns is not None else None,
                "time": iso(float(stream.ts[s.row])),
                "day": (float(stream.ts[s.row]) - t0) / DAY_S,
                "after_drift": (
                    bool(stream.ts[s.row] >= stream.drift_time)
                    if stream.drift_time is not None
                    else None
                ),
                "logit": ex["logit"],
                "intercept": ex["intercept"],
                "reasons": [{"feature": f, "contribution": c} for f, c in ex["reasons"]],
                "other": ex["other"],
            }
        )
    return out


def build_report(
    stream: Stream,
    results: dict[str, LearnerResult],
    static_until: float,
    opts: ReportOptions,
    meta: dict[str, Any],
) -> dict[str, Any]:
    masks = _segments(stream, static_until)
    windows = _windows(stream, opts)
    t0 = float(stream.ts[0])
    learners: dict[str, Any] = {}
    for name, r in results.items():
        s = r.scores
        segs: dict[str, dict[str, Any]] = {}
        for seg, m in masks.items():
            mm = m & np.isfinite(s)
            segs[seg] = quality(stream.y[mm], s[mm], stream.ts[mm], opts)
        win = []
        for lo, hi in windows:
            mm = stream.known & (stream.ts >= lo) & (stream.ts < hi) & np.isfinite(s)
            q = {"roc_auc": math.nan, "average_precision": math.nan, "frauds": 0}
            if mm.any():
                q = {
                    "roc_auc": roc_auc(stream.y[mm], s[mm]),
                    "average_precision": average_precision(stream.y[mm], s[mm]),
                    "frauds": int(stream.y[mm].sum()),
                }
            win.append(q)
        if stream.patterns is not None:
            # Generated streams: ROC AUC of each fraud scenario against all legit traffic.
            patterns = np.array([p or "" for p in stream.patterns])
            for seg, m in masks.items():
                mm = m & np.isfinite(s)
                legit = mm & ~stream.y
                segs[seg]["roc_auc_by_pattern"] = {
                    str(name): roc_auc(stream.y[sel], s[sel])
                    for name in sorted(set(patterns[mm & stream.y]))
                    if (sel := legit | (mm & (patterns == name))).any()
                }
        pre = segs.get("pre-drift", {}).get("roc_auc", math.nan)
        detections = r.detections
        drift = stream.drift_time
        worse_after = [
            d
            for d in detections
            if d["worse"] and d["stream"] == "fraud" and drift is not None and d["time"] >= drift
        ]
        learners[name] = {
            "segments": segs,
            "windows": win,
            "recovery": recovery(stream, s, pre, opts),
            "alerts": _alerts(stream, s, masks, opts),
            "drift_detections": detections,
            "first_degradation_after_drift": (
                {
                    "hours": (worse_after[0]["time"] - drift) / 3600.0,
                    "labels": worse_after[0]["labels"],
                }
                if worse_after and drift is not None
                else None
            ),
            "false_alarms_before_drift": sum(
                1
                for d in detections
                if d["worse"] and d["stream"] == "fraud" and drift is not None and d["time"] < drift
            ),
            "reactions": r.reactions,
            "labels_learned": r.updates,
            "seconds": r.seconds,
            "info": r.info,
        }
        if name == "online":
            learners[name]["threshold_sweep"] = _sweep(stream, s, masks["overall"])
        if r.top:
            learners[name]["top_scored"] = top_scored(stream, r)
    report = {
        "stream": meta
        | {
            "transactions": len(stream),
            "frauds": int(stream.y[stream.known].sum()),
            "measured": int(stream.known.sum()),
            "labels": int(np.isfinite(stream.label_time).sum()),
            "start": float(stream.ts[0]),
            "end": float(stream.ts[-1]),
            "days": (float(stream.ts[-1]) - t0) / DAY_S,
            "drift_time": stream.drift_time,
            "drift_day": (stream.drift_time - t0) / DAY_S if stream.drift_time else None,
            "static_until_day": (static_until - t0) / DAY_S,
        },
        "windows": [
            {"start_day": (lo - t0) / DAY_S, "end_day": (hi - t0) / DAY_S} for lo, hi in windows
        ],
        "learners": learners,
    }
    report["options"] = {
        "fpr": opts.fpr,
        "daily_budget": opts.daily_budget,
        "threshold": opts.threshold,
        "alert_rate": opts.alert_rate,
        "chunk_frauds": opts.chunk_frauds,
        "recovery_share": opts.recovery_share,
        "recovery_min_chunks": opts.recovery_min_chunks,
    }
    return _nan_to_none(report)
