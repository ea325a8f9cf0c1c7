"""The trainer's Prometheus metrics, reported once per loop turn rather than per record
(resolving a labelled child costs ~2 us): counts since the last report, quality, the join
buffer and the label-fed state."""

from __future__ import annotations

from typing import Any

import numpy as np

from infra.metrics import Metrics
from trainer.champion import Champion
from trainer.join import Joiner


class TrainerGauges:
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self._labels_read = {b: metrics.labels.labels(str(b).lower()) for b in (True, False)}
        # Labels read per verdict since the last report: the loop adds to these directly.
        self.read_unreported = {True: 0, False: 0}
        # Totals the joiner keeps, as already added to their counters.
        self._reported: dict[tuple[str, str], int] = {}

    def report(self, champion: Champion, joiner: Joiner) -> None:
        m = self.metrics
        unreported = self.read_unreported
        for is_fraud, n in unreported.items():
            if n:
                self._labels_read[is_fraud].inc(n)
                unreported[is_fraud] = 0
        if champion.learned_unreported:
            m.labels_learned.inc(champion.learned_unreported)
            champion.learned_unreported = 0
        if champion.lags:
            m.label_lag.observe_many(np.asarray(champion.lags))
            champion.lags.clear()
        q = champion.quality.as_dict()
        if "roc_auc" in q:
            m.model_roc_auc.set(q["roc_auc"])
        if "precision" in q:
            m.model_precision.set(q["precision"])
        if "recall" in q:
            m.model_recall.set(q["recall"])
        if "log_loss" in q:
            m.model_log_loss.set(q["log_loss"])
        learned = champion.labels_learned
        if learned:
            # Labelled (explicit or late) over resolved (labelled or matured) transactions;
            # an override re-learns a resolved transaction: in neither.
            counts = champion.label_counts
            matured, late = counts.get("matured", 0), counts.get("late", 0)
            overridden = counts.get("overridden", 0)
            resolved = learned - late - overridden
            if resolved > 0:
                m.label_coverage.set((learned - matured - overridden) / resolved)
        for name, table in champion.label_state.tables.items():
            m.label_state_values.labels(name).set(len(table))
            m.label_state_evicted.labels(name).set(table.evicted)
        self._report_joiner(joiner)

    def _report_joiner(self, j: Joiner) -> None:
        m = self.metrics
        m.join_pending.labels("score").set(len(j.scores))
        m.join_pending.labels("label").set(len(j.labels))
        for side, cause, total in (
            ("score", "duplicate", j.duplicate_scores),
            ("label", "duplicate", j.duplicate_labels),
            ("label", "conflict", j.conflicting_labels),
        ):
            self._add(m.join_ignored, (side, cause), (side, cause), total)
        for outcome, total in (("confirmed", j.confirming_labels), ("replaced", j.replaced_labels)):
            self._add(m.label_overrides, (outcome,), ("override", outcome), total)
        for side, buffer in (("score", j.scores), ("label", j.labels)):
            for cause, total in (
                ("full", buffer.evicted_full),
                ("expired", buffer.evicted_expired),
            ):
                self._add(m.join_evicted, (side, cause), (side, cause), total)

    def _add(self, counter: Any, labels: tuple[str, ...], key: tuple[str, str], total: int) -> None:
        """Add to `counter` what the joiner's running `total` gained since the last report."""
        seen = self._reported.get(key, 0)
        if total > seen:
            counter.labels(*labels).inc(total - seen)
            self._reported[key] = total
