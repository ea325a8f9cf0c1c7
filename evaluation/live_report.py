"""Grade the scores the running system served beside the offline replay's, on the same rows.

Both sides are graded on the transactions whose ground truth is known and whose event time
is past the burn-in: the offline online learner on all of them, the served scores on those
that were scored (the rest are counted as unscored). Scores served by the untrained model
(`model_version` 0, before the trainer's first snapshot reached the scorer) count as served.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from evaluation.metrics import roc_auc
from evaluation.report import ReportOptions, _nan_to_none, quality
from evaluation.report_markdown import _f
from evaluation.streams import DAY_S, Stream

UNTRAINED_VERSION = 0


@dataclass
class Served:
    """What was read back from `scores`, aligned with the stream's rows."""

    scores: np.ndarray  # float64; NaN: never scored
    versions: np.ndarray  # int64; -1: never scored
    read: int  # Score records read, duplicates included
    duplicates: int  # records for a transaction already scored (at-least-once), dropped
    unknown: int  # records for a transaction that is not in the stream
    scored_at: np.ndarray  # float64 epoch seconds of the Score's scored_at; NaN: never scored

    @property
    def scored(self) -> np.ndarray:
        return self.versions >= 0


def by_pattern(stream: Stream, s: np.ndarray, mask: np.ndarray) -> dict[str, dict[str, Any]]:
    """ROC AUC of each fraud scenario's transactions against all legit ones in `mask`."""
    if stream.patterns is None:
        return {}
    patterns = np.array([p or "" for p in stream.patterns])
    legit = mask & ~stream.y
    out = {}
    for name in sorted(set(patterns[mask & stream.y])):
        sel = legit | (mask & stream.y & (patterns == name))
        out[str(name)] = {
            "frauds": int((mask & stream.y & (patterns == name)).sum()),
            "roc_auc": roc_auc(stream.y[sel], s[sel]),
        }
    return out


def _segments(stream: Stream, start: float) -> dict[str, np.ndarray]:
    graded = stream.known & (stream.ts >= start)
    out = {"graded": graded}
    drift = stream.drift_time
    if drift is not None and start < drift <= float(stream.ts[-1]):
        out["pre-drift"] = graded & (stream.ts < drift)
        out["post-drift"] = graded & (stream.ts >= drift)
    return out


def grade(
    stream: Stream,
    offline: np.ndarray,
    served: Served,
    burn_in_s: float,
    opts: ReportOptions,
    meta: dict[str, Any],
) -> dict[str, Any]:
    """The side-by-side report (plain JSON values)."""
    t0 = float(stream.ts[0])
    start = t0 + burn_in_s
    scored = served.scored
    segments: dict[str, Any] = {}
    for name, m in _segments(stream, start).items():
        mm = m & scored
        off: dict[str, Any] = dict(quality(stream.y[m], offline[m], stream.ts[m], opts))
        off["roc_auc_by_pattern"] = by_pattern(stream, offline, m)
        live: dict[str, Any] = dict(quality(stream.y[mm], served.scores[mm], stream.ts[mm], opts))
        live["roc_auc_by_pattern"] = by_pattern(stream, served.scores, mm)
        live["unscored"] = int(m.sum() - mm.sum())
        live["untrained_share"] = (
            float((served.versions[mm] == UNTRAINED_VERSION).mean()) if mm.any() else math.nan
        )
        segments[name] = {"offline": off, "live": live}
    versions = np.unique(served.versions[scored])
    trained = versions[versions != UNTRAINED_VERSION]
    report = {
        "stream": meta
        | {
            "transactions": len(stream),
            "frauds": int(stream.y[stream.known].sum()),
            "labels": int(np.isfinite(stream.label_time).sum()),
            "days": (float(stream.ts[-1]) - t0) / DAY_S,
            "drift_day": (stream.drift_time - t0) / DAY_S if stream.drift_time else None,
            "burn_in_s": burn_in_s,
            "graded_from_day": burn_in_s / DAY_S,
        },
        "served": {
            "scores_read": served.read,
            "transactions_scored": int(scored.sum()),
            "unscored": int((~scored).sum()),
            "duplicates_dropped": served.duplicates,
            "unknown_transactions": served.unknown,
            "model_versions": {
                "count": len(versions),
                "first_trained": int(trained[0]) if len(trained) else None,
                "last": int(versions[-1]) if len(versions) else None,
            },
        },
        "segments": segments,
        "options": {"fpr": opts.fpr, "daily_budget": opts.daily_budget},
    }
    return _nan_to_none(report)


