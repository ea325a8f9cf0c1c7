"""Trust levels in a running trainer: a learned low-trust label corrected by an authoritative
one (its Score re-read from `scores`), and only trusted labels feeding the guardrails."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Message, Producer

from infra.metrics import Metrics
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process
from tests.test_monitoring_files import metrics_port, samples, scrape
from trainer.join import Joined
from trainer.label_trust import AUTHORITATIVE, LOW
from trainer.run import Trainer


def _value(text: str, name: str, **labels: str) -> float:
    return samples(text).get((name, frozenset(labels.items())), 0.0)


@pytest.mark.integration
def test_an_authoritative_label_corrects_a_learned_customer_label(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings(partitions=1)
    env = settings_env(settings)
    out = Producer({"bootstrap.servers": settings.bootstrap})
    tids = [f"t-{uuid.uuid4().hex}" for _ in range(3)]
    for i, tid in enumerate(tids):
        score = {"transaction_id": tid, "score": 0.1, "features": {"amount": 10.0 + i}}
        out.produce(settings.topics.scores, orjson.dumps(score), tid.encode())

    def label(tid: str, is_fraud: bool, source: str) -> None:
        value = {"transaction_id": tid, "is_fraud": is_fraud, "source": source}
        out.produce(settings.topics.labels, orjson.dumps(value), tid.encode())

    # The customer's label is learned first; the investigators then disagree on one, agree
    # on another; a second customer label may not contradict the investigators.
    for tid in tids:
        label(tid, True, "customer")
    out.flush(10)
    log = tmp_path / "train.log"
    with fraudstream_process(["train", "--no-mlflow", "--metrics-port", "0"], env, log) as tr:
        port = metrics_port(tr, log)
        deadline = time.monotonic() + 60
        while _value(scrape(port), "fraudstream_labels_learned_total") < 3:
            assert time.monotonic() < deadline and tr.poll() is None, log.read_text()[-2000:]
            time.sleep(0.3)
        label(tids[0], False, "investigation")
        label(tids[1], True, "investigation")
        label(tids[0], True, "customer")
        out.flush(10)
        while True:
            text = scrape(port)
            if _value(text, "fraudstream_labels_learned_total") >= 4 and _value(
                text, "fraudstream_join_ignored_total", side="label", cause="conflict"
            ):
                break
            assert time.monotonic() < deadline and tr.poll() is None, log.read_text()[-2000:]
            time.sleep(0.3)
    overrides = {
        outcome: _value(text, "fraudstream_label_overrides_total", outcome=outcome)
        for outcome in ("corrected", "confirmed", "unmatched")
    }
    assert overrides == {"corrected": 1, "confirmed": 1, "unmatched": 0}
    assert _value(text, "fraudstream_labels_learned_total") == 4  # 3 + the correction


def test_only_trusted_labels_feed_the_guardrails(make_settings: SettingsFactory) -> None:
    settings = make_settings(partitions=1)
    trainer = Trainer(settings, Metrics())
    try:
        score = orjson.dumps({"transaction_id": "t", "score": 0.2, "features": {"amount": 5.0}})
        for i, trust in enumerate((LOW, LOW, AUTHORITATIVE)):
            joined = Joined(f"t{i}", score, True, (0, i), (0, i), 0.0, "label", trust=trust)
            trainer._learn(joined)
        rails = trainer.guardrails
        assert trainer.labels_learned == 3 and trainer.quality.seen == 3
        assert (len(rails.reference), rails.served_seen, rails.candidate_seen) == (1, 1, 1)
    finally:
        trainer.consumer.close()


def test_a_flood_of_untrusted_labels_never_crashes_the_trainer_on_a_full_queue(
    make_settings: SettingsFactory,
) -> None:
    # Nothing can be delivered (no broker there) and the producer queue holds 1 KiB.
    settings = make_settings(partitions=1).model_copy(
        update={
            "bootstrap_servers": "127.0.0.1:1",
            "kafka": {"queue.buffering.max.kbytes": 1, "message.timeout.ms": 60000},
        }
    )
    metrics = Metrics()
    trainer = Trainer(settings, metrics)
    try:
        for i in range(1000):
            value = {"transaction_id": f"x{i}", "is_fraud": True, "source": "unknown-app"}
            msg = Message(
                topic=settings.topics.labels, partition=0, offset=i, value=orjson.dumps(value)
            )
            trainer._handle(msg, 0.0)
        refused = metrics.labels_refused.labels("unknown-app", "untrusted_source")._value.get()
        assert refused == 1000
        queued = metrics.dlq.labels(settings.topics.labels, "untrusted_source")._value.get()
        assert trainer.dead_letters.dropped > 900
        assert trainer.dead_letters.dropped + queued == 1000
        assert len(trainer.state.joiner.labels) == 0 and trainer.labels_learned == 0
    finally:
        trainer.consumer.close()
