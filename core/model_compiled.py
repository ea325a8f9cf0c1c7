"""The River model mirrored into arrays, scoring a whole batch at once: the scorer's model.

The scorer never calls River per record: `CompiledModel` mirrors the scaler's means and
variances and the LogisticRegression's weights (`core.model`, the reference) into arrays, so a
batch is one matrix product. `tests/test_model_compiled_mirror.py` checks it agrees with
River's `predict_proba_one` to 1e-9.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from river import compose

from core.features import DENSE_FEATURES, FeatureBatch
from core.model import (
    VAR_FLOOR,
    Z_CLIP,
    is_legacy,
    pipeline_steps,
    scaler_stats,
    served_weights,
)
from core.vocabulary import ONE_HOT

_DENSE = frozenset(DENSE_FEATURES)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # River's sigmoid returns exactly 0 / 1 beyond |z| > 30: mirror it so both paths agree.
    p: np.ndarray = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
    p[z < -30.0] = 0.0
    p[z > 30.0] = 1.0
    return p


@dataclass(frozen=True)
class CompiledModel:
    """Arrays mirroring a DenseScaler | LogisticRegression pipeline, for batch scoring."""

    version: int
    mean: np.ndarray
    inv_std: np.ndarray  # 0 where the variance is at most VAR_FLOOR (0, legacy), as the scaler
    weight: np.ndarray
    intercept: float
    # Contribution of each one-hot key when present: its weight (the key passes unscaled).
    sparse: dict[str, float]
    # Bound on standardised values (Z_CLIP; none for a legacy scaler, which does not clip).
    clip: float = Z_CLIP
    # onehot_weights() by the number of ONE_HOT keys it covers.
    _onehot_weights: dict[int, np.ndarray] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def from_pipeline(cls, pipeline: compose.Pipeline, version: int) -> CompiledModel:
        _, logreg = pipeline_steps(pipeline)
        means, vars_ = scaler_stats(pipeline)
        legacy = is_legacy(pipeline)
        floor = 0.0 if legacy else VAR_FLOOR
        weights, intercept = served_weights(logreg)
        n = len(DENSE_FEATURES)
        mean = np.zeros(n)
        inv_std = np.zeros(n)
        weight = np.zeros(n)
        for j, name in enumerate(DENSE_FEATURES):
            mean[j] = means.get(name, 0.0)
            var = vars_.get(name, 0.0)
            inv_std[j] = 1.0 / math.sqrt(var) if var > floor else 0.0
            weight[j] = weights.get(name, 0.0)
        sparse: dict[str, float] = {}
        for name, w in weights.items():
            if name in _DENSE or not w:
                continue
            if not legacy:
                sparse[name] = w
            elif var := vars_.get(name, 0.0):
                # Legacy: the plain scaler's view of a key present at 1.0 (0 at variance 0).
                sparse[name] = w * (1.0 - means.get(name, 0.0)) / math.sqrt(var)
        clip = math.inf if legacy else Z_CLIP
        return cls(version, mean, inv_std, weight, intercept, sparse, clip)

    def onehot_weights(self) -> np.ndarray:
        """The weight of every `ONE_HOT` key by id, then a 0.0 that id -1 (none) picks."""
        names = ONE_HOT.names
        cached = self._onehot_weights.get(len(names))
        if cached is None:
            get = self.sparse.get
            cached = np.array([get(name, 0.0) for name in names] + [0.0])
            self._onehot_weights.clear()
            self._onehot_weights[len(names)] = cached
        return cached

    def scaled(self, dense: np.ndarray) -> np.ndarray:
        """The dense features as the scaler gives them to the weights (clipped z-scores)."""
        z: np.ndarray = (dense - self.mean) * self.inv_std
        np.clip(z, -self.clip, self.clip, out=z)
        return z

    def logits(self, batch: FeatureBatch) -> np.ndarray:
        z: np.ndarray = self.scaled(batch.dense) @ self.weight + self.intercept
        sparse = self.sparse
        if sparse:
            if batch.onehot is not None:
                w = self.onehot_weights()
                # The same sum as below (0.0 + category + channel), one array operation.
                z += w[batch.onehot[:, 0]] + w[batch.onehot[:, 1]]
            else:
                z += np.asarray([sum(sparse.get(k, 0.0) for k in keys) for keys in batch.sparse])
        return z

    def predict_proba(self, batch: FeatureBatch) -> np.ndarray:
        if len(batch) == 0:
            return np.zeros(0)
        return _sigmoid(self.logits(batch))

    def reasons(self, batch: FeatureBatch, top: int = 3) -> list[list[tuple[str, float]]]:
        """Per record, the `top` features that pushed its logit up most, with their signed
        contributions: w * clip((x - mean) / std) for a dense feature, w for a one-hot key
        present (all of them and the intercept sum to the logit)."""
        n = len(batch)
        if n == 0:
            return []
        contrib = self.scaled(batch.dense) * self.weight
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
