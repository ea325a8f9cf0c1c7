"""The whole stream over a real broker: producer -> scorer -> scores, labels -> trainer ->
model-updates -> scorer (new model version), MLflow run with a loadable model, DLQ."""

from __future__ import annotations

import threading
import urllib.request

import mlflow
import orjson
import pandas as pd
import pytest
from confluent_kafka import Producer

from infra.broker import free_port
from infra.metrics import Metrics
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic

pytestmark = pytest.mark.integration


def _ids(msgs: list) -> list[str]:
    return [orjson.loads(m.value())["transaction_id"] for m in msgs]


def test_every_transaction_scored_labels_learned_and_new_model_served(
    make_settings: SettingsFactory, tmp_path
) -> None:
    settings = make_settings()
    env = settings_env(settings)
    n_first, n_second = 3000, 1000
    score_port = free_port()
    with (
        fraudstream_process(["train", "--metrics-port", "0"], env, tmp_path / "train.log") as train,
        fraudstream_process(
            ["score", "--metrics-port", str(score_port)], env, tmp_path / "score.log"
        ) as score,
    ):
        first = run_producer(
            settings,
            ProduceOptions(rate=5000, count=n_first, seed=7, label_delay_s=0.0, fraud_rate=0.05),
            Metrics(),
            threading.Event(),
        )
        assert first.transactions == n_first

        # A third-party client publishes one good and one malformed record, by hand.
        raw = Producer({"bootstrap.servers": settings.bootstrap})
        good = {
            "transaction_id": "third-party-1",
            "card_id": "card-x",
            "amount": 12.5,
            "merchant_category": "grocery",
            "timestamp": "2026-11-22T12:00:00Z",
            "unknown_extra": [1, 2],
        }
        raw.produce(settings.topics.transactions, orjson.dumps(good), b"card-x")
        raw.produce(settings.topics.transactions, b"{not json", b"card-y")
        raw.flush(10)

        # The trainer learns the labels and publishes snapshots; wait for one to be served.
        snapshots = read_topic(settings, settings.topics.model_updates, lambda m: len(m) > 0)
        assert snapshots, "no model snapshot published"

        run_producer(
            settings,
            ProduceOptions(rate=5000, count=n_second, seed=8, label_delay_s=0.0),
            Metrics(),
            threading.Event(),
        )
        expected = n_first + n_second + 1
        scores = read_topic(
            settings, settings.topics.scores, lambda m: len(set(_ids(m))) >= expected, 90
        )
        dlq = read_topic(settings, settings.topics.transactions_dlq, lambda m: len(m) >= 1)
        assert train.poll() is None and score.poll() is None, "a process died"
        with urllib.request.urlopen(f"http://127.0.0.1:{score_port}/metrics", timeout=5) as r:
            served_metrics = r.read().decode()
    # The scorer measured label arrival -> serving for the models it loaded.
    loads = [
        float(line.split()[-1])
        for line in served_metrics.splitlines()
        if line.startswith("fraudstream_label_to_serving_seconds_count")
    ]
    assert loads and loads[0] >= 1

    # Both stopped with SIGTERM: clean exits.
    assert score.returncode == 0, (tmp_path / "score.log").read_text()[-3000:]
    assert train.returncode == 0, (tmp_path / "train.log").read_text()[-3000:]

    ids = _ids(scores)
    assert len(set(ids)) == expected == n_first + n_second + 1
    assert "third-party-1" in ids
    records = [orjson.loads(m.value()) for m in scores]
    for r in records:
        assert 0.0 <= r["score"] <= 1.0
        assert r["flagged"] == (r["score"] >= r["threshold"])
        assert {"amount", "log_amount", "log_seconds_since_last"} <= r["features"].keys()
    assert max(r["model_version"] for r in records) >= 1, "scorer never served a trained model"

    assert len(dlq) == 1
    headers = dict(dlq[0].headers())
    assert dlq[0].value() == b"{not json"
    assert headers["error"] == b"not_json"
    assert headers["source.topic"] == settings.topics.transactions.encode()

    # MLflow: a run with metrics and a model that loads and scores a transaction.
    mlflow.set_tracking_uri(settings.mlflow_uri())
    runs = mlflow.search_runs(experiment_names=[settings.mlflow_experiment], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert "roc_auc" in run.data.metrics
    assert run.data.params["model.learning_rate"] == str(settings.model.learning_rate)
    model = mlflow.pyfunc.load_model(f"runs:/{run.info.run_id}/model")
    raw_tx = pd.DataFrame([good])
    probs = model.predict(raw_tx)
    assert probs.shape == (1,) and 0.0 <= probs[0] <= 1.0
    # It also takes feature vectors exactly as logged in Score.features.
    last = max(records, key=lambda r: r["model_version"])
    served = model.predict(pd.DataFrame([last["features"]]))
    assert served.shape == (1,)
