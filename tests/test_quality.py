import random

import pytest
from river import metrics, utils

from trainer.quality import RollingQuality


def test_rolling_quality_matches_river_over_the_window() -> None:
    rng = random.Random(3)
    q = RollingQuality(window=200, threshold=0.5)
    prec = utils.Rolling(metrics.Precision, window_size=200)
    rec = utils.Rolling(metrics.Recall, window_size=200)
    loss = utils.Rolling(metrics.LogLoss, window_size=200)
    for _ in range(1000):
        y = rng.random() < 0.2
        p = min(max(rng.gauss(0.7 if y else 0.3, 0.2), 0.0), 1.0)
        q.update(y, p)
        prec.update(y, p >= 0.5)
        rec.update(y, p >= 0.5)
        loss.update(y, p)
    d = q.as_dict()
    assert d["precision"] == pytest.approx(prec.get())
    assert d["recall"] == pytest.approx(rec.get())
    assert d["log_loss"] == pytest.approx(loss.get(), rel=1e-6)
    assert 0.5 < d["roc_auc"] <= 1.0


def test_undefined_metrics_are_absent_not_zero() -> None:
    q = RollingQuality(window=10, threshold=0.5)
    q.update(False, 0.1)
    d = q.as_dict()
    assert "precision" not in d and "recall" not in d and "roc_auc" not in d
