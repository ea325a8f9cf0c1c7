"""The label-fed state reaches serving: the trainer feeds it every label it learns and ships it
in its snapshots, the scorer serves it with the weights, and restarts keep it.

Real processes over the real broker: `fraudstream score` and `fraudstream train`, transactions
and labels published by a plain client, Scores read back from the topic."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import orjson
import pytest
from confluent_kafka import Producer

from core.byte_hash import hash_strings
from core.label_state import FEATURES as LABEL_FEATURES
from core.label_state import LabelState
from core.snapshot import Snapshot, decode_snapshot
from infra.config import Settings
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, tzinfo=UTC)
MERCHANTS = [f"m{i}" for i in range(8)]
COMPROMISED = {"m0", "m1"}


def _tx(tid: str, card: int, merchant: str, at: datetime) -> dict[str, object]:
    return {
        "transaction_id": tid,
        "card_id": f"card-{card}",
        "amount": 20.0 + card % 7,
        "merchant_category": "electronics" if merchant in COMPROMISED else "grocery",
        "merchant_id": merchant,
        "country": "FR",
        "channel": "pos",
        "timestamp": at.isoformat().replace("+00:00", "Z"),
    }


def _publish(settings: Settings, topic: str, records: list[tuple[bytes, dict]]) -> None:
    producer = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 5})
    for key, value in records:
        producer.produce(topic, orjson.dumps(value), key)
    assert producer.flush(30) == 0


def _publish_transactions(settings: Settings, txs: list[dict]) -> None:
    _publish(settings, settings.topics.transactions, [(str(t["card_id"]).encode(), t) for t in txs])


def _publish_labels(settings: Settings, txs: list[dict]) -> None:
    labels = [
        (str(t["transaction_id"]).encode(), {
            "transaction_id": t["transaction_id"],
            "is_fraud": t["merchant_id"] in COMPROMISED,
            "source": "investigation",
        })
        for t in txs
    ]  # fmt: skip
    _publish(settings, settings.topics.labels, labels)


def _scores(settings: Settings, ids: set[str], timeout_s: float = 60.0) -> dict[str, dict]:
    def seen(msgs: list) -> set[str]:
        return {orjson.loads(m.value())["transaction_id"] for m in msgs} & ids

    msgs = read_topic(settings, settings.topics.scores, lambda m: seen(m) >= ids, timeout_s)
    out = {}
    for m in msgs:
        record = orjson.loads(m.value())
        if record["transaction_id"] in ids:
            out[record["transaction_id"]] = record
    assert set(out) == ids, f"{len(ids - set(out))} transactions without a Score"
    return out


def _snapshot_with(settings: Settings, labels_learned: int, timeout_s: float = 60.0) -> Snapshot:
    def done(msgs: list) -> bool:
        return any(decode_snapshot(m.value()).labels_learned >= labels_learned for m in msgs)

    msgs = read_topic(settings, settings.topics.model_updates, done, timeout_s)
    snapshots = [decode_snapshot(m.value()) for m in msgs]
    assert snapshots, "no snapshot published"
    latest = max(snapshots, key=lambda s: s.version)
    assert latest.labels_learned == labels_learned, latest.labels_learned
    return latest


def _reference(settings: Settings, txs: list[dict]) -> LabelState:
    """The shared code fed the same labels (the order does not matter: see test_label_state)."""
    state = LabelState(settings.model.prior_fraud_rate, settings.model.label_state_max_keys)
    for t in txs:
        at = datetime.fromisoformat(str(t["timestamp"])).timestamp()
        state.observe(t["merchant_id"], t["merchant_category"], t["country"],
                      t["merchant_id"] in COMPROMISED, at)  # fmt: skip
    return state


def _expected(state: LabelState, txs: list[dict]) -> np.ndarray:
    n = len(txs)
    out = np.empty((n, len(LABEL_FEATURES)))
    state.columns(
        hash_strings([t["merchant_id"] for t in txs]),
        hash_strings([t["merchant_category"] for t in txs]),
        hash_strings([t["country"] for t in txs]),
        out,
    )
    return out


def _served(scores: dict[str, dict], txs: list[dict]) -> np.ndarray:
    return np.array(
        [[scores[t["transaction_id"]]["features"][f] for f in LABEL_FEATURES] for t in txs]
    )


def _wait_until_served(settings: Settings, version: int, at: datetime) -> None:
    """Probe transactions until one is scored by `version` (the scorer loads it async)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        probe = _tx(f"probe-{uuid.uuid4().hex[:8]}", 999, "m7", at)
        _publish_transactions(settings, [probe])
        score = _scores(settings, {str(probe["transaction_id"])})
        if next(iter(score.values()))["model_version"] >= version:
            return
        time.sleep(0.5)
    pytest.fail(f"the scorer never served snapshot v{version}")


