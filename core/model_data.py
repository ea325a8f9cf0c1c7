"""A fraudstream model as plain data, and the River pipeline rebuilt from it.

Snapshots carry this instead of a pickle: nothing a snapshot holds is ever executed. It is
everything `DenseScaler | LogisticRegression` needs to score and to learn on exactly as the
pipeline it was taken from (checked to 1e-9 in tests/test_model_data.py):

    {"scaler": {"counts": {feature: int}, "means": {feature: float},
                "vars": {feature: float}},
     "logreg": {"weights": {key: float}, "intercept": float, "intercept_init": float,
                "intercept_lr": float, "l2": float, "clip_gradient": float,
                "optimizer": {"kind": "sgd", "lr": float, "n_iterations": int},
                "loss": {"kind": "log", "weight_pos": float, "weight_neg": float},
                "averaged": {"horizon": int, "weights": {key: float},
                             "intercept": float} | null}}

`averaged` holds what the model scores with (`core.model.AveragedLogisticRegression`); a model
without it (written before averaging) scores with its raw weights, as it always did.

Key order is kept (JSON objects keep it): River sums a dot product in its dicts' order.
Only the pipeline `build_pipeline` makes is representable (SGD with a constant learning rate,
log loss, zero initial weights, no L1); another shape is refused with one line.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from river import compose, linear_model, optim

from core.errors import FraudstreamError
from core.features import DENSE_FEATURES
from core.model import AveragedLogisticRegression, DenseScaler

_DENSE = frozenset(DENSE_FEATURES)
# One-hot keys are `name=value` of a bounded vocabulary: far below this in practice.
MAX_WEIGHTS = 100_000
MAX_KEY_LENGTH = 256

Finite = Annotated[float, Field(allow_inf_nan=False)]


class ModelDataError(FraudstreamError, ValueError):
    """A model that cannot be written as data, or data that is not a model."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScalerData(_Strict):
    counts: dict[str, Annotated[int, Field(ge=0)]]
    means: dict[str, Finite]
    vars: dict[str, Finite]

    @field_validator("counts", "means", "vars")
    @classmethod
    def _dense_only(cls, v: dict[str, Any]) -> dict[str, Any]:
        unknown = [k for k in v if k not in _DENSE]
        if unknown:
            raise ValueError(f"not a dense feature: {unknown[0][:MAX_KEY_LENGTH]!r}")
        return v


class OptimizerData(_Strict):
    kind: Literal["sgd"]
    lr: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    n_iterations: Annotated[int, Field(ge=0)]


class LossData(_Strict):
    kind: Literal["log"]
    weight_pos: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    weight_neg: Annotated[float, Field(gt=0, allow_inf_nan=False)]


def _bounded_weights(v: dict[str, float]) -> dict[str, float]:
    if len(v) > MAX_WEIGHTS:
        raise ValueError(f"{len(v)} weights (at most {MAX_WEIGHTS})")
    long = next((k for k in v if len(k) > MAX_KEY_LENGTH), None)
    if long is not None:
        raise ValueError(f"a key of {len(long)} characters (at most {MAX_KEY_LENGTH})")
    return v


class AveragedData(_Strict):
    horizon: Annotated[int, Field(ge=1)]
    weights: dict[str, Finite]
    intercept: Finite

    @field_validator("weights")
    @classmethod
    def _bounded(cls, v: dict[str, float]) -> dict[str, float]:
        return _bounded_weights(v)


class LogRegData(_Strict):
    weights: dict[str, Finite]
    intercept: Finite
    intercept_init: Finite
    intercept_lr: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    l2: Annotated[float, Field(ge=0, allow_inf_nan=False)]
    clip_gradient: Annotated[float, Field(gt=0, allow_inf_nan=False)]
    optimizer: OptimizerData
    loss: LossData
    averaged: AveragedData | None = None

    @field_validator("weights")
    @classmethod
    def _bounded(cls, v: dict[str, float]) -> dict[str, float]:
        return _bounded_weights(v)


class ModelData(_Strict):
    scaler: ScalerData
    logreg: LogRegData


def _shape_error(pipeline: Any, what: str) -> ModelDataError:
    return ModelDataError(
        f"cannot write {type(pipeline).__name__} as model data: {what} (only the pipeline "
        "core.model.build_pipeline makes is supported)"
    )


