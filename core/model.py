"""The River model: the reference definition of scoring and learning.

The pipeline is `DenseScaler | LogisticRegression`: the dense features are standardised, the
sparse one-hot keys (`merchant_category=<v>`, `channel=<v>`) reach the model as 1.0. Two
mirrors compute the same thing faster: `core.model_compiled` scores a batch with numpy,
`core.learner_compiled` learns label by label with Numba.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from typing import Any

from river import compose, linear_model, optim, preprocessing

from core.features import DENSE_FEATURES
from core.model_settings import ModelSettings

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

    def learn_one(self, x: dict[Hashable, Any]) -> None:
        if self.window_size is not None or not self.with_std:  # never built so; kept correct
            # (River's own method carries no annotations.)
            super().learn_one({k: v for k, v in x.items() if k in _DENSE})  # type: ignore[no-untyped-call]
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

    def transform_one(self, x: dict[Hashable, Any]) -> dict[Hashable, Any]:
        means, vars_ = self.means, self.vars
        out: dict[Hashable, Any] = {}
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


def average_rate(horizon: int, n_iterations: int) -> float:
    """The share of the newest weights in the average after `n_iterations` labels: a plain
    mean of all the weights so far until `horizon` labels, then an exponential moving average
    over about the last `horizon`."""
    return max(1.0 / horizon, 1.0 / n_iterations)


class AveragedLogisticRegression(linear_model.LogisticRegression):
    """River's LogisticRegression that learns as it does and predicts with the average of its
    recent weights (Polyak-Ruppert averaging, as an exponential moving average).

    At a constant learning rate SGD never settles: every label moves the weights, and a burst of
    frauds at one merchant can swing them for hours. Their average over the last
    `average_horizon` labels is a better model of the same data (higher average precision on
    every stream in docs/design.md) and lags the raw weights by about half the horizon in
    labels, far less than a change of fraud pattern takes to learn. `average_horizon=1`
    predicts with the raw weights.
    """

    def __init__(
        self,
        optimizer: optim.base.Optimizer | None = None,
        loss: optim.losses.BinaryLoss | None = None,
        l2: float = 0.0,
        l1: float = 0.0,
        intercept_init: float = 0.0,
        intercept_lr: float | optim.base.Scheduler = 0.01,
        clip_gradient: float = 1e12,
        initializer: optim.base.Initializer | None = None,
        average_horizon: int = 1,
    ) -> None:
        super().__init__(
            optimizer, loss, l2, l1, intercept_init, intercept_lr, clip_gradient, initializer
        )
        self.average_horizon = average_horizon
        self.averaged: dict[str, float] = {}
        self.averaged_intercept = float(intercept_init)

    def learn_one(self, x: dict[Hashable, Any], y: Any, w: float = 1.0) -> None:
        super().learn_one(x, y, w)
        a = average_rate(self.average_horizon, self.optimizer.n_iterations)
        avg = self.averaged
        if a == 1.0:  # the raw weights, exactly (avg + (w - avg) may round)
            for k, wk in self._weights.items():
                avg[k] = wk
            self.averaged_intercept = self.intercept
            return
        for k, wk in self._weights.items():
            old = avg.get(k, 0.0)
            avg[k] = old + a * (wk - old)
        self.averaged_intercept += a * (self.intercept - self.averaged_intercept)

    def predict_proba_one(
        self, x: dict[Hashable, Any], **kwargs: Any
    ) -> dict[bool | str | int, float]:
        # As River's VectorDict.dot: over the keys of x that have a weight, in x's order.
        avg = self.averaged
        z = 0.0
        for k, v in x.items():
            if k in avg:
                z += avg[k] * v
        p = float(self.loss.mean_func(z + self.averaged_intercept))
        return {False: 1.0 - p, True: p}


def served_weights(logreg: linear_model.LogisticRegression) -> tuple[dict[str, float], float]:
    """The weights and intercept the model scores with: the averaged ones if it averages."""
    if isinstance(logreg, AveragedLogisticRegression):
        return logreg.averaged, logreg.averaged_intercept
    return dict(logreg.weights), float(logreg.intercept)


def build_pipeline(settings: ModelSettings | None = None) -> compose.Pipeline:
    s = settings or ModelSettings()
    # Start the intercept at the prior fraud rate, so an untrained model scores ~1%, not 50%.
    prior = math.log(s.prior_fraud_rate / (1.0 - s.prior_fraud_rate))
    return compose.Pipeline(
        ("scale", DenseScaler()),
        (
            "logreg",
            AveragedLogisticRegression(
                optimizer=optim.SGD(s.learning_rate),
                l2=s.l2,
                intercept_init=prior,
                average_horizon=s.average_labels,
            ),
        ),
    )


def pipeline_steps(
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
    return not isinstance(pipeline_steps(pipeline)[0], DenseScaler)


def scaler_stats(pipeline: compose.Pipeline) -> tuple[dict[str, float], dict[str, float]]:
    """(means, variances) of the pipeline's feature scaler, by feature: the one way in, so
    callers (compiled model, guardrails, model signature) do not depend on its shape. A legacy
    pipeline also has entries for the one-hot keys (mean 1, variance 0)."""
    scaler = pipeline_steps(pipeline)[0]
    return dict(scaler.means), dict(scaler.vars)


def upgrade_pipeline(pipeline: compose.Pipeline) -> compose.Pipeline:
    """A legacy pipeline rebuilt on a DenseScaler carrying its dense statistics; others as is.

    It scores as before: the one-hot weights are still 0 (their scaled input was always 0,
    so SGD never moved them); from now on they learn.
    """
    if not is_legacy(pipeline):
        return pipeline
    old, logreg = pipeline_steps(pipeline)
    scaler = DenseScaler()
    for name in DENSE_FEATURES:
        if name in old.counts:
            scaler.counts[name] = old.counts[name]
            scaler.means[name] = old.means[name]
            scaler.vars[name] = old.vars[name]
    return compose.Pipeline(("scale", scaler), ("logreg", logreg))


def predict_one(pipeline: compose.Pipeline, features: dict[str, float]) -> float:
    """River's own probability of fraud for one feature dict (the reference path)."""
    return float(pipeline.predict_proba_one(features).get(True, 0.0))


def feature_names(pipeline: compose.Pipeline) -> Sequence[str]:
    """The dense features, then the one-hot keys the model has weights for."""
    _, logreg = pipeline_steps(pipeline)
    return DENSE_FEATURES + tuple(sorted(k for k in logreg.weights if k not in _DENSE))
