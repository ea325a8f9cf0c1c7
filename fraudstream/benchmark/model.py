"""A trained model for the benchmarks to score with.

An untrained model has all-zero weights: no one-hot key carries weight and no feature pushes
the logit up, so every Score would have empty `reasons` and the scorer would skip the work a
real model costs. Every bench scorer instead serves this snapshot, trained on generated
labelled transactions the way the trainer learns them.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from functools import cache
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from core.contracts import Transaction
from core.features import FeatureBuilder
from core.model import build_pipeline
from core.model_settings import ModelSettings
from core.snapshot import encode_snapshot, make_snapshot
from infra.config import Settings
from infra.kafka import make_producer
from infra.signing import require_signing_key
from producer.generator import TransactionGenerator

TRAIN_RECORDS = 20_000


@cache
def _trained_pipeline(model_json: str, n: int) -> Any:
    model = ModelSettings.model_validate_json(model_json)
    generator = TransactionGenerator(seed=11, fraud_rate=0.02)
    t0 = datetime.now(UTC) - timedelta(days=1)
    rows = [generator.next(t0 + timedelta(seconds=4 * i)) for i in range(n)]
    txs = [Transaction.model_validate(record) for record, _ in rows]
    features = FeatureBuilder().build(txs).dicts()
    pipeline = build_pipeline(model)
    for x, (_, is_fraud) in zip(features, rows, strict=True):
        if is_fraud:
            pipeline.learn_one(x, True, w=model.fraud_weight)
        else:
            pipeline.learn_one(x, False)
    return pipeline


def _trained_snapshot(model: ModelSettings, key: Ed25519PrivateKey, n: int) -> bytes:
    pipeline = _trained_pipeline(model.model_dump_json(), n)
    return encode_snapshot(make_snapshot(pipeline, model.name, 1, n, {}, {}, {}, key=key))


def publish_trained_model(settings: Settings, topic: str, n: int = TRAIN_RECORDS) -> None:
    """Publish a snapshot of a model trained on `n` generated labels to `topic` (the bench's
    model-updates topic), so the scorers reading it serve a realistic model."""
    key = require_signing_key(settings, "the bench publishes its model and")
    value = _trained_snapshot(settings.model, key, n)
    producer = make_producer(settings, "bench model")
    producer.produce(topic, value, settings.model.name.encode())
    if producer.flush(30):
        raise RuntimeError(f"the bench model could not be published to {topic}")