def pipeline_to_data(pipeline: Any) -> ModelData:
    """The pipeline's learned state and settings as data. Raises ModelDataError for any other
    shape than `build_pipeline`'s, or for non-finite parameters."""
    if type(pipeline) is not compose.Pipeline or list(pipeline.steps) != ["scale", "logreg"]:
        raise _shape_error(pipeline, "not scale=DenseScaler | logreg=LogisticRegression")
    scaler, logreg = pipeline.steps["scale"], pipeline.steps["logreg"]
    if type(scaler) is not DenseScaler or scaler.window_size is not None or not scaler.with_std:
        raise _shape_error(pipeline, f"scale is {type(scaler).__name__}, not a DenseScaler")
    if type(logreg) not in (linear_model.LogisticRegression, AveragedLogisticRegression):
        raise _shape_error(pipeline, f"logreg is {type(logreg).__name__}")
    opt = logreg.optimizer
    checks = (
        (type(opt) is optim.SGD, f"optimizer {type(opt).__name__}"),
        (type(opt.lr) is optim.schedulers.Constant, "a learning-rate schedule"),
        (type(logreg.intercept_lr) is optim.schedulers.Constant, "an intercept schedule"),
        (type(logreg.loss) is optim.losses.Log, f"loss {type(logreg.loss).__name__}"),
        (type(logreg.initializer) is optim.initializers.Zeros, "a weight initializer"),
        (logreg.l1 == 0, "L1 regularisation"),
    )
    for ok, what in checks:
        if not ok:
            raise _shape_error(pipeline, what)
    raw = {
        "scaler": {
            "counts": {k: int(v) for k, v in scaler.counts.items()},
            "means": {k: float(v) for k, v in scaler.means.items()},
            "vars": {k: float(v) for k, v in scaler.vars.items()},
        },
        "logreg": {
            "weights": {str(k): float(v) for k, v in logreg._weights.items()},
            "intercept": float(logreg.intercept),
            "intercept_init": float(logreg.intercept_init),
            "intercept_lr": float(logreg.intercept_lr.learning_rate),
            "l2": float(logreg.l2),
            "clip_gradient": float(logreg.clip_gradient),
            "optimizer": {
                "kind": "sgd",
                "lr": float(opt.lr.learning_rate),
                "n_iterations": int(opt.n_iterations),
            },
            "loss": {
                "kind": "log",
                "weight_pos": float(logreg.loss.weight_pos),
                "weight_neg": float(logreg.loss.weight_neg),
            },
            "averaged": {
                "horizon": int(logreg.average_horizon),
                "weights": {str(k): float(v) for k, v in logreg.averaged.items()},
                "intercept": float(logreg.averaged_intercept),
            }
            if isinstance(logreg, AveragedLogisticRegression)
            else None,
        },
    }
    return model_data(raw)


def model_data(raw: Any) -> ModelData:
    """Validate plain data (e.g. read from JSON) as a model. Raises ModelDataError."""
    try:
        return ModelData.model_validate(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        loc = ".".join(str(p) for p in err["loc"]) or "<root>"
        raise ModelDataError(f"model data: {loc}: {err['msg']}") from None


def pipeline_from_data(data: ModelData) -> compose.Pipeline:
    """A new River pipeline in the state `data` describes: it scores and learns on as the
    pipeline the data was taken from."""
    lg = data.logreg
    logreg = (AveragedLogisticRegression if lg.averaged else linear_model.LogisticRegression)(
        optimizer=optim.SGD(lg.optimizer.lr),
        loss=optim.losses.Log(weight_pos=lg.loss.weight_pos, weight_neg=lg.loss.weight_neg),
        l2=lg.l2,
        intercept_init=lg.intercept_init,
        intercept_lr=lg.intercept_lr,
        clip_gradient=lg.clip_gradient,
    )
    if isinstance(logreg, AveragedLogisticRegression) and lg.averaged:
        logreg.average_horizon = lg.averaged.horizon
        logreg.averaged = dict(lg.averaged.weights)
        logreg.averaged_intercept = lg.averaged.intercept
    logreg.intercept = lg.intercept
    logreg.optimizer.n_iterations = lg.optimizer.n_iterations
    for key, weight in lg.weights.items():
        logreg._weights[key] = weight
    scaler = DenseScaler()
    sc = data.scaler
    for key, count in sc.counts.items():
        scaler.counts[key] = count
    for key, mean in sc.means.items():
        scaler.means[key] = mean
    for key, var in sc.vars.items():
        scaler.vars[key] = var
    return compose.Pipeline(("scale", scaler), ("logreg", logreg))
