"""Ranking and alerting metrics on numpy arrays (no scikit-learn needed).

All take `y` (bool, True = fraud) and `s` (scores, higher = more suspicious); ties in the
scores are handled as one threshold, as scikit-learn does. A metric that is undefined on its
input (no fraud, or no legit) is NaN.
"""

from __future__ import annotations

import math

import numpy as np


def _classes(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int]:
    """`y` as bools, `s` as floats, and the counts of fraud and legit."""
    y = np.asarray(y, dtype=bool)
    n1 = int(y.sum())
    return y, np.asarray(s, dtype=np.float64), n1, len(y) - n1


def _curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Cumulative true and false positives at each distinct threshold, highest first."""
    order = np.argsort(-s, kind="mergesort")
    ys = y[order]
    ss = s[order]
    tp = np.cumsum(ys)
    fp = np.cumsum(~ys)
    last = np.r_[np.nonzero(np.diff(ss))[0], len(ss) - 1]
    return tp[last], fp[last]


def roc_auc(y: np.ndarray, s: np.ndarray) -> float:
    y, s, n1, n0 = _classes(y, s)
    if n1 == 0 or n0 == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    _, inverse, counts = np.unique(s[order], return_inverse=True, return_counts=True)
    average = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based average rank of each tie group
    ranks = np.empty(len(s))
    ranks[order] = average[inverse]
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2.0) / (n1 * n0))


def average_precision(y: np.ndarray, s: np.ndarray) -> float:
    y, s, n1, n0 = _classes(y, s)
    if n1 == 0 or n0 == 0:
        return math.nan
    tp, fp = _curve(y, s)
    precision = tp / (tp + fp)
    recall = tp / n1
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def recall_at_fpr(y: np.ndarray, s: np.ndarray, fpr: float) -> float:
    """Best recall among thresholds whose false-positive rate is at most `fpr`."""
    y, s, n1, n0 = _classes(y, s)
    if n1 == 0 or n0 == 0:
        return math.nan
    tp, fp = _curve(y, s)
    ok = fp / n0 <= fpr
    return float(tp[ok].max() / n1) if ok.any() else 0.0


def precision_at_budget(y: np.ndarray, s: np.ndarray, day: np.ndarray, per_day: int) -> float:
    """Share of fraud among the `per_day` highest scores of each day (what reviewers see)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    if len(y) == 0 or per_day <= 0:
        return math.nan
    order = np.lexsort((-s, day))
    d = np.asarray(day)[order]
    starts = np.r_[0, np.nonzero(np.diff(d))[0] + 1]
    rank = np.arange(len(d)) - np.repeat(starts, np.diff(np.r_[starts, len(d)]))
    chosen = order[rank < per_day]
    return float(y[chosen].mean())


def alert_stats(y: np.ndarray, flagged: np.ndarray, days: float) -> dict[str, float]:
    """Alerts per day, precision and recall of a decision (flagged = alert raised)."""
    y = np.asarray(y, dtype=bool)
    flagged = np.asarray(flagged, dtype=bool)
    n_flag = int(flagged.sum())
    n_fraud = int(y.sum())
    hits = int((y & flagged).sum())
    return {
        "alerts_per_day": n_flag / days if days > 0 else math.nan,
        "alert_rate": n_flag / len(y) if len(y) else math.nan,
        "precision": hits / n_flag if n_flag else math.nan,
        "recall": hits / n_fraud if n_fraud else math.nan,
    }
