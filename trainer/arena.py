"""Champion and challengers.

Challengers (`challengers.candidates`) learn the same joined stream as the champion and are
evaluated the same way (progressively); one is promoted when it beats the champion by a
margin over consecutive checks, with hysteresis (`Arena.contest`, at each snapshot).
Snapshots carry the challengers (`Arena.snapshot_fields`), so a restarted trainer goes on
with them trained (`Arena.restore_challengers`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

from core.model import build_pipeline, predict_one, upgrade_pipeline
from core.snapshot import ChallengerSnapshot, Snapshot, SnapshotError, challenger_snapshot
from infra.config import ChallengerSettings, ModelSettings, Settings
from infra.metrics import Metrics
from trainer.guardrails import non_finite_parameters
from trainer.quality import RollingQuality
from trainer.tracking import MlflowLogger

log = logging.getLogger(__name__)


# The champion's name when it is the learner of the `model` settings.
DEFAULT_CANDIDATE = "default"


@dataclass
class Candidate:
    name: str
    model: ModelSettings
    pipeline: Any
    quality: RollingQuality
    # Consecutive checks at which it beat the champion by the margin.
    streak: int = 0

    def auc(self) -> float | None:
        return _auc(self.quality)


def _auc(quality: RollingQuality) -> float | None:
    value = quality.as_dict().get("roc_auc")
    return value if value is not None and math.isfinite(value) else None


@dataclass
class Promotion:
    winner: str
    loser: str
    winner_auc: float
    loser_auc: float

    def describe(self) -> str:
        return (
            f"challenger {self.winner!r} promoted over {self.loser!r}: rolling ROC AUC "
            f"{self.winner_auc:.4f} vs {self.loser_auc:.4f}"
        )


class Arena:
    """The challengers beside the trainer's champion (which `trainer.champion.Champion`
    holds: its `pipeline` and `quality`). With no candidates configured it does nothing."""

    def __init__(
        self,
        model: ModelSettings,
        cfg: ChallengerSettings,
        window: int,
        threshold: float,
        metrics: Metrics | None = None,
        mlflow: MlflowLogger | None = None,
    ) -> None:
        """`model`: the configured learner (the default champion), which candidates change;
        `window`, `threshold`: the rolling quality each candidate is judged by; `metrics`,
        `mlflow`: where challenger quality and promotions are reported."""
        self.model = model
        self.window = window
        self.threshold = threshold
        self.metrics = metrics
        self.mlflow = mlflow
        self.cfg = cfg
        self.champion = DEFAULT_CANDIDATE
        self.champion_model = model
        self.challengers = [self._fresh(c.name, self._model(c.name)) for c in self.cfg.candidates]
        self.promotions = 0
        self.labels_since_promotion = 0

    def _model(self, name: str) -> ModelSettings:
        if name == DEFAULT_CANDIDATE:
            return self.model
        for c in self.cfg.candidates:
            if c.name == name:
                changes = c.model_dump(exclude={"name"}, exclude_none=True)
                return self.model.model_copy(update=changes)
        raise KeyError(name)

    def _fresh(self, name: str, model: ModelSettings) -> Candidate:
        return Candidate(
            name,
            model,
            build_pipeline(model),
            RollingQuality(self.window, self.threshold),
        )

    @property
    def fraud_weight(self) -> float:
        return self.champion_model.fraud_weight

    def restored(self, name: str | None, hyperparameters: dict[str, Any] | None = None) -> None:
        """The champion the trainer restored (snapshot, warm start, rollback) is `name`."""
        name = name or DEFAULT_CANDIDATE
        if name == self.champion:
            return
        try:
            model = self._model(name)
        except KeyError:
            # No longer configured: it learns on with the settings it was trained with.
            model = self.model.model_copy(update=hyperparameters or {})
            log.warning("champion %r is no configured candidate any more", name)
        # The slot of the restored candidate goes to the champion it replaces, untrained.
        old = self.champion
        self.challengers = [
            self._fresh(old, self.champion_model) if c.name == name else c for c in self.challengers
        ]
        self.champion, self.champion_model = name, model

    def snapshot_fields(self) -> dict[str, Any]:
        """The challengers and the promotion state, as `make_snapshot` keyword arguments."""
        for i, c in enumerate(self.challengers):
            bad = non_finite_parameters(c.pipeline)
            if bad:
                # Never recovers by learning more (as a champion would not): start it over
                # rather than snapshot and shadow-score NaNs.
                log.warning("challenger %r diverged (%s): reset, untrained", c.name, bad[0])
                self.challengers[i] = self._fresh(c.name, c.model)
        challengers: list[ChallengerSnapshot] = [
            challenger_snapshot(
                c.name,
                c.pipeline,
                c.model.model_dump(),
                c.quality.as_dict(),
                c.quality.seen,
                c.streak,
            )
            for c in self.challengers
        ]
        return {
            "challengers": challengers,
            "promotions": self.promotions,
            "labels_since_promotion": self.labels_since_promotion,
        }

    def restore_challengers(self, snapshot: Snapshot) -> None:
        """Give the challengers the state `snapshot` recorded (after `restored`, which settles
        who is champion). A challenger that is no longer configured, or whose settings changed
        since, starts untrained; one that is not in the snapshot (older snapshots: none) too.
        The rolling quality windows are not in snapshots: evaluation starts over, as the
        champion's does, so a promotion again needs `min_labels` labels first."""
        self.promotions = snapshot.promotions
        self.labels_since_promotion = snapshot.labels_since_promotion
        if not snapshot.challengers:
            return
        try:
            loaded = {n: upgrade_pipeline(p) for n, p in snapshot.load_challengers()}
        except SnapshotError as exc:
            # The champion loaded: train on with untrained challengers rather than not at all.
            log.warning("challengers not restored, they start untrained: %s", exc)
            return
        saved = {c.name: c for c in snapshot.challengers}
        restored: list[str] = []
        for c in self.challengers:
            state = saved.get(c.name)
            if state is None:
                continue
            if state.hyperparameters != c.model.model_dump():
                log.info("challenger %r: settings changed since the snapshot, untrained", c.name)
                continue
            c.pipeline = loaded[c.name]
            c.streak = state.streak
            restored.append(f"{c.name} ({state.labels_seen} labels evaluated)")
        dropped = sorted(set(saved) - {c.name for c in self.challengers})
        if dropped:
            log.info("challengers in the snapshot no longer configured: %s", ", ".join(dropped))
        if restored:
            log.info("challengers restored: %s", ", ".join(restored))

    def learn(self, features: dict[str, float], y: bool) -> None:
        self.labels_since_promotion += 1
        for c in self.challengers:
            c.quality.update(y, predict_one(c.pipeline, features))
            c.pipeline.learn_one(features, y, w=c.model.fraud_weight if y else 1.0)

    def check(self, champion_quality: RollingQuality) -> Candidate | None:
        """Called at each snapshot: the challenger to promote now, if any."""
        if not self.challengers:
            return None
        champion_auc = _auc(champion_quality)
        ready = (
            champion_auc is not None
            and champion_quality.seen >= self.cfg.min_labels
            and self.labels_since_promotion >= self.cfg.min_labels
        )
        best: Candidate | None = None
        for c in self.challengers:
            auc = c.auc()
            ahead = (
                ready
                and auc is not None
                and c.quality.seen >= self.cfg.min_labels
                and auc > champion_auc + self.cfg.margin  # type: ignore[operator]
            )
            c.streak = c.streak + 1 if ahead else 0
            if c.streak >= self.cfg.checks and (best is None or auc > best.auc()):  # type: ignore[operator]
                best = c
        return best

    def promote(
        self, winner: Candidate, pipeline: Any, quality: RollingQuality
    ) -> tuple[Any, RollingQuality, Promotion]:
        """Swap: the winner becomes the champion; the champion (`pipeline`, `quality`) becomes
        a challenger and learns on. Returns the new champion's pipeline and quality."""
        promotion = Promotion(winner.name, self.champion, winner.auc() or 0.0, _auc(quality) or 0.0)
        demoted = Candidate(self.champion, self.champion_model, pipeline, quality)
        self.challengers = [demoted if c is winner else c for c in self.challengers]
        for c in self.challengers:
            c.streak = 0
        self.champion, self.champion_model = winner.name, winner.model
        self.promotions += 1
        self.labels_since_promotion = 0
        return winner.pipeline, winner.quality, promotion

    def contest(
        self, pipeline: Any, quality: RollingQuality, labels_learned: int
    ) -> tuple[Any, RollingQuality] | None:
        """At each snapshot: report the challengers' quality, and promote one that beat the
        champion (`pipeline`, `quality`). Returns the new champion's pipeline and quality, or
        None when the champion stays."""
        winner = self.check(quality)
        if self.metrics is not None:
            for c in self.challengers:
                auc = c.auc()
                if auc is not None:
                    self.metrics.challenger_roc_auc.labels(c.name).set(auc)
        if self.mlflow is not None and self.challengers:
            self.mlflow.record(labels_learned, self.run_metrics(), {})
        if winner is None:
            return None
        pipeline, quality, promotion = self.promote(winner, pipeline, quality)
        if self.metrics is not None:
            self.metrics.promotions.inc()
        log.info("%s at %d labels learned", promotion.describe(), labels_learned)
        if self.mlflow is not None:
            self.mlflow.record(
                labels_learned,
                {"promotions": float(self.promotions)},
                {"promotion.last": promotion.describe(), "champion.candidate": winner.name},
            )
        return pipeline, quality

    def run_metrics(self) -> dict[str, float]:
        """Each challenger's rolling quality (evaluated in shadow: progressively, on the same
        labels as the champion), as run metrics `challenger.<name>.<metric>`."""
        out: dict[str, float] = {}
        for c in self.challengers:
            for metric, value in c.quality.as_dict().items():
                if math.isfinite(value):
                    out[f"challenger.{c.name}.{metric}"] = value
        return out


def arena_of(
    settings: Settings, metrics: Metrics | None = None, mlflow: MlflowLogger | None = None
) -> Arena:
    """The challengers the settings configure."""
    return Arena(
        settings.model,
        settings.challengers,
        settings.trainer.quality_window,
        settings.scorer.threshold,
        metrics,
        mlflow,
    )
