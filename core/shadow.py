"""Shadow scoring (setting `scorer.shadow`): the challengers a snapshot carries score every
batch beside the champion, and each Score record gets their probabilities as
`challenger_scores` ({candidate name: probability}). They never decide `flagged`: the
champion does.

The challengers are compiled like the champion (`CompiledModel`, one matrix product per batch
each), so the extra cost is one batch product and one small dict per record per challenger.
A challenger that does not load or compile is skipped (logged): shadow scores must never keep
a new champion from being served.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import numpy as np

from core.features import FeatureBatch
from core.model_compiled import CompiledModel
from core.snapshot import Snapshot, SnapshotError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ShadowModels:
    """The compiled challengers of one snapshot, in snapshot order."""

    models: tuple[tuple[str, CompiledModel], ...]

    @classmethod
    def from_snapshot(cls, snapshot: Snapshot) -> ShadowModels | None:
        """The snapshot's challengers, compiled; None when it carries none (or none loads).
        Call it only on a snapshot already checked (`ModelWatcher` does, before
        `on_snapshot`); each challenger is rebuilt from its data."""
        try:
            pipelines = snapshot.load_challengers()
        except SnapshotError as exc:
            log.warning("snapshot v%d: no shadow scoring: %s", snapshot.version, exc)
            return None
        models: list[tuple[str, CompiledModel]] = []
        for name, pipeline in pipelines:
            try:
                models.append((name, CompiledModel.from_pipeline(pipeline, snapshot.version)))
            except Exception as exc:  # noqa: BLE001  a learner we cannot compile: not shadowed
                log.warning(
                    "snapshot v%d: challenger %r not shadowed: %s", snapshot.version, name, exc
                )
        if not models:
            return None
        log.info(
            "shadow scoring with challengers %s of snapshot v%d",
            ", ".join(name for name, _ in models),
            snapshot.version,
        )
        return cls(tuple(models))

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(name for name, _ in self.models)

    def scores(self, batch: FeatureBatch) -> dict[str, np.ndarray]:
        """Each challenger's probabilities of fraud for the batch, by name."""
        return {name: model.predict_proba(batch) for name, model in self.models}

    def per_record(self, batch: FeatureBatch) -> list[dict[str, float]]:
        """The `challenger_scores` field of each record of the batch, in batch order. A
        non-finite score (a diverged challenger) is left out: JSON has no NaN."""
        scores = self.scores(batch)
        columns = [(name, probs.tolist()) for name, probs in scores.items()]
        out = [{name: probs[i] for name, probs in columns} for i in range(len(batch))]
        if not all(np.isfinite(probs).all() for probs in scores.values()):
            out = [{k: v for k, v in d.items() if math.isfinite(v)} for d in out]
        return out
