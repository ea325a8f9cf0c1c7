"""Rolling model quality, computed on each label before the model learns it (progressive)."""

from __future__ import annotations

import math

from river import metrics, utils


class RollingQuality:
    def __init__(self, window: int, threshold: float) -> None:
        self.threshold = threshold
        self.roc_auc = metrics.RollingROCAUC(window_size=window)
        self.precision = utils.Rolling(metrics.Precision(), window_size=window)
        self.recall = utils.Rolling(metrics.Recall(), window_size=window)
        self.log_loss = utils.Rolling(metrics.LogLoss(), window_size=window)
        self.seen = 0

    def update(self, y: bool, p: float) -> None:
        self.seen += 1
        self.roc_auc.update(y, p)
        flagged = p >= self.threshold
        self.precision.update(y, flagged)
        self.recall.update(y, flagged)
        self.log_loss.update(y, p)

    def as_dict(self) -> dict[str, float]:
        out = {
            "roc_auc": self.roc_auc.get(),
            "precision": self.precision.get(),
            "recall": self.recall.get(),
            "log_loss": self.log_loss.get(),
        }
        return {k: float(v) for k, v in out.items() if v is not None and math.isfinite(v)}
