"""River's `predict_proba_one` then `learn_one` for the default pipeline, fused and compiled.

`DenseScaler | LogisticRegression(SGD, Log loss)` costs ~50 us a label through River (dict
views, VectorDicts, per-step routing): most of the trainer's time. `FastLearner` does the same
arithmetic in the same order, label by label (no mini-batches), on arrays, in one Numba call
(~4 us); its probabilities and parameters come out bit for bit River's (the tests,
`tests/test_learner_compiled_mirror.py`, allow 1e-9):

- predict: logit = sum, over the keys of x that have a weight and in x's order (as River's
  VectorDict.dot), of averaged weight * scaled value; + averaged intercept; River's sigmoid
  (0 / 1 past 30). A plain LogisticRegression's "averages" are its weights.
- DenseScaler: Welford's running mean and variance on the dense keys present; a dense key
  scales to `(v - mean) / var**0.5` clipped to +-Z_CLIP, or 0 at a variance at most
  VAR_FLOOR; other keys pass.
- LogisticRegression: Log loss gradient at the logit (with the new statistics), times the
  sample weight, clipped; intercept -= intercept_lr * gradient; then for each key of x:
  weight -= lr * (gradient * value + l2 * weight); one optimizer iteration. Then
  AveragedLogisticRegression's averages: avg += rate * (weight - avg) for every key with a
  weight, and the intercept's (rate from `core.model.average_rate`, 1 copying exactly).

The River pipeline stays the source of truth at rest: `FusedModel.pipeline` writes the learned
state back into it before anyone reads it (snapshots, guardrails, promotion, rollback), and the
learner reloads from it before it learns again, in case the reader changed it. A pipeline of
any other shape (legacy StandardScaler, another optimizer, loss, schedule, initializer, L1)
learns through River itself.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from itertools import chain
from typing import Any

import numba
import numpy as np
from river import compose, linear_model, optim

from core.features import DENSE_FEATURES
from core.model import (
    VAR_FLOOR,
    Z_CLIP,
    AveragedLogisticRegression,
    DenseScaler,
    average_rate,
    predict_one,
    served_weights,
)

# Rows of the state matrix, one column per key (dense keys first, then one-hots as they come).
# COUNT..SCALE are the scaler's (dense keys only); SCALE is var**0.5, or 0 when the variance is
# at most VAR_FLOOR, kept so a prediction does not recompute it. HAS_W: the model has a weight
# for the key (River's dot skips keys without one). BORN_*: when the key got its first weight or
# statistics, so a write-back inserts new keys in River's order. AVG: the averaged weight.
COUNT, MEAN, VAR, SCALE, WEIGHT, HAS_W, DENSE, BORN_W, BORN_S, AVG = range(10)
# Entries of the parameter vector.
(INTERCEPT, LR, INTERCEPT_LR, L2, CLIP, WEIGHT_POS, WEIGHT_NEG, FLOOR, HALF, BIRTHS,
 ZCLIP, AVG_INTERCEPT, AVG_RATE) = range(13)  # fmt: skip
_N_DENSE = len(DENSE_FEATURES)
_DENSE = frozenset(DENSE_FEATURES)
_MAX_SHAPES = 4096


def supported(pipeline: Any) -> bool:
    """Whether `FastLearner` replicates this pipeline exactly (else River learns)."""
    if type(pipeline) is not compose.Pipeline or list(pipeline.steps) != ["scale", "logreg"]:
        return False
    if compose.Pipeline._LEARN_UNSUPERVISED_DURING_PREDICT:
        return False
    scaler, logreg = pipeline.steps["scale"], pipeline.steps["logreg"]
    if type(scaler) is not DenseScaler or scaler.window_size is not None or not scaler.with_std:
        return False
    if type(logreg) not in (linear_model.LogisticRegression, AveragedLogisticRegression):
        return False
    opt = logreg.optimizer
    return (
        type(opt) is optim.SGD
        and type(opt.lr) is optim.schedulers.Constant
        and type(logreg.intercept_lr) is optim.schedulers.Constant
        and type(logreg.loss) is optim.losses.Log
        and type(logreg.initializer) is optim.initializers.Zeros
        and logreg.l1 == 0
    )


@numba.njit(cache=True, inline="always")
def _clipped(x: float, limit: float) -> float:
    """DenseScaler's clip of a standardised value (the same comparisons, the same result)."""
    return limit if x > limit else -limit if x < -limit else x


