"""The River model, and a compiled copy of it that scores a whole batch at once.

The pipeline is `DenseScaler | LogisticRegression`: the dense features are standardised, the
sparse one-hot keys (`merchant_category=<v>`, `channel=<v>`) reach the model as 1.0.

The scorer never calls River per record: `CompiledModel` mirrors the scaler's means and
variances and the LogisticRegression's weights into arrays, so a batch is one matrix product.
`tests/test_model.py` checks it agrees with River's `predict_proba_one` to 1e-9.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from river import compose, linear_model, optim, preprocessing

from infra.config import ModelSettings
from scorer.features import DENSE_FEATURES, ONE_HOT, FeatureBatch

_DENSE = frozenset(DENSE_FEATURES)
# A variance at or below this is a constant feature plus rounding noise (e.g. one -7e-17 among
# zeros gives 3e-34): scaled to 0, as at variance 0, not to a z-score of 1e16.
VAR_FLOOR = 1e-12
# Standardised values are clipped to +-Z_CLIP: one feature's contribution to the logit is at
# most Z_CLIP times its weight, whatever the value (a huge amount, or a feature whose running
# variance is still near zero early in a stream).
Z_CLIP = 10.0


class DenseScaler(preprocessing.StandardScaler):
    """A StandardScaler over the dense features only; every other key passes through as is.

    A plain StandardScaler only sees a one-hot key when it is set, always to 1.0: its variance
    stays 0 and it scales the key to 0, so the one-hots never reached the model. Here they
    reach it as 1.0, and their weight alone is their contribution. A dense feature missing
    from a dict (a Score from an older scorer) is skipped, as StandardScaler skips it; one
    whose variance is at most VAR_FLOOR scales to 0. Standardised values are clipped to
    +-Z_CLIP.
    """

    def __init__(self) -> None:
        super().__init__()  # running mean and variance (no window, with std)

    def learn_one(self, x: dict) -> None:
        if self.window_size is not None or not self.with_std:  # never built so; kept correct
            super().learn_one({k: v for k, v in x.items() if k in _DENSE})
            return
        # StandardScaler.learn_one's running mean and variance (Welford), the same operations
        # in the same order, on the dense keys only: one pass, no filtered dict, no super().
        counts, means, vars_ = self.counts, self.means, self.vars
        for k, v in x.items():
            if k in _DENSE:
                n = counts[k] + 1
                counts[k] = n
                old = means[k]
                mean = old + (v - old) / n
                means[k] = mean
                var = vars_[k]
                vars_[k] = var + ((v - old) * (v - mean) - var) / n

    def transform_one(self, x: dict) -> dict:
        means, vars_ = self.means, self.vars
        out: dict = {}
        for k, v in x.items():
            if k not in _DENSE:
                out[k] = v
            elif (var := vars_.get(k, 0.0)) > VAR_FLOOR:
                z = (v - means[k]) / var**0.5
                out[k] = Z_CLIP if z > Z_CLIP else -Z_CLIP if z < -Z_CLIP else z
            else:
                out[k] = 0.0
        return out

    # The mini-batch methods would scale the one-hot columns too; nothing here uses them.
    def learn_many(self, X: object) -> None:
        raise NotImplementedError("DenseScaler learns one record at a time")

    def transform_many(self, X: object) -> None:  # type: ignore[override]
        raise NotImplementedError("DenseScaler transforms one record at a time")


def build_pipeline(settings: ModelSettings | None = None) -> compose.Pipeline:
    s = settings or ModelSettings()
    # Start the intercept at the prior fraud rate, so an untrained model scores ~1%, not 50%.
    prior = math.log(s.prior_fraud_rate / (1.0 - s.prior_fraud_rate))
    return compose.Pipeline(
        ("scale", DenseScaler()),
        (
            "logreg",
            linear_model.LogisticRegression(
                optimizer=optim.SGD(s.learning_rate), l2=s.l2, intercept_init=prior
            ),
        ),
    )


def _steps(
    pipeline: compose.Pipeline,
) -> tuple[preprocessing.StandardScaler, linear_model.LogisticRegression]:
    """The scaler and the logistic regression, or one clear error for any other model."""
    steps = getattr(pipeline, "steps", None) or {}
    scaler, logreg = steps.get("scale"), steps.get("logreg")
    if not isinstance(scaler, preprocessing.StandardScaler) or not isinstance(
        logreg, linear_model.LogisticRegression
    ):
        shape = " | ".join(f"{k}={type(v).__name__}" for k, v in steps.items()) or repr(pipeline)
        raise TypeError(
            f"not a fraudstream model ({shape}): expected scale=DenseScaler (or the legacy "
            "StandardScaler) | logreg=LogisticRegression"
        )
    return scaler, logreg


def is_legacy(pipeline: compose.Pipeline) -> bool:
    """A pipeline written before the one-hot keys passed through: its plain StandardScaler
    scales them, to 0 (see `DenseScaler`), so they never contribute."""
    return not isinstance(_steps(pipeline)[0], DenseScaler)


def scaler_stats(pipeline: compose.Pipeline) -> tuple[dict[str, float], dict[str, float]]:
    """(means, variances) of the pipeline's feature scaler, by feature: the one way in, so
    callers (compiled model, guardrails, model signature) do not depend on its shape. A legacy
    pipeline also has entries for the one-hot keys (mean 1, variance 0)."""
    scaler = _steps(pipeline)[0]
    return dict(scaler.means), dict(scaler.vars)


def upgrade_pipeline(pipeline: compose.Pipeline) -> compose.Pipeline:
    """A legacy pipeline rebuilt on a DenseScaler carrying its dense statistics; others as is.

    It scores as before: the one-hot weights are still 0 (their scaled input was always 0,
    so SGD never moved them); from now on they learn.
    """
    if not is_legacy(pipeline):
        return pipeline
    old, logreg = _steps(pipeline)
    scaler = DenseScaler()
    for name in DENSE_FEATURES:
        if name in old.counts:
            scaler.counts[name] = old.counts[name]
            scaler.means[name] = old.means[name]
            scaler.vars[name] = old.vars[name]
    return compose.Pipeline(("scale", scaler), ("logreg", logreg))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    # River's sigmoid returns exactly 0 / 1 beyond |z| > 30: mirror it so both paths agree.
    p = 1.0 / (1.0 + np.exp(-np.clip(z, -30.0, 30.0)))
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
        _, logreg = _steps(pipeline)
        means, vars_ = scaler_stats(pipeline)
        legacy = is_legacy(pipeline)
        floor = 0.0 if legacy else VAR_FLOOR
        weights = logreg.weights
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
        return cls(version, mean, inv_std, weight, float(logreg.intercept), sparse, clip)

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
        z = (dense - self.mean) * self.inv_std
        return np.clip(z, -self.clip, self.clip, out=z)

    def logits(self, batch: FeatureBatch) -> np.ndarray:
        z = self.scaled(batch.dense) @ self.weight + self.intercept
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


def predict_one(pipeline: compose.Pipeline, features: dict[str, float]) -> float:
    """River's own probability of fraud for one feature dict (the reference path)."""
    return float(pipeline.predict_proba_one(features).get(True, 0.0))


def feature_names(pipeline: compose.Pipeline) -> Sequence[str]:
    """The dense features, then the one-hot keys the model has weights for."""
    _, logreg = _steps(pipeline)
    return DENSE_FEATURES + tuple(sorted(k for k in logreg.weights if k not in _DENSE))
