"""The model's settings: the `model` section of the configuration (`infra.config.Settings`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelSettings(BaseModel):
    name: str = "fraudstream-fraud"
    # 0.005: best pre- and post-drift AUC in `fraudstream evaluate` (0.02 was noisier).
    learning_rate: float = Field(0.005, gt=0, le=10)
    l2: float = Field(0.0, ge=0)
    # Scorers serve the average of the weights over about this many labels (an exponential
    # moving average): steadier than the raw SGD weights; 1 serves the raw weights.
    average_labels: int = Field(2000, ge=1, le=10_000_000)
    # Weight of a fraud label in learn_one: fraud is rare, so each one counts more.
    fraud_weight: float = Field(5.0, gt=0)
    # Expected share of fraud; the untrained model's intercept starts there, and the label-fed
    # features smooth towards it until labels arrive.
    prior_fraud_rate: float = Field(0.01, gt=0, lt=1)
    # Values per label-fed table (merchants, categories, countries) kept and shipped in every
    # snapshot (~80 bytes each); the least recently labelled is forgotten past it (counted).
    label_state_max_keys: int = Field(20_000, ge=1, le=1_000_000)
