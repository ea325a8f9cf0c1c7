"""The JSON Schema files in `schemas/` are what the pydantic contracts generate, and the
records each process writes validate against them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import jsonschema
import orjson
import pytest

from core.contracts import Transaction
from core.features import FeatureBuilder
from core.model import build_pipeline
from core.model_compiled import CompiledModel
from core.score_encode_compiled import ScoreWriter, round_features
from core.snapshot import encode_snapshot, make_snapshot
from producer.generator import TransactionGenerator
from schemas.json_schema import CONTRACTS, DIRECTORY, rendered


def _validator(stem: str) -> jsonschema.protocols.Validator:
    schema = orjson.loads((DIRECTORY / f"{stem}.schema.json").read_bytes())
    cls = jsonschema.validators.validator_for(schema)
    cls.check_schema(schema)
    return cls(schema)


def test_the_checked_in_schemas_are_what_the_contracts_generate() -> None:
    files = rendered()
    assert {p.name for p in DIRECTORY.glob("*.schema.json")} == {p.name for p in files}
    for path, text in files.items():
        assert path.read_text() == text, f"{path.name}: run `python -m schemas.json_schema`"


def _produced(n: int) -> list[tuple[dict[str, object], bool]]:
    generator = TransactionGenerator(seed=3, fraud_rate=0.2)
    t0 = datetime(2026, 11, 22, tzinfo=UTC)
    return [generator.next(t0 + timedelta(seconds=i)) for i in range(n)]


def test_the_producers_records_validate() -> None:
    transactions, labels = _validator("transaction"), _validator("label")
    for record, is_fraud in _produced(200):
        transactions.validate(orjson.loads(orjson.dumps(record)))
        label = {"transaction_id": record["transaction_id"], "is_fraud": is_fraud,
                 "labeled_at": "2026-11-23T00:00:00Z", "source": "investigation"}  # fmt: skip
        labels.validate(label)


def test_a_record_the_schema_refuses_is_one_the_contract_refuses() -> None:
    record, _ = _produced(1)[0]
    transactions = _validator("transaction")
    for bad in ({**record, "amount": -1.0}, {**record, "card_id": ""}, {"amount": 1.0}):
        with pytest.raises(jsonschema.ValidationError):
            transactions.validate(bad)


def test_the_scorers_and_the_trainers_records_validate() -> None:
    txs = [Transaction.model_validate(r) for r, _ in _produced(100)]
    batch = FeatureBuilder().build(txs)
    round_features(batch.dense)
    model = CompiledModel.from_pipeline(build_pipeline(), 0)
    probs = model.predict_proba(batch)
    records = ScoreWriter().write(
        [t.transaction_id for t in txs], [t.card_id for t in txs], [t.timestamp for t in txs],
        probs, 0.5, 0, datetime.now(UTC), batch.dense, batch.sparse,
        model.scaled(batch.dense) * model.weight, model.sparse, {"challenger": probs / 2},
        ([t.merchant_id for t in txs], [t.merchant_category for t in txs],
         [t.country for t in txs]),
    )  # fmt: skip
    scores = _validator("score")
    for raw in records:
        score = orjson.loads(raw)
        assert {"reasons", "challenger_scores", "features"} <= score.keys()
        scores.validate(score)
    snapshot = make_snapshot(build_pipeline(), "fraud", 1, 0, {}, {}, {})
    _validator("snapshot").validate(orjson.loads(encode_snapshot(snapshot)))
    assert set(CONTRACTS) == {"transaction", "label", "score", "snapshot"}
