"""The label-fed state a snapshot carries, as a scorer (or the MLflow model) serves it."""

from __future__ import annotations

from core.label_state import LabelState, LabelStateError
from infra.config import ModelSettings
from schemas.snapshot import Snapshot, SnapshotError


def empty_label_state(model: ModelSettings) -> LabelState:
    """The state before any label: every label-fed feature at the configured prior."""
    return LabelState(model.prior_fraud_rate, model.label_state_max_keys)


def label_state_of(snapshot: Snapshot, model: ModelSettings) -> LabelState:
    """The snapshot's label state (empty for a snapshot without one); SnapshotError, reason
    `invalid`, for state that does not load."""
    if snapshot.label_state is None:
        return empty_label_state(model)
    try:
        return LabelState.from_data(snapshot.label_state, model.label_state_max_keys).prepare()
    except LabelStateError as exc:
        raise SnapshotError(f"snapshot v{snapshot.version}: {exc}", "invalid") from None
