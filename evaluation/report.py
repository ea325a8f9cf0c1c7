"""Turn replayed scores into the evaluation: segments, windows, recovery, alerts, drift, plot.

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
from pathlib import Path
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


# ------------------------------------------------------------------------------- rendering


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    st = report["stream"]
    opts = report["options"]
    lines = []
    drift = f"drift at day {st['drift_day']:.1f}" if st.get("drift_day") is not None else "no drift"
    lines.append(
        f"**fraudstream evaluate** — {st['transactions']:,} transactions over {st['days']:.1f} "
        f"days, {st['frauds']:,} fraud ({st['frauds'] / max(st['measured'], 1):.2%}), "
        f"{st['labels']:,} labels; {drift}; static model trained on labels that arrived "
        f"before day {st['static_until_day']:.1f}; measured from then on."
    )
    lines.append("")
    budget = opts["daily_budget"]
    lines.append(
        f"| learner | segment | frauds | ROC AUC | avg precision | recall @{opts['fpr']:.1%} FPR "
        f"| precision @{budget}/day |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, lr in report["learners"].items():
        for seg, q in lr["segments"].items():
            lines.append(
                f"| {name} | {seg} | {_f(q['frauds'])} | {_f(q['roc_auc'])} | "
                f"{_f(q['average_precision'])} | {_f(q['recall_at_fpr'])} | "
                f"{_f(q['precision_at_budget'])} |"
            )
    if st.get("drift_day") is not None:
        lines.append("")
        lines.append(
            f"Recovery after the drift: first chunk of {opts['chunk_frauds']} frauds whose ROC AUC "
            f"reaches {opts['recovery_share']:.0%} of the learner's pre-drift ROC AUC and stays "
            f"there to the end, over at least {opts['recovery_min_chunks']} chunks; ADWIN on the "
            "per-label loss of fraud labels."
        )
        lines.append("")
        lines.append(
            "| learner | pre-drift AUC | target | lowest chunk AUC | recovered | labels after "
            "drift | fraud labels | hours | AUC from there | chunks below target after | "
            "ADWIN: degradation seen after | false alarms before | reactions |"
        )
        lines.append("| --- | " + "---: | " * 3 + "--- | " + "---: | " * 5 + "--- | ---: | ---: |")
        for name, lr in report["learners"].items():
            rec = lr["recovery"] or {}
            pre = lr["segments"].get("pre-drift", {}).get("roc_auc")
            seen = lr["first_degradation_after_drift"]
            seen_s = f"{seen['hours']:.0f} h" if seen else "not seen"
            ok = rec.get("recovered")
            lines.append(
                f"| {name} | {_f(pre)} | {_f(rec.get('target_roc_auc'))} | "
                f"{_f(rec.get('lowest_chunk_roc_auc'))} | {'yes' if ok else 'no'} | "
                f"{_f(rec.get('labels')) if ok else '—'} | "
                f"{_f(rec.get('fraud_labels')) if ok else '—'} | "
                f"{_f(rec.get('hours'), 0) if ok else '—'} | "
                f"{_f(rec.get('recovered_roc_auc')) if ok else '—'} | "
                f"{_f(rec.get('chunks_below_after')) if ok else '—'} | {seen_s} | "
                f"{lr['false_alarms_before_drift']} | {lr['reactions']} |"
            )
    lines.append("")
    lines.append(
        f"Decisions: fixed threshold {opts['threshold']} vs a threshold calibrated, from each "
        f"learner's recent scores, to alert on {opts['alert_rate']:.1%} of transactions."
    )
    lines.append("")
    lines.append(
        "| learner | segment | alerts/day @fixed | precision | recall | alerts/day @calibrated "
        "| precision | recall |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, lr in report["learners"].items():
        for seg, a in lr["alerts"].items():
            fx, cal = a["fixed"], a["calibrated"]
            lines.append(
                f"| {name} | {seg} | {_f(fx['alerts_per_day'], 0)} | {_f(fx['precision'])} | "
                f"{_f(fx['recall'])} | {_f(cal['alerts_per_day'], 0)} | "
                f"{_f(cal['precision'])} | {_f(cal['recall'])} |"
            )
    sweep = report["learners"].get("online", {}).get("threshold_sweep")
    if sweep:
        lines.append("")
        lines.append("Online model, effect of the threshold (overall):")
        lines.append("")
        lines.append("| threshold | alerts/day | alert rate | precision | recall |")
        lines.append("| ---: | ---: | ---: | ---: | ---: |")
        for row in sweep:
            lines.append(
                f"| {row['threshold']} | {_f(row['alerts_per_day'], 0)} | "
                f"{_f(row['alert_rate'], 4)} | {_f(row['precision'])} | {_f(row['recall'])} |"
            )
    for name, lr in report["learners"].items():
        lines += _render_top(name, lr.get("top_scored") or [])
    lines.append("")
    names = list(report["learners"])
    lines.append(
        "ROC AUC per time window (days from the start; ← drift marks the first window after it):"
    )
    lines.append("")
    lines.append("| window (days) | frauds | " + " | ".join(names) + " |")
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in names) + " |")
    drift_day = st.get("drift_day")
    for k, w in enumerate(report["windows"]):
        mark = (
            " ← drift" if drift_day is not None and abs(w["start_day"] - drift_day) < 1e-9 else ""
        )
        frauds = max(report["learners"][n]["windows"][k]["frauds"] for n in names)
        cells = " | ".join(_f(report["learners"][n]["windows"][k]["roc_auc"]) for n in names)
        lines.append(f"| {w['start_day']:.1f}–{w['end_day']:.1f}{mark} | {frauds} | {cells} |")
    return "\n".join(lines) + "\n"


def _render_top(name: str, top: list[dict[str, Any]]) -> list[str]:
    if not top:
        return []
    scenario = any(t.get("pattern") is not None for t in top)
    lines = [
        "",
        f"{name.capitalize()} model, its {len(top)} highest scores (equal scores: by logit) and "
        "the features that pushed each up most (contribution to the logit; intercept + these + "
        "the other contributions = logit):",
        "",
        "| # | transaction | day | fraud | "
        + ("scenario | " if scenario else "")
        + "score | logit | reasons | intercept | other |",
        "| ---: | --- | ---: | --- | "
        + ("--- | " if scenario else "")
        + "---: | ---: | --- | ---: | ---: |",
    ]
    for t in top:
        label = {True: "yes", False: "no", None: "—"}[t["is_fraud"]]
        reasons = ", ".join(f"{r['feature']} {r['contribution']:+.2f}" for r in t["reasons"])
        lines.append(
            f"| {t['rank']} | {t['transaction_id']} | {t['day']:.1f} | {label} | "
            + (f"{t.get('pattern') or '—'} | " if scenario else "")
            + f"{_f(t['score'], 4)} | {t['logit']:+.2f} | {reasons or '—'} | "
            f"{t['intercept']:+.2f} | {t['other']:+.2f} |"
        )
    return lines


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = report["stream"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    mids = [(w["start_day"] + w["end_day"]) / 2 for w in report["windows"]]
    colors = {"online": "tab:blue", "static": "tab:gray", "forest": "tab:green"}
    for name, lr in report["learners"].items():
        color = colors.get(name)
        auc = [w["roc_auc"] if w["roc_auc"] is not None else np.nan for w in lr["windows"]]
        ap = [
            w["average_precision"] if w["average_precision"] is not None else np.nan
            for w in lr["windows"]
        ]
        axes[0].plot(mids, auc, marker="o", ms=3, label=name, color=color)
        axes[1].plot(mids, ap, marker="o", ms=3, label=name, color=color)
        for d in lr["drift_detections"]:
            if d["worse"] and d["stream"] == "fraud":
                day = (d["time"] - st["start"]) / DAY_S
                axes[0].axvline(day, color=color, ls=":", lw=1, alpha=0.8)
    for ax in axes:
        if st.get("drift_day") is not None:
            ax.axvline(st["drift_day"], color="red", lw=2, label="drift")
        ax.axvline(st["static_until_day"], color="black", ls="--", lw=1, label="static trained")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ROC AUC per window")
    axes[1].set_ylabel("average precision per window")
    axes[1].set_xlabel("days from the start (dotted: ADWIN saw the fraud loss rise)")
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title("fraudstream evaluate: progressive validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
