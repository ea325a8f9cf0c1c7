"""The River model, and a compiled copy of it that scores a whole batch at once.

The scorer never calls River per record: `CompiledModel` mirrors the StandardScaler's means and
variances and the LogisticRegression's weights into arrays, so a batch is one matrix product.
`tests/test_model.py` checks it agrees with River's `predict_proba_one` to 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from river import compose, linear_model, optim, preprocessing

from infra.config import ModelSettings
from scorer.features import DENSE_FEATURES, FeatureBatch


def build_pipeline(settings: ModelSettings | None = None) -> compose.Pipeline:
    s = settings or ModelSettings()
    # Start the intercept at the prior fraud rate, so an untrained model scores ~1%, not 50%.
    prior = math.log(s.prior_fraud_rate / (1.0 - s.prior_fraud_rate))
    return compose.Pipeline(
        ("scale", preprocessing.StandardScaler()),
        (
            "logreg",
            linear_model.LogisticRegression(
                optimizer=optim.SGD(s.learning_rate), l2=s.l2, intercept_init=prior
            ),
        ),
    )


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # River's sigmoid returns exactly 0 / 1 beyond |z| > 30: mirror it so both paths agree.
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    p[z < -30.0] = 0.0
    p[z > 30.0] = 1.0
    return p


@dataclass(frozen=True)
class CompiledModel:
    """Arrays mirroring a StandardScaler | LogisticRegression pipeline, for batch scoring."""

    version: int
    mean: np.ndarray
    inv_std: np.ndarray  # 0 where the variance is 0, as River's scaler yields 0 there
    weight: np.ndarray
    intercept: float
    # Contribution of each one-hot key when present: w * (1 - mean) / std.
    sparse: dict[str, float]

    @classmethod
    def from_pipeline(cls, pipeline: compose.Pipeline, version: int) -> CompiledModel:
        scaler: preprocessing.StandardScaler = pipeline["scale"]
        logreg: linear_model.LogisticRegression = pipeline["logreg"]
        weights = logreg.weights
        n = len(DENSE_FEATURES)
        mean = np.zeros(n)
        inv_std = np.zeros(n)
        weight = np.zeros(n)
        for j, name in enumerate(DENSE_FEATURES):
            mean[j] = scaler.means.get(name, 0.0)
            var = scaler.vars.get(name, 0.0)
            inv_std[j] = 1.0 / math.sqrt(var) if var else 0.0
            weight[j] = weights.get(name, 0.0)
        dense = set(DENSE_FEATURES)
        sparse: dict[str, float] = {}
        for name, w in weights.items():
            if name in dense:
                continue
            var = scaler.vars.get(name, 0.0)
            if var:
                sparse[name] = w * (1.0 - scaler.means.get(name, 0.0)) / math.sqrt(var)
        return cls(version, mean, inv_std, weight, float(logreg.intercept), sparse)

    def logits(self, batch: FeatureBatch) -> np.ndarray:
        z = ((batch.dense - self.mean) * self.inv_std) @ self.weight + self.intercept
        sparse = self.sparse
        if sparse:
            extra = [sum(sparse.get(k, 0.0) for k in keys) for keys in batch.sparse]
            z += np.asarray(extra)
        return z

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(0)
        return _sigmoid(self.logits(batch))

    def reasons(self, batch: FeatureBatch, top: int = 3) -> list[list[tuple[str, float]]]:
        """Per record, the `top` features that pushed its logit up most, with their signed
        contributions w * (x - mean) / std (they and the intercept sum to the logit)."""
        n = len(batch)
        if n == 0:
            return []
        contrib = ((batch.dense - self.mean) * self.inv_std) * self.weight
        k = min(top, contrib.shape[1])
        idx = np.argpartition(-contrib, k - 1, axis=1)[:, :k]
        values = np.take_along_axis(contrib, idx, axis=1)
        out: list[list[tuple[str, float]]] = []
        names = DENSE_FEATURES
        sparse = self.sparse
        for row_idx, row_val, keys in zip(idx.tolist(), values.tolist(), batch.sparse, strict=True):
            cands = [(names[j], v) for j, v in zip(row_idx, row_val, strict=True) if v > 0.0]
            for key in keys:
                v = sparse.get(key, 0.0)
                if v > 0.0:
                    cands.append((key, v))
            cands.sort(key=lambda kv: kv[1], reverse=True)
            out.append(cands[:top])
        return out


def predict_one(pipeline: compose.Pipeline, features: dict[str, float]) -> float:
    """River's own probability of fraud for one feature dict (the reference path)."""
    return float(pipeline.predict_proba_one(features).get(True, 0.0))


def feature_names(pipeline: compose.Pipeline) -> Sequence[str]:
    return tuple(pipeline["scale"].means)
