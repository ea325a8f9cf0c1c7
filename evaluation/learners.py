"""The learners `fraudstream evaluate` compares, and the drift monitor each one carries.

- `online`: the production model: `core.model.build_pipeline` (dense features standardised,
  one-hot keys as they are | LogisticRegression), learning every label as the trainer does
  (fraud labels weighted by `fraud_weight`), optionally reacting to a detected drift; it can
  explain a score with the live scorer's reasons (`explain`).
- `static`: the same pipeline trained once, on the labels that arrived before the end of the
  first part of the stream (several shuffled passes, as a batch model would be), then frozen.
  It scores with `CompiledModel`, the live scorer's batch path.
- `forest`: River's adaptive random forest (ARFClassifier: Hoeffding trees with per-tree ADWIN
  drift detectors and background trees). Imbalance is handled by sampling: every fraud label
  is learned, legit labels with probability `legit_sample`; scores are a ranking (not
  calibrated to the base rate), so thresholds for it come from the target alert rate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any

from river import compose, drift, forest, optim

from core.features import FeatureBatch
from core.model import build_pipeline, predict_one
from core.model_compiled import CompiledModel
from core.model_settings import ModelSettings

LEARNERS: tuple[str, ...] = ("online", "static", "forest")
DRIFT_REACTIONS: tuple[str, ...] = ("none", "boost", "reset")


@dataclass
class Detection:
    """One change ADWIN found in a learner's per-label loss."""

    time: float  # event time of the label arrival that triggered it
    labels: int  # labels seen by the monitor so far
    stream: str  # "fraud" (loss on fraud labels) or "legit"
    before: float  # mean loss before / after the change
    after: float

    @property
    def worse(self) -> bool:
        return self.after > self.before


@dataclass
class DriftMonitor:
    """ADWIN on the per-label loss, one detector per class.

    The loss of a label is the squared error of the score it got when it was served:
    (1 - p)^2 for fraud, p^2 for legit. Fraud is rare, so a single detector on all labels
    would need tens of thousands of them to see the miss rate move; one per class sees it
    within a few hundred fraud labels. A detection whose mean loss went up is a degradation,
    one that went down is the model catching up.
    """

    delta: float = 0.002
    detections: list[Detection] = field(default_factory=list)
    labels: int = 0

    def __post_init__(self) -> None:
        self._adwin = {"fraud": drift.ADWIN(delta=self.delta), "legit": drift.ADWIN(self.delta)}

    def update(self, y: bool, p: float, at: float) -> Detection | None:
        self.labels += 1
        key = "fraud" if y else "legit"
        loss = (1.0 - p) ** 2 if y else p * p
        adwin = self._adwin[key]
        before = adwin.estimation
        adwin.update(loss)
        if adwin.drift_detected:
            found = Detection(at, self.labels, key, float(before), float(adwin.estimation))
            self.detections.append(found)
            return found
        return None


class OnlineLogistic:
    """The production pipeline, learning every label; `reaction` on a degradation."""

    name = "online"

    def __init__(
        self,
        settings: ModelSettings,
        reaction: str = "none",
        boost_factor: float = 5.0,
        boost_labels: int = 5000,
    ) -> None:
        self.settings = settings
        self.pipeline: Any = build_pipeline(settings)
        self.reaction = reaction
        self.boost_factor = boost_factor
        self.boost_labels = boost_labels
        self._boost_left = 0
        self.updates = 0
        self.reactions = 0

    def predict_one(self, x: dict[str, float]) -> float:
        return predict_one(self.pipeline, x)

    def explain(self, row: FeatureBatch, top: int) -> dict[str, Any]:
        """Why the model, as it stands, scores this one-record batch as it does: the live
        scorer's reasons (`CompiledModel.reasons`), and the logit they make up with the
        intercept and the other contributions (negative or below the top ones)."""
        compiled = CompiledModel.from_pipeline(self.pipeline, self.updates)
        logit = float(compiled.logits(row)[0])
        reasons = compiled.reasons(row, top)[0]
        return {
            "logit": logit,
            "intercept": compiled.intercept,
            "reasons": reasons,
            "other": logit - compiled.intercept - sum(c for _, c in reasons),
        }

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        self.pipeline.learn_one(x, y, w=self.settings.fraud_weight if y else 1.0)
        self.updates += 1
        if self._boost_left:
            self._boost_left -= 1
            if not self._boost_left:
                self._set_lr(self.settings.learning_rate)

    def _set_lr(self, lr: float) -> None:
        self.pipeline["logreg"].optimizer.lr = optim.schedulers.Constant(lr)

    def on_drift(self, found: Detection) -> None:
        if not (found.worse and found.stream == "fraud") or self.reaction == "none":
            return
        self.reactions += 1
        if self.reaction == "boost":
            # Learn faster for a while: the weights move to the new patterns sooner.
            self._boost_left = self.boost_labels
            self._set_lr(self.settings.learning_rate * self.boost_factor)
        elif self.reaction == "reset":
            # Forget the weights but keep the scaler's statistics of the features.
            fresh = build_pipeline(self.settings)
            self.pipeline = compose.Pipeline(
                ("scale", self.pipeline["scale"]), ("logreg", fresh["logreg"])
            )


class StaticLogistic:
    """The production pipeline trained once on a prefix of the labels, then frozen."""

    name = "static"

    def __init__(self, settings: ModelSettings, epochs: int = 10, seed: int = 0) -> None:
        self.settings = settings
        self.pipeline: Any = build_pipeline(settings)
        self.epochs = epochs
        self.seed = seed
        self.updates = 0
        self.frozen = False

    def fit(self, rows: list[tuple[dict[str, float], bool]]) -> None:
        if self.frozen:
            raise RuntimeError("the static model is trained once")
        rng = random.Random(self.seed)
        order = list(range(len(rows)))
        w = self.settings.fraud_weight
        for _ in range(self.epochs):
            rng.shuffle(order)
            for i in order:
                x, y = rows[i]
                self.pipeline.learn_one(x, y, w=w if y else 1.0)
                self.updates += 1
        self.frozen = True

    def predict_one(self, x: dict[str, float]) -> float:
        return predict_one(self.pipeline, x)

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        raise RuntimeError("the static model never learns after its training part")


class Forest:
    """River's adaptive random forest, learning all fraud labels and a sample of legit ones."""

    name = "forest"

    def __init__(self, n_models: int = 6, legit_sample: float = 0.1, seed: int = 0) -> None:
        self.model = forest.ARFClassifier(
            n_models=n_models,
            max_features="sqrt",
            grace_period=50,
            leaf_prediction="mc",
            seed=seed,
        )
        self.legit_sample = legit_sample
        self._rng = random.Random(seed)
        self.updates = 0
        self.skipped = 0

    def predict_one(self, x: dict[str, float]) -> float:
        p = self.model.predict_proba_one(x).get(True, 0.0)
        return float(p) if math.isfinite(p) else 0.0

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        if not y and self._rng.random() >= self.legit_sample:
            self.skipped += 1
            return
        self.model.learn_one(x, y)
        self.updates += 1

    def on_drift(self, found: Detection) -> None:
        """The forest's own per-tree detectors already replace drifting trees."""