@numba.njit(cache=True)
def _predict_learn(
    slots: np.ndarray, vals: np.ndarray, s: np.ndarray, hp: np.ndarray, y: bool, w: float
) -> float:
    """One label: the probability before learning, then the learning step (in place)."""
    m = slots.size
    xt = np.empty(m)  # x as the scaler transforms it after learning it
    z_old = 0.0
    z_new = 0.0
    floor = hp[FLOOR]
    # From the parameter vector, not a literal: LLVM turns `x ** 0.5` into sqrt, which differs
    # from the libm pow that Python's `**` calls in the last bit about once in a thousand.
    half = hp[HALF]
    zc = hp[ZCLIP]
    for i in range(m):
        j = slots[i]
        v = vals[i]
        has_w = s[HAS_W, j] != 0.0
        if s[DENSE, j] == 0.0:  # a one-hot key: passes the scaler as is
            if has_w:
                z_old += s[AVG, j] * v
                z_new += s[WEIGHT, j] * v
            xt[i] = v
            continue
        n = s[COUNT, j]
        mean = s[MEAN, j]
        var = s[VAR, j]
        scale = s[SCALE, j]
        if has_w:
            z_old += s[AVG, j] * _clipped((v - mean) / scale if scale != 0.0 else 0.0, zc)
        if n == 0.0:
            s[BORN_S, j] = hp[BIRTHS]
            hp[BIRTHS] += 1.0
        # DenseScaler.learn_one (StandardScaler's Welford update), then transform_one.
        n += 1.0
        d = v - mean
        mean = mean + d / n
        var = var + (d * (v - mean) - var) / n
        scale = var**half if var > floor else 0.0
        x = _clipped((v - mean) / scale if scale != 0.0 else 0.0, zc)
        if has_w:
            z_new += s[WEIGHT, j] * x
        s[COUNT, j] = n
        s[MEAN, j] = mean
        s[VAR, j] = var
        s[SCALE, j] = scale
        xt[i] = x

    b = hp[INTERCEPT]
    z = z_old + hp[AVG_INTERCEPT]  # river.utils.math.sigmoid
    if z < -30.0:
        p = 0.0
    elif z > 30.0:
        p = 1.0
    else:
        p = 1.0 / (1.0 + math.exp(-z))

    # optim.losses.Log.gradient (y in {-1, 1}), times w, then utils.math.clamp.
    if y:
        z, weight, sign = z_new + b, hp[WEIGHT_POS], -1.0
    else:
        z, weight, sign = -(z_new + b), hp[WEIGHT_NEG], 1.0
    if z > 18.0:
        g = weight * math.exp(-z) * sign
    elif z < -18.0:
        g = weight * sign
    else:
        g = weight * sign / (math.exp(z) + 1.0)
    g *= w
    clip = hp[CLIP]
    if clip < g:  # max(min(g, clip), -clip), NaN passing through as there
        g = clip
    if -clip > g:
        g = -clip

    # GLM._fit: the intercept, then SGD on every key of x.
    hp[INTERCEPT] = b - hp[INTERCEPT_LR] * g
    lr = hp[LR]
    l2 = hp[L2]
    for i in range(m):
        j = slots[i]
        wk = s[WEIGHT, j]  # 0 when the key has no weight yet (River's Zeros initializer)
        gk = xt[i] * g
        if l2 != 0.0:
            gk += wk * l2
        s[WEIGHT, j] = wk - gk * lr
        if s[HAS_W, j] == 0.0:
            s[HAS_W, j] = 1.0
            s[BORN_W, j] = hp[BIRTHS]
            hp[BIRTHS] += 1.0

    # AveragedLogisticRegression.learn_one's averages, over every key with a weight.
    a = hp[AVG_RATE]
    if a == 1.0:
        for j in range(s.shape[1]):
            if s[HAS_W, j] != 0.0:
                s[AVG, j] = s[WEIGHT, j]
        hp[AVG_INTERCEPT] = hp[INTERCEPT]
    else:
        for j in range(s.shape[1]):
            if s[HAS_W, j] != 0.0:
                old = s[AVG, j]
                s[AVG, j] = old + a * (s[WEIGHT, j] - old)
        hp[AVG_INTERCEPT] += a * (hp[INTERCEPT] - hp[AVG_INTERCEPT])
    return p


