"""The champion: the model the trainer trains and publishes, and what it has learned.

`Champion` holds the River pipeline (through the compiled `FusedModel`), its version, the
counts of labels learned, the label-fed state shipped beside its weights
(core/label_state.py) and its progressive quality. `fit` evaluates then learns one joined
transaction, feeding the label-fed state on the same path, so both are learned exactly once
(restarts included). The champion's model is replaced by a restore, a revert (guardrails), a
rollback or a promotion. The guardrails see only what `fit` hands them; the challengers
(`Arena`) learn what it learns and follow each change of champion.
"""

from __future__ import annotations

from typing import Any

import orjson

from core.codec_msgspec import decode_score_fields, features_error
from core.learner_compiled import FusedModel
from core.model import build_pipeline, upgrade_pipeline
from core.snapshot import Offsets, Snapshot, empty_label_state, label_state_of, make_snapshot
from infra.config import ModelSettings
from trainer.arena import Arena
from trainer.guardrails import Guardrails
from trainer.join import Joined
from trainer.label_trust import JUDGING_RANK
from trainer.maturation import MAX_FUTURE_US, WATERMARK_KEY, event_time_us, wall_clock_us
from trainer.quality import RollingQuality


class Champion:
    def __init__(
        self,
        model: ModelSettings,
        quality_window: int,
        threshold: float,
        guardrails: Guardrails,
        arena: Arena,
    ) -> None:
        """`guardrails` observes the transactions with trusted labels; `arena` (the
        challengers) learns every transaction the champion learns, and names the champion."""
        self.model = model
        self.quality_window = quality_window
        self.threshold = threshold
        self.guardrails = guardrails
        self.arena = arena
        self.fused = FusedModel(build_pipeline(model))
        self.version = 0
        self.labels_learned = 0
        self.last_label_at: float | None = None
        self.label_counts: dict[str, int] = {"fraud": 0, "legit": 0}
        # What the model knows from labels beyond its weights: shipped with them.
        self.label_state = empty_label_state(model)
        self.quality = RollingQuality(quality_window, threshold)
        # Feature names learned so far (bounded: core.codec_msgspec.MAX_MODEL_FEATURES).
        self.feature_names: set[str] = set()
        # Drained by TrainerGauges: learned since the last report, and label lags (seconds).
        self.learned_unreported = 0
        self.lags: list[float] = []

    @property
    def pipeline(self) -> Any:
        """The River pipeline, with everything learned so far written into it."""
        return self.fused.pipeline

    @pipeline.setter
    def pipeline(self, pipeline: Any) -> None:
        # A restored, rolled back or promoted model: the fused learner takes it over.
        self.fused = FusedModel(pipeline)

    # -- replacing the model -------------------------------------------------------------------

    def restore(self, snapshot: Snapshot) -> int | None:
        """Resume from `snapshot`, challengers included. Returns the watermark it stored."""
        # A model written before the dense-only scaler learns its one-hot keys from now on.
        self.pipeline = upgrade_pipeline(snapshot.load_model())
        self.version = snapshot.version
        self.labels_learned = snapshot.labels_learned
        self.label_counts = {"fraud": 0, "legit": 0, **snapshot.label_counts}
        self.label_state = label_state_of(snapshot, self.model)
        self.arena.restored(snapshot.candidate, snapshot.hyperparameters)
        self.arena.restore_challengers(snapshot)
        # The watermark rides in the snapshot's free-form `label_counts` (trainer.maturation).
        watermark = self.label_counts.pop(WATERMARK_KEY, None)
        return None if watermark is None else int(watermark)

    def count_known_features(self) -> None:
        """The names the current model already knows count towards the feature bound."""
        if self.fused.learner is not None:
            self.feature_names.update(self.fused.learner.keys)

    def revert(self, last: Snapshot | None) -> None:
        """Back to the model last published (untrained if none): this one diverged."""
        self.pipeline = upgrade_pipeline(last.load_model()) if last else build_pipeline(self.model)
        self.labels_learned = last.labels_learned if last else 0
        self.label_counts = {"fraud": 0, "legit": 0, **(last.label_counts if last else {})}
        self.arena.restored(
            last.candidate if last else None, last.hyperparameters if last else None
        )

    def adopt(self, rollback: Snapshot) -> None:
        """Learn on from a rolled-back model, numbered above everything published so far.
        Raises whatever loading its model raises, changing nothing then."""
        pipeline = upgrade_pipeline(rollback.load_model())
        self.pipeline = pipeline
        self.version = max(self.version, rollback.version)
        self.labels_learned = rollback.labels_learned
        self.label_counts = {"fraud": 0, "legit": 0, **rollback.label_counts}
        self.arena.restored(rollback.candidate, rollback.hyperparameters)
        self.quality = RollingQuality(self.quality_window, self.threshold)

    def contest(self) -> bool:
        """Let the challengers contest the champion; True when one was promoted."""
        swap = self.arena.contest(self.pipeline, self.quality, self.labels_learned)
        if swap is None:
            return False
        self.pipeline, self.quality = swap
        return True

    # -- learning ------------------------------------------------------------------------------

    def fit(self, joined: Joined, correction: bool = False) -> str | None:
        """Evaluate, then learn one joined transaction. Returns why its Score is unusable (a
        dead-letter reason; nothing learned), or None once learned. A `correction` (late or
        overriding label) turns the transaction's earlier label in the label-fed state into
        this one instead of counting a second label."""
        raw = joined.score_raw or b""
        fields = decode_score_fields(raw)
        if fields is not None:  # numbers only: the compiled learner
            features, served, event_time = fields.features, fields.score, fields.event_time
            entities = (fields.merchant_id, fields.merchant_category, fields.country)
            learn = self.fused.predict_learn
        else:
            try:
                record = orjson.loads(raw)
                features = record["features"]
                if not isinstance(features, dict):
                    raise TypeError("features is not an object")
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return "invalid_score"
            served, event_time = record.get("score"), record.get("event_time")
            entities = (
                record.get("merchant_id"),
                record.get("merchant_category"),
                record.get("country"),
            )
            learn = self.fused.learn_any  # River's own path (bools, say)
        refused = features_error(features, self.feature_names)
        if refused is not None:  # not what a scorer writes: never reaches the model
            return refused
        y = joined.is_fraud
        # Progressive validation: the model's probability before it learns the label.
        # Matured transactions count too: they are most of the real negatives.
        predicted = learn(features, y, self.arena.fraud_weight if y else 1.0)
        self.quality.update(y, predicted)
        # Only labels from trusted sources (and matured transactions) judge candidate models.
        if joined.trust >= JUDGING_RANK:
            self.guardrails.observe(features, y, served, predicted)
        self.label_counts["fraud" if y else "legit"] += 1
        self.arena.learn(features, y)
        event_us = joined.event_us or event_time_us(event_time)
        if event_us:
            self._observe_label_state(entities, y, event_us, correction)
        self.labels_learned += 1
        self.last_label_at = joined.label_arrived
        self.learned_unreported += 1  # the counter is bumped once per loop turn
        if joined.label_us and event_us:
            self.lags.append(max(0.0, (joined.label_us - event_us) / 1e6))
        return None

    def _observe_label_state(
        self, entities: tuple[Any, Any, Any], y: bool, event_us: int, correction: bool
    ) -> None:
        """Feed one learned label to the label-fed state the next snapshot ships (on the same
        path as learning: exactly once, restarts included)."""
        if event_us > wall_clock_us() + MAX_FUTURE_US:  # would pin the state in the future
            return
        merchant, category, country = (v if isinstance(v, str) else None for v in entities)
        self.label_state.observe(merchant, category, country, y, event_us / 1e6, correction)

    def count(self, kind: str) -> None:
        """One more transaction resolved as `kind` (matured, late, overridden)."""
        self.label_counts[kind] = self.label_counts.get(kind, 0) + 1

    # -- snapshots -----------------------------------------------------------------------------

    def snapshot(
        self,
        name: str,
        resume: Offsets,
        processed: Offsets,
        key: Any,
        watermark_us: int | None,
    ) -> Snapshot:
        """The next version, signed with `key`: model, counts, label-fed state, challengers,
        and where a restart resumes (`resume`) and what it had processed (`processed`)."""
        if watermark_us is not None:  # carried in label_counts (see WATERMARK_KEY)
            self.label_counts[WATERMARK_KEY] = watermark_us
        self.version += 1
        return make_snapshot(
            self.pipeline,
            name,
            self.version,
            self.labels_learned,
            resume,
            processed,
            self.quality.as_dict(),
            label_counts=dict(self.label_counts),
            key=key,
            candidate=self.arena.champion,
            hyperparameters=self.arena.champion_model.model_dump(),
            last_label_at=self.last_label_at,
            label_state=self.label_state.to_data(),
            # Challengers too: a restarted trainer goes on with them trained.
            **self.arena.snapshot_fields(),
        )