def render(report: dict[str, Any]) -> str:
    st, sv, lv = report["stream"], report["served"], report["live"]
    fpr = report["options"]["fpr"]
    drift = f", drift at day {st['drift_day']:.1f}" if st.get("drift_day") is not None else ""
    where = f"{lv['bootstrap']}" + (" (embedded broker)" if lv["embedded"] else "")
    lines = [
        f"**fraudstream evaluate --live** — {st['transactions']:,} transactions over "
        f"{st['days']:.1f} days, {st['frauds']:,} fraud, {st['labels']:,} labels{drift}; "
        f"played at {lv['rate']:,.0f} records/s through `score` and `train` processes on "
        f"{where}, topics `*-{lv['topic_suffix']}`; graded from day "
        f"{st['graded_from_day']:.1f}. Offline: `evaluate`'s online learner on the same stream.",
        "",
        f"| segment | frauds | ROC AUC offline | ROC AUC live | avg precision offline | "
        f"avg precision live | recall @{fpr:.1%} FPR offline | recall live | unscored | "
        "scored by the untrained model |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, seg in report["segments"].items():
        off, live = seg["offline"], seg["live"]
        share = live["untrained_share"]
        lines.append(
            f"| {name} | {_f(off['frauds'])} | {_f(off['roc_auc'])} | {_f(live['roc_auc'])} | "
            f"{_f(off['average_precision'])} | {_f(live['average_precision'])} | "
            f"{_f(off['recall_at_fpr'])} | {_f(live['recall_at_fpr'])} | "
            f"{_f(live['unscored'])} | {'—' if share is None else f'{share:.1%}'} |"
        )
    graded = report["segments"]["graded"]
    patterns = graded["offline"]["roc_auc_by_pattern"]
    if patterns:
        lines += [
            "",
            "ROC AUC per fraud scenario (its frauds against all legit transactions, graded rows):",
            "",
            "| scenario | frauds | offline | live |",
            "| --- | ---: | ---: | ---: |",
        ]
        live_patterns = graded["live"]["roc_auc_by_pattern"]
        for name, q in patterns.items():
            lq = live_patterns.get(name, {})
            lines.append(
                f"| {name} | {q['frauds']} | {_f(q['roc_auc'])} | {_f(lq.get('roc_auc'))} |"
            )
    mv = sv["model_versions"]
    delay = lv["scoring_delay_s"]
    first = f"v{mv['first_trained']}" if mv["first_trained"] is not None else "none trained"
    lines += [
        "",
        f"Served: {sv['transactions_scored']:,} of {st['transactions']:,} transactions scored "
        f"({sv['scores_read']:,} Score records read, {sv['duplicates_dropped']:,} duplicates "
        f"dropped, {sv['unscored']:,} unscored); {mv['count']} model versions "
        f"(first trained {first}, last v{mv['last']}); scored {_f(delay['p50'], 2)} s "
        f"(median; p99 {_f(delay['p99'], 2)} s) after it was sent, scorer lag at most "
        f"{lv['max_scorer_lag']:,.0f} records; published {lv['published']['transactions']:,} "
        f"transactions and {lv['published']['labels']:,} labels in "
        f"{lv['seconds']['publish']:.0f} s ({_f(lv['achieved_rate'], 0)} records/s), "
        f"{lv['seconds']['total']:.0f} s in all.",
    ]
    return "\n".join(lines) + "\n"