@numba.njit(cache=True)
def _predict_many(
    slots: np.ndarray, vals: np.ndarray, ends: np.ndarray, s: np.ndarray, hp: np.ndarray
) -> np.ndarray:
    """The probability of each record (record r: slots and values ends[r-1]:ends[r]), as
    `_predict_learn` computes it before learning."""
    out = np.empty(ends.size)
    start = 0
    for r in range(ends.size):
        z = 0.0
        for i in range(start, ends[r]):
            j = slots[i]
            if s[HAS_W, j] == 0.0:
                continue
            v = vals[i]
            if s[DENSE, j] == 0.0:
                z += s[AVG, j] * v
            else:
                scale = s[SCALE, j]
                x = (v - s[MEAN, j]) / scale if scale != 0.0 else 0.0
                z += s[AVG, j] * _clipped(x, hp[ZCLIP])
        start = ends[r]
        z += hp[AVG_INTERCEPT]
        if z < -30.0:
            out[r] = 0.0
        elif z > 30.0:
            out[r] = 1.0
        else:
            out[r] = 1.0 / (1.0 + math.exp(-z))
    return out


_warm = False


def _warm_up() -> None:
    """Compile (or load from Numba's cache) the kernel when a learner is built, not at the
    first label it learns."""
    global _warm
    if not _warm:
        slots, vals, s, hp = np.zeros(1, np.intp), np.zeros(1), np.zeros((10, 1)), np.zeros(13)
        _predict_learn(slots, vals, s, hp, True, 1.0)
        _predict_many(slots, vals, np.ones(1, np.intp), s, hp)
        _warm = True


