"""Guardrails: a snapshot is published only if it is sane.

Sane: finite parameters, scores on a recent reference sample of serving-time feature vectors
within lower and upper bounds, and progressive quality not collapsed against the model in
service (the scores scorers gave the same labelled transactions). Only labels from trusted
sources (trainer/label_trust.py) and matured transactions feed these checks: a low-trust feed
cannot vouch for the model it taught. Otherwise the snapshot is held back (`hold`): the
serving model stays.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from river import metrics as river_metrics

from core.model import predict_one
from infra.config import GuardrailSettings, Settings
from infra.metrics import Metrics
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)

# (reason code for metrics, detail for people)
Hold = tuple[str, str]


def non_finite_parameters(pipeline: Any) -> list[str]:
    """Names of the pipeline's parameters that are NaN or infinite."""
    bad: list[str] = []
    for step_name, step in getattr(pipeline, "steps", {}).items():
        for attr in ("weights", "means", "vars"):
            values = getattr(step, attr, None)
            if isinstance(values, dict):
                bad += [
                    f"{step_name}.{attr}[{k}]" for k, v in values.items() if not math.isfinite(v)
                ]
        intercept = getattr(step, "intercept", None)
        if isinstance(intercept, float) and not math.isfinite(intercept):
            bad.append(f"{step_name}.intercept")
    return bad


def _limits(
    code: str,
    value: float,
    low: float,
    high: float,
    words: str,
    fmt: str = ".1%",
    low_fmt: str = ".1%",
) -> list[Hold]:
    """`code` when `value` is above `high`, `code`_low when below `low`, each detailed by
    `words` with the value (as `fmt`, or `low_fmt` below) in place of {}, then the bound."""
    held: list[Hold] = []
    if value > high:
        held.append((code, f"{words.format(format(value, fmt))} (max {high:{fmt}})"))
    if value < low:
        detail = words.format(format(value, low_fmt))
        held.append((f"{code}_low", f"{detail} (min {low:{low_fmt}})"))
    return held


class Guardrails:
    _NUMBER = (int, float)  # built once: `int | float` would build a union on every call

    def __init__(
        self,
        cfg: GuardrailSettings,
        threshold: float,
        window: int,
        metrics: Metrics | None = None,
        mlflow: MlflowLogger | None = None,
    ) -> None:
        """`threshold`: the scorer's alert threshold; `window`: labels in the rolling AUCs;
        `metrics`, `mlflow`: where holds are reported (`hold`)."""
        self.cfg = cfg
        self.metrics = metrics
        self.mlflow = mlflow
        self.threshold = threshold
        self.reference: deque[dict[str, float]] = deque(maxlen=self.cfg.reference_size)
        # On the same trusted labels: the served scores, and the candidate's own progressive
        # predictions (before it learned each label).
        self.served_auc = river_metrics.RollingROCAUC(window_size=window)
        self.served_seen = 0
        self.candidate_auc = river_metrics.RollingROCAUC(window_size=window)
        self.candidate_seen = 0
        self.holds = 0

    def observe(
        self, features: dict[str, float], y: bool, served_score: Any, predicted: float
    ) -> None:
        """One transaction with a trusted label: its serving-time features, the score it was
        served and the candidate's probability before learning it."""
        self.reference.append(features)
        if isinstance(served_score, self._NUMBER) and math.isfinite(served_score):
            self.served_auc.update(y, float(served_score))
            self.served_seen += 1
        if math.isfinite(predicted):
            self.candidate_auc.update(y, predicted)
            self.candidate_seen += 1

    def check(
        self,
        pipeline: Any,
        predict_many: Callable[[Sequence[dict[str, float]]], list[float]] | None = None,
    ) -> list[Hold]:
        """Why this model must not be published; empty if it may. `predict_many`: the
        pipeline's probabilities for a list of feature dicts, faster than River's own (the
        trainer's `FusedModel.predict_many`)."""
        if not self.cfg.enabled:
            return []
        bad = non_finite_parameters(pipeline)
        if bad:
            more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
            return [("non_finite", f"non-finite parameters {', '.join(bad[:3])}{more}")]
        held: list[Hold] = []
        if self.reference:
            if predict_many is not None:
                scores = predict_many(list(self.reference))
            else:
                scores = [predict_one(pipeline, x) for x in self.reference]
            if not all(math.isfinite(s) for s in scores):
                return [("non_finite", "non-finite scores on the reference sample")]
            n = len(scores)
            mean = sum(scores) / n
            flag_rate = sum(s >= self.threshold for s in scores) / n
            cfg = self.cfg
            flags = f"flags {{}} of {n} recent transactions"
            held += _limits("flag_rate", flag_rate, cfg.min_flag_rate, cfg.max_flag_rate, flags)
            # A low mean is shown finer: its floor sits near zero.
            means = f"mean score {{}} on {n} recent transactions"
            low, high = cfg.min_mean_score, cfg.max_mean_score
            held += _limits("mean_score", mean, low, high, means, ".3f", ".5f")
        if self.candidate_seen >= self.cfg.min_labels and self.served_seen >= self.cfg.min_labels:
            candidate, served = self.candidate_auc.get(), self.served_auc.get()
            if candidate is not None and served is not None:
                if candidate < served - self.cfg.max_auc_drop:
                    held.append(
                        (
                            "quality",
                            f"rolling ROC AUC {candidate:.3f} on trusted labels vs {served:.3f} "
                            f"for the model in service (max drop {self.cfg.max_auc_drop})",
                        )
                    )
        return held

    def hold(self, held: list[Hold], labels_learned: int, version: int) -> None:
        """Report a snapshot held back: counted by reason, logged, recorded in MLflow. Nothing
        is published; scorers keep the model they serve (`version`)."""
        self.holds += 1
        if self.metrics is not None:
            for code, _detail in held:
                self.metrics.snapshots_held.labels(code).inc()
        details = "; ".join(detail for _code, detail in held)
        log.warning(
            "snapshot held back at %d labels learned: %s; scorers keep v%d",
            labels_learned,
            details,
            version,
        )
        if self.mlflow is not None:
            self.mlflow.record(
                labels_learned,
                {"guardrail_holds": float(self.holds)},
                {"guardrail.last_hold": details},
            )


def guardrails_of(
    settings: Settings, metrics: Metrics | None = None, mlflow: MlflowLogger | None = None
) -> Guardrails:
    """The guardrails the settings configure."""
    return Guardrails(
        settings.guardrails,
        settings.scorer.threshold,
        settings.trainer.quality_window,
        metrics,
        mlflow,
    )


def diverged(held: list[Hold]) -> bool:
    """A hold the model never recovers from by learning more: go back to the model in service."""
    return any(code == "non_finite" for code, _detail in held)
