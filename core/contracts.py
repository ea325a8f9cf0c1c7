"""Wire contracts (see ARCHITECTURE.md): Transaction, Score, Label."""

from __future__ import annotations

import math
from datetime import datetime

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator

# Above this an amount is not a card payment but a corrupted or hostile record.
MAX_AMOUNT = 1e9
# Longest identifier or code accepted in a string field.
MAX_STR = 256


class Transaction(BaseModel):
    """A card transaction as published to the `transactions` topic."""

    model_config = ConfigDict(
        extra="ignore", frozen=True, str_max_length=MAX_STR, allow_inf_nan=False
    )

    transaction_id: str = Field(min_length=1)
    card_id: str = Field(min_length=1)
    amount: float = Field(ge=0.0, le=MAX_AMOUNT, strict=True)
    merchant_category: str = Field(min_length=1)
    timestamp: AwareDatetime
    currency: str | None = None
    merchant_id: str | None = None
    country: str | None = None
    channel: str | None = None

    @field_validator("amount")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("amount must be finite")
        return v


class Reason(BaseModel):
    """One feature that pushed a score up, with its signed contribution to the logit."""

    feature: str
    contribution: float


class Score(BaseModel):
    """The scorer's verdict on one transaction, with the features the model saw."""

    model_config = ConfigDict(extra="ignore")

    transaction_id: str
    card_id: str
    # The transaction's merchant, category and country: what the label-fed state is keyed by
    # when the trainer learns this Score's label (null where the transaction had none).
    merchant_id: str | None = None
    merchant_category: str | None = None
    country: str | None = None
    score: float = Field(ge=0.0, le=1.0)
    flagged: bool
    threshold: float
    model_version: int
    event_time: datetime
    scored_at: datetime
    features: dict[str, float]
    # The features that pushed the score up most, largest first (`scorer.reasons` of them).
    reasons: list[Reason] = Field(default_factory=list)
    # Shadow scores (setting `scorer.shadow`): each challenger's probability of fraud for the same
    # features, by candidate name. Absent when shadow scoring is off or there are none.
    challenger_scores: dict[str, float] | None = None


class Label(BaseModel):
    """Ground truth for one transaction from the investigations team."""

    model_config = ConfigDict(extra="ignore", frozen=True, str_max_length=MAX_STR)

    transaction_id: str = Field(min_length=1)
    is_fraud: bool = Field(strict=True)
    labeled_at: AwareDatetime | None = None
    source: str | None = None