class FastLearner:
    """The learned state of a `supported` pipeline, as arrays; see the module docstring."""

    def __init__(self, pipeline: compose.Pipeline) -> None:
        if not supported(pipeline):
            raise TypeError("not a DenseScaler | LogisticRegression(SGD, Log) pipeline")
        self.pipeline = pipeline
        self.keys: list[str] = []
        self.index: dict[str, int] = {}
        # Slots by the keys of x, in order: feature dicts come in a few shapes (dense keys, a
        # category, a channel), and one tuple lookup is a third of mapping every key.
        self._shapes: dict[tuple[str, ...], np.ndarray] = {}
        self.s = np.zeros((10, 0))
        self.hp = np.zeros(13)
        self.n_iterations = 0
        self.average_horizon = 1
        self.reload()
        _warm_up()

    def reload(self) -> None:
        """Take the state the River objects hold."""
        scaler, logreg = self.pipeline.steps["scale"], self.pipeline.steps["logreg"]
        weights = logreg._weights.to_dict()
        self.keys = list(DENSE_FEATURES) + [k for k in weights if k not in _DENSE]
        self.index = {k: j for j, k in enumerate(self.keys)}
        self._shapes = {}
        s = self.s = np.zeros((10, max(64, 2 * len(self.keys))))
        s[DENSE, :_N_DENSE] = 1.0
        for j, k in enumerate(DENSE_FEATURES):
            n = scaler.counts.get(k, 0)
            if n:
                var = float(scaler.vars.get(k, 0.0))
                s[COUNT, j] = n
                s[MEAN, j] = scaler.means.get(k, 0.0)
                s[VAR, j] = var
                s[SCALE, j] = var**0.5 if var > VAR_FLOOR else 0.0  # as DenseScaler's
        averaged, averaged_intercept = served_weights(logreg)
        for j, k in enumerate(self.keys):
            if k in weights:
                s[WEIGHT, j] = weights[k]
                s[HAS_W, j] = 1.0
                s[AVG, j] = averaged.get(k, 0.0)
        self.average_horizon = getattr(logreg, "average_horizon", 1)
        optimizer = logreg.optimizer
        self.hp = np.array(
            [
                logreg.intercept,
                optimizer.lr.learning_rate,
                logreg.intercept_lr.learning_rate,
                logreg.l2,
                logreg.clip_gradient,
                logreg.loss.weight_pos,
                logreg.loss.weight_neg,
                VAR_FLOOR,
                0.5,
                0.0,
                Z_CLIP,
                averaged_intercept,
                1.0,
            ],
            dtype=np.float64,
        )
        self.n_iterations = optimizer.n_iterations

    def write_back(self) -> None:
        """Give the River objects the learned state: the scaler's counts, means and variances,
        the weights, the intercept, the optimizer's iteration count."""
        scaler, logreg = self.pipeline.steps["scale"], self.pipeline.steps["logreg"]
        rows = self.s[:, : len(self.keys)].tolist()
        counts, means, vars_ = rows[COUNT], rows[MEAN], rows[VAR]
        # Keys new since the load first, as River inserts them (cosmetic: dicts compare equal).
        born = sorted(
            (rows[BORN_S][j], k)
            for j, k in enumerate(DENSE_FEATURES)
            if counts[j] and k not in scaler.counts
        )
        for _, k in born:
            scaler.counts[k] = 0
            scaler.means[k] = scaler.vars[k] = 0.0
        for j, k in enumerate(DENSE_FEATURES):
            if counts[j]:
                scaler.counts[k] = int(counts[j])
                scaler.means[k] = means[j]
                scaler.vars[k] = vars_[j]
        weights = logreg._weights
        old = weights.to_dict()
        has_w, values = rows[HAS_W], rows[WEIGHT]
        for _, k in sorted(
            (rows[BORN_W][j], k) for j, k in enumerate(self.keys) if has_w[j] and k not in old
        ):
            weights[k] = 0.0
        for j, k in enumerate(self.keys):
            if has_w[j]:
                weights[k] = values[j]
        logreg.intercept = float(self.hp[INTERCEPT])
        if isinstance(logreg, AveragedLogisticRegression):
            averaged, avg = logreg.averaged, rows[AVG]
            for j, k in enumerate(self.keys):
                if has_w[j]:
                    averaged[k] = avg[j]
            logreg.averaged_intercept = float(self.hp[AVG_INTERCEPT])
        logreg.optimizer.n_iterations = self.n_iterations

    def _slots(self, x: dict[str, float]) -> np.ndarray:
        shape = tuple(x)
        slots = self._shapes.get(shape)
        if slots is None:
            for k in shape:
                if k not in self.index:
                    self._add_key(k)
            slots = np.fromiter(map(self.index.__getitem__, shape), np.intp, len(shape))
            if len(self._shapes) >= _MAX_SHAPES:  # odd inputs: do not grow without bound
                self._shapes.clear()
            self._shapes[shape] = slots
        return slots

    def _add_key(self, key: str) -> None:
        """A one-hot key seen for the first time (a new merchant category, say)."""
        j = len(self.keys)
        if j == self.s.shape[1]:
            self.s = np.concatenate([self.s, np.zeros_like(self.s)], axis=1)
        self.keys.append(key)
        self.index[key] = j

    def predict_learn(self, x: dict[str, float], y: bool, w: float = 1.0) -> float:
        """`p = predict_one(pipeline, x)`, then `pipeline.learn_one(x, y, w=w)`; returns p.
        x's values must be floats (or ints)."""
        slots = self._slots(x)
        vals = np.fromiter(x.values(), np.float64, len(x))
        self.n_iterations += 1
        self.hp[AVG_RATE] = average_rate(self.average_horizon, self.n_iterations)
        return _predict_learn(slots, vals, self.s, self.hp, bool(y), float(w))

    def predict_many(self, xs: Sequence[dict[str, float]]) -> list[float]:
        """`predict_one(pipeline, x)` for each x (numbers, or bools: River takes those)."""
        if not xs:
            return []
        slots = np.concatenate([self._slots(x) for x in xs])
        vals = np.fromiter(chain.from_iterable(x.values() for x in xs), np.float64, slots.size)
        ends = np.cumsum(np.fromiter(map(len, xs), np.intp, len(xs)))
        probs: list[float] = _predict_many(slots, vals, ends, self.s, self.hp).tolist()
        return probs


