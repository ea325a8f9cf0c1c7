"""Rolling model quality, computed on each label before the model learns it (progressive)."""

from __future__ import annotations

import math
from collections import deque

from river import metrics

_EPS = 1e-15


class RollingQuality:
    """ROC AUC (River's rolling estimator) plus precision, recall and log loss at the
    threshold over the same window, kept as running sums so each update is O(1)."""

    def __init__(self, window: int, threshold: float) -> None:
        self.threshold = threshold
        self.window = window
        self.roc_auc = metrics.RollingROCAUC(window_size=window)
        self._recent: deque[tuple[bool, bool, float]] = deque()
        self.tp = self.fp = self.fn = 0
        self.loss_sum = 0.0
        self.seen = 0

    def update(self, y: bool, p: float) -> None:
        # Once per label: `_add` inlined (adding `sign * loss` is adding or subtracting loss).
        self.seen += 1
        self.roc_auc.update(y, p)
        flagged = p >= self.threshold
        loss = -math.log(max(p, _EPS)) if y else -math.log(max(1.0 - p, _EPS))
        if flagged:
            if y:
                self.tp += 1
            else:
                self.fp += 1
        elif y:
            self.fn += 1
        self.loss_sum += loss
        recent = self._recent
        recent.append((y, flagged, loss))
        if len(recent) > self.window:
            self._add(*recent.popleft(), -1)

    def _add(self, y: bool, flagged: bool, loss: float, sign: int) -> None:
        if flagged and y:
            self.tp += sign
        elif flagged:
            self.fp += sign
        elif y:
            self.fn += sign
        self.loss_sum += sign * loss

    def as_dict(self) -> dict[str, float]:
        out: dict[str, float] = {}
        if self._recent:
            out["log_loss"] = max(self.loss_sum, 0.0) / len(self._recent)
            # No positives (or no alerts) in the window: the metric is undefined, not 0.
            if self.tp + self.fp:
                out["precision"] = self.tp / (self.tp + self.fp)
            if self.tp + self.fn:
                out["recall"] = self.tp / (self.tp + self.fn)
            auc = self.roc_auc.get()
            if self.tp + self.fn and math.isfinite(auc):
                out["roc_auc"] = float(auc)
        return out