def _phase(tag: str, n: int, start: datetime) -> list[dict]:
    return [
        _tx(f"{tag}-{i}", i % 40, MERCHANTS[i % len(MERCHANTS)], start + timedelta(minutes=7 * i))
        for i in range(n)
    ]


def test_risk_features_are_served_as_the_shared_code_computes_them_and_survive_restarts(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    env = settings_env(settings)
    first = _phase("a", 400, T0)
    second = _phase("b", 200, T0 + timedelta(days=3))
    third = _phase("c", 100, T0 + timedelta(days=4))
    with fraudstream_process(["train", "--metrics-port", "0", "--no-mlflow"], env,
                             tmp_path / "train.log") as train:  # fmt: skip
        with fraudstream_process(["score", "--metrics-port", "0"], env,
                                 tmp_path / "score.log") as score:  # fmt: skip
            _publish_transactions(settings, first)
            before = _scores(settings, {str(t["transaction_id"]) for t in first})
            # Before any label, every label-fed feature is the prior: one constant.
            assert len({v for s in before.values() for f in LABEL_FEATURES
                        for v in [s["features"][f]]}) == 1  # fmt: skip
            _publish_labels(settings, first)
            snapshot = _snapshot_with(settings, len(first))
            reference = _reference(settings, first)
            assert snapshot.label_state is not None
            shipped = LabelState.from_data(snapshot.label_state)
            np.testing.assert_allclose(
                _expected(shipped, second), _expected(reference, second), rtol=1e-12
            )

            _wait_until_served(settings, snapshot.version, T0 + timedelta(days=3))
            _publish_transactions(settings, second)
            served = _scores(settings, {str(t["transaction_id"]) for t in second})
            assert {s["model_version"] for s in served.values()} == {snapshot.version}
            got = _served(served, second)
            np.testing.assert_allclose(got, _expected(reference, second), atol=6e-7)
            # Not constant: the compromised merchants stand out.
            bad = np.array([t["merchant_id"] in COMPROMISED for t in second])
            assert got[bad, 2].min() > got[~bad, 2].max()
            assert served["b-0"]["merchant_id"] == "m0"
            assert served["b-0"]["merchant_category"] == "electronics"
            assert served["b-0"]["country"] == "FR"
            score.kill()  # SIGKILL: the next scorer starts from the snapshot alone
            score.wait()
        with fraudstream_process(["score", "--metrics-port", "0"], env,
                                 tmp_path / "score2.log") as score2:  # fmt: skip
            _publish_transactions(settings, third)
            served = _scores(settings, {str(t["transaction_id"]) for t in third}, 90)
            np.testing.assert_allclose(
                _served(served, third), _expected(reference, third), atol=6e-7
            )
            train.kill()
            train.wait()
            with fraudstream_process(["train", "--metrics-port", "0", "--no-mlflow"], env,
                                     tmp_path / "train2.log") as train2:  # fmt: skip
                _publish_labels(settings, second)
                after = _snapshot_with(settings, len(first) + len(second), 90)
                both = _reference(settings, first + second)
                restored = LabelState.from_data(after.label_state)
                np.testing.assert_allclose(
                    _expected(restored, third), _expected(both, third), rtol=1e-9
                )
                assert restored.labels == len(first) + len(second)
                assert train2.poll() is None and score2.poll() is None