class FusedModel:
    """A River pipeline and, when `supported`, the `FastLearner` that learns for it.

    Read `pipeline` for the River object: the learned state is written back first, and the
    learner reloads before it learns again, since the reader may change the object (a test
    sets a weight to inf, say). The lock keeps a reader in another thread from seeing a
    half-learned label.
    """

    def __init__(self, pipeline: Any) -> None:
        self._pipeline = pipeline
        self.learner = FastLearner(pipeline) if supported(pipeline) else None
        self._dirty = False  # learned since the last write-back
        self._stale = False  # the River objects were handed out since the learner loaded them
        self._lock = threading.Lock()

    @property
    def pipeline(self) -> Any:
        with self._lock:
            return self._hand_over()

    def _hand_over(self) -> Any:
        """The River objects, up to date; from now on whoever holds them may change them."""
        if self.learner is not None:
            if self._dirty:
                self.learner.write_back()
                self._dirty = False
            self._stale = True
        return self._pipeline

    def predict_learn(self, x: dict[str, float], y: bool, w: float = 1.0) -> float:
        """The probability of fraud before learning (progressive validation), then learn.
        x's values must be numbers (`learn_any` takes whatever River takes)."""
        learner = self.learner
        if learner is None:
            return self._river(x, y, w)
        with self._lock:
            if self._stale:
                learner.reload()
                self._stale = False
            self._dirty = True
            return learner.predict_learn(x, y, w)

    def predict_many(self, xs: Sequence[dict[str, Any]]) -> list[float]:
        """`predict_one(pipeline, x)` for each x that the model has learned from: dicts River
        took (numbers, bools), as the guardrails' reference sample."""
        learner = self.learner
        if learner is None:
            return [predict_one(self._pipeline, x) for x in xs]
        with self._lock:
            if self._stale:  # whoever holds the River objects may have changed them
                learner.reload()
            try:
                return learner.predict_many(xs)
            except (TypeError, ValueError):  # a value numpy does not take: as River does
                pipeline = self._hand_over()
                return [predict_one(pipeline, x) for x in xs]

    def learn_any(self, x: dict[str, Any], y: bool, w: float = 1.0) -> float:
        """`predict_learn` through River itself, for a feature dict not known to hold numbers
        only: it fails, or does not, exactly as River does."""
        return self._river(x, y, w) if self.learner is None else self._river(x, y, w, sync=True)

    def _river(self, x: dict[str, Any], y: bool, w: float, sync: bool = False) -> float:
        pipeline = self.pipeline if sync else self._pipeline
        p = predict_one(pipeline, x)
        if w == 1.0:
            # learn_one's default: without the per-step routing of keyword arguments that
            # Pipeline.learn_one does when given any.
            pipeline.learn_one(x, y)
        else:
            pipeline.learn_one(x, y, w=w)
        return p
