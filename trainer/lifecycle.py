"""The trainer's side of the model lifecycle, kept out of the training loop's file:

- `Guardrails`: a snapshot is published only if it is sane: finite parameters, scores on a
  recent reference sample of serving-time feature vectors within lower and upper bounds, and
  progressive quality not collapsed against the model in service (the scores scorers gave
  the same labelled transactions). Only labels from trusted sources (trainer/label_trust.py)
  and matured transactions feed these checks: a low-trust feed cannot vouch for the model it
  taught. Otherwise the snapshot is held back: the serving model stays.
- `RollbackWatcher`: follows `model-updates` for snapshots republished by
  `fraudstream model rollback`, which the trainer then adopts and learns on from.
- `TrainerLifecycle`: the trainer's reactions to those (hold back, adopt a rollback, promote),
  mixed into `trainer.run.Trainer`.
- `Arena`: champion and challengers. Challengers (`challengers.candidates`) learn the same
  joined stream as the champion and are evaluated the same way (progressively); one is
  promoted when it beats the champion by a margin over consecutive checks, with hysteresis.
  Snapshots carry the challengers (`Arena.snapshot_fields`), so a restarted trainer goes on
  with them trained (`Arena.restore_challengers`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import KafkaError
from river import metrics as river_metrics

from core.model import build_pipeline, predict_one, upgrade_pipeline
from core.model_settings import ModelSettings
from core.snapshot import (
    ChallengerSnapshot,
    Snapshot,
    SnapshotError,
    challenger_snapshot,
    decode_snapshot,
)
from infra.config import Settings
from infra.metrics import Metrics
from infra.model_updates import check_snapshot, snapshot_consumer
from infra.signing import verify_key
from trainer.quality import RollingQuality

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


class Guardrails:
    _NUMBER = (int, float)  # built once: `int | float` would build a union on every call

    def __init__(self, settings: Settings) -> None:
        self.cfg = settings.guardrails
        self.threshold = settings.scorer.threshold
        self.reference: deque[dict[str, float]] = deque(maxlen=self.cfg.reference_size)
        window = settings.trainer.quality_window
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
            if flag_rate > self.cfg.max_flag_rate:
                held.append(
                    (
                        "flag_rate",
                        f"flags {flag_rate:.1%} of {n} recent transactions "
                        f"(max {self.cfg.max_flag_rate:.1%})",
                    )
                )
            if flag_rate < self.cfg.min_flag_rate:
                held.append(
                    (
                        "flag_rate_low",
                        f"flags {flag_rate:.1%} of {n} recent transactions "
                        f"(min {self.cfg.min_flag_rate:.1%})",
                    )
                )
            if mean > self.cfg.max_mean_score:
                held.append(
                    (
                        "mean_score",
                        f"mean score {mean:.3f} on {n} recent transactions "
                        f"(max {self.cfg.max_mean_score:.3f})",
                    )
                )
            if mean < self.cfg.min_mean_score:
                held.append(
                    (
                        "mean_score_low",
                        f"mean score {mean:.5f} on {n} recent transactions "
                        f"(min {self.cfg.min_mean_score:.5f})",
                    )
                )
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


class RollbackWatcher:
    """Background reader of `model-updates` handing over rollback snapshots (`take`)."""

    def __init__(self, settings: Settings, metrics: Metrics | None = None) -> None:
        self.settings = settings
        self.metrics = metrics
        # Raises ConfigError without a verification key (or the signing key it derives from).
        self.key = verify_key(settings)
        self.min_version = 0
        self._pending: Snapshot | None = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rollback-watcher", daemon=True)

    def start(self, min_version: int) -> RollbackWatcher:
        """Rollbacks numbered above `min_version` (the version resumed from) are new."""
        self.min_version = min_version
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    def take(self) -> Snapshot | None:
        if self._pending is None:
            return None
        with self._lock:
            snapshot, self._pending = self._pending, None
        return snapshot

    def _run(self) -> None:
        try:
            consumer = snapshot_consumer(self.settings)
        except Exception as exc:  # noqa: BLE001  no rollbacks while unreadable; training goes on
            log.warning(
                "rollback watcher: cannot read %s: %s", self.settings.topics.model_updates, exc
            )
            return
        name = self.settings.model.name
        try:
            while not self._stop.is_set():
                msg = consumer.poll(0.2)
                if msg is None:
                    continue
                err = msg.error()
                if err is not None:
                    if err.code() != KafkaError._PARTITION_EOF:
                        log.debug("rollback watcher: %s", err.str())
                    continue
                key = msg.key()
                if key is not None and key.decode("utf-8", "replace") != name:
                    continue
                try:
                    snapshot = decode_snapshot(msg.value())
                except SnapshotError:
                    continue
                if snapshot.origin != "rollback" or snapshot.version <= self.min_version:
                    continue
                try:
                    check_snapshot(
                        snapshot,
                        self.key,
                        name,
                        self.min_version,
                        self.settings.snapshot_max_version_jump,
                    )
                except SnapshotError as exc:
                    if self.metrics is not None:
                        self.metrics.snapshots_refused.labels(exc.reason).inc()
                    log.warning("rollback v%d refused (%s): %s", snapshot.version, exc.reason, exc)
                    continue
                with self._lock:
                    self._pending = snapshot
                self.min_version = snapshot.version
        finally:
            consumer.close()


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
    """The challengers beside the trainer's champion (which the trainer itself holds: its
    `pipeline` and `quality`). With no candidates configured it does nothing."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.cfg = settings.challengers
        self.champion = DEFAULT_CANDIDATE
        self.champion_model = settings.model
        self.challengers = [self._fresh(c.name, self._model(c.name)) for c in self.cfg.candidates]
        self.promotions = 0
        self.labels_since_promotion = 0

    def _model(self, name: str) -> ModelSettings:
        if name == DEFAULT_CANDIDATE:
            return self.settings.model
        for c in self.cfg.candidates:
            if c.name == name:
                changes = c.model_dump(exclude={"name"}, exclude_none=True)
                return self.settings.model.model_copy(update=changes)
        raise KeyError(name)

    def _fresh(self, name: str, model: ModelSettings) -> Candidate:
        return Candidate(
            name,
            model,
            build_pipeline(model),
            RollingQuality(self.settings.trainer.quality_window, self.settings.scorer.threshold),
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
            model = self.settings.model.model_copy(update=hyperparameters or {})
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

    def metrics(self) -> dict[str, float]:
        """Each challenger's rolling quality (evaluated in shadow: progressively, on the same
        labels as the champion), as run metrics `challenger.<name>.<metric>`."""
        out: dict[str, float] = {}
        for c in self.challengers:
            for metric, value in c.quality.as_dict().items():
                if math.isfinite(value):
                    out[f"challenger.{c.name}.{metric}"] = value
        return out


class TrainerLifecycle:
    """Mixed into `Trainer`: what it does when guardrails fail, a rollback arrives, or a
    challenger wins. Uses the trainer's attributes declared here."""

    settings: Settings
    metrics: Metrics
    pipeline: Any
    quality: RollingQuality
    version: int
    labels_learned: int
    label_counts: dict[str, int]
    guardrails: Guardrails
    arena: Arena
    mlflow: Any
    _last: Snapshot | None
    _since_snapshot: int
    _last_snapshot: float
    _last_mlflow: float

    def _maybe_promote(self) -> None:
        """Champion and challengers: swap in a challenger that beat the champion."""
        winner = self.arena.check(self.quality)
        for c in self.arena.challengers:
            auc = c.auc()
            if auc is not None:
                self.metrics.challenger_roc_auc.labels(c.name).set(auc)
        if self.mlflow is not None and self.arena.challengers:
            self.mlflow.record(self.labels_learned, self.arena.metrics(), {})
        if winner is None:
            return
        self.pipeline, self.quality, promotion = self.arena.promote(
            winner, self.pipeline, self.quality
        )
        self.metrics.promotions.inc()
        log.info("%s at %d labels learned", promotion.describe(), self.labels_learned)
        if self.mlflow is not None:
            self.mlflow.record(
                self.labels_learned,
                {"promotions": float(self.arena.promotions)},
                {"promotion.last": promotion.describe(), "champion.candidate": winner.name},
            )
            # Logged (and registered, aliased champion) with the snapshot that serves it.
            self._last_mlflow = float("-inf")

    def _hold(self, held: list[Hold]) -> None:
        """Guardrails failed: nothing published, scorers keep the model they serve."""
        self.guardrails.holds += 1
        for code, _detail in held:
            self.metrics.snapshots_held.labels(code).inc()
        details = "; ".join(detail for _code, detail in held)
        log.warning(
            "snapshot held back at %d labels learned: %s; scorers keep v%d",
            self.labels_learned,
            details,
            self.version,
        )
        if self.mlflow is not None:
            self.mlflow.record(
                self.labels_learned,
                {"guardrail_holds": float(self.guardrails.holds)},
                {"guardrail.last_hold": details},
            )
        self._since_snapshot = 0
        self._last_snapshot = time.monotonic()
        if any(code == "non_finite" for code, _detail in held):
            # Never recovers by learning more: go back to the model in service.
            last = self._last
            self.pipeline = (
                upgrade_pipeline(last.load_model()) if last else build_pipeline(self.settings.model)
            )
            self.labels_learned = last.labels_learned if last else 0
            self.label_counts = {"fraud": 0, "legit": 0, **(last.label_counts if last else {})}
            self.arena.restored(
                last.candidate if last else None, last.hyperparameters if last else None
            )
            log.error("non-finite model: reverted to v%d", self.version)

    def _adopt(self, rollback: Snapshot) -> None:
        """An operator rolled back (`fraudstream model rollback`): learn on from that model."""
        try:
            pipeline = upgrade_pipeline(rollback.load_model())
        except Exception as exc:  # noqa: BLE001  a record that is not a model must not stop training
            log.warning("rollback v%d not adopted: %s", rollback.version, exc)
            return
        self.pipeline = pipeline
        self.version = max(self.version, rollback.version)
        self.labels_learned = rollback.labels_learned
        self.label_counts = {"fraud": 0, "legit": 0, **rollback.label_counts}
        self.arena.restored(rollback.candidate, rollback.hyperparameters)
        self.quality = RollingQuality(
            self.settings.trainer.quality_window, self.settings.scorer.threshold
        )
        # Publish it at once, numbered above everything published so far.
        self._since_snapshot = max(self._since_snapshot, 1)
        self._last_snapshot = float("-inf")
        log.info(
            "rollback to registry version %s adopted (published as v%d, %d labels learned)",
            rollback.registry_version,
            rollback.version,
            self.labels_learned,
        )
        if self.mlflow is not None:
            self.mlflow.record(
                self.labels_learned,
                {"rollback_to_registry_version": float(rollback.registry_version or 0)},
                {"rollback.last": f"registry version {rollback.registry_version}"},
            )
