"""Junk from an outside client never stops the stream and never reaches the model: each bad
record lands in the DLQ with a machine-readable reason and its source coordinates."""

from __future__ import annotations

import time
import urllib.request

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from infra.broker import free_port
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic

pytestmark = pytest.mark.integration

GOOD = {
    "transaction_id": "good-1",
    "card_id": "card-1",
    "amount": 12.5,
    "merchant_category": "grocery",
    "timestamp": "2026-11-22T12:00:00Z",
}

# (bytes, expected DLQ reason)
JUNK: list[tuple[bytes, str]] = [
    (b"\x00\x01\x02 not json", "not_json"),
    (b"[1, 2, 3]", "not_object"),
    (b"42", "not_object"),
    (orjson.dumps({k: v for k, v in GOOD.items() if k != "amount"}), "invalid"),
    (orjson.dumps({**GOOD, "amount": "12.5"}), "invalid"),
    (orjson.dumps({**GOOD, "card_id": 123}), "invalid"),
    (orjson.dumps(GOOD).replace(b"12.5", b"NaN"), "invalid"),
    (orjson.dumps(GOOD).replace(b"12.5", b"Infinity"), "invalid"),
    (orjson.dumps({**GOOD, "amount": -3.0}), "invalid"),
    (orjson.dumps({**GOOD, "amount": 1.8e17}), "invalid"),
    (orjson.dumps({**GOOD, "timestamp": "yesterday"}), "invalid"),
    (orjson.dumps({**GOOD, "merchant_category": "x" * 2_000_000}), "too_large"),
    (b"", "empty"),
]


def _metric(port: int, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                out[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def test_junk_transactions_go_to_the_dlq_and_the_stream_goes_on(
    make_settings: SettingsFactory, tmp_path
) -> None:
    settings = make_settings(partitions=2)
    env = settings_env(settings)
    port = free_port()
    outside = Producer({"bootstrap.servers": settings.bootstrap, "message.max.bytes": 10_000_000})
    topic = settings.topics.transactions
    with fraudstream_process(
        ["score", "--metrics-port", str(port)], env, tmp_path / "score.log"
    ) as score:
        for i, (raw, _) in enumerate(JUNK):
            outside.produce(topic, raw, f"junk-{i}".encode())
        # Extra unknown fields are fine; a duplicated transaction_id is scored each time.
        good = orjson.dumps({**GOOD, "surprise": {"nested": [1, 2]}})
        outside.produce(topic, good, b"card-1")
        outside.produce(topic, good, b"card-1")
        outside.flush(30)

        dlq = read_topic(settings, settings.topics.transactions_dlq, lambda m: len(m) >= len(JUNK))
        scores = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 2)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            counts = _metric(port, "fraudstream_dlq_total")
            if sum(counts.values()) >= len(JUNK):
                break
            time.sleep(0.5)
        assert score.poll() is None, "the scorer died on junk"

    assert len(scores) == 2
    assert {orjson.loads(m.value())["transaction_id"] for m in scores} == {"good-1"}

    assert len(dlq) == len(JUNK)
    by_key = {m.key(): m for m in dlq}
    for i, (raw, reason) in enumerate(JUNK):
        msg = by_key[f"junk-{i}".encode()]
        headers = dict(msg.headers())
        assert headers["error"] == reason.encode(), (i, headers)
        assert headers["source.topic"] == topic.encode()
        assert int(headers["source.offset"]) >= 0
        assert int(headers["source.partition"]) in (0, 1)
        assert headers["error.detail"]
        if reason == "too_large":
            assert int(headers["original.size"]) == len(raw)
            assert raw.startswith(msg.value()), "a cut prefix of the original bytes"
        else:
            assert (msg.value() or b"") == raw, "the original bytes are kept"

    expected: dict[str, int] = {}
    for _, reason in JUNK:
        expected[reason] = expected.get(reason, 0) + 1
    served = {dict(k)["reason"]: v for k, v in counts.items() if dict(k)["topic"] == topic}
    assert served == expected


def test_junk_labels_go_to_the_dlq_and_never_reach_the_model(
    make_settings: SettingsFactory, tmp_path
) -> None:
    settings = make_settings(partitions=1)
    env = settings_env(settings)
    port = free_port()
    outside = Producer({"bootstrap.servers": settings.bootstrap})
    junk = [
        (b"not json", "not_json"),
        (b'{"transaction_id": "t1"}', "invalid"),
        (b'{"transaction_id": "t1", "is_fraud": "yes"}', "invalid"),
        (b'{"transaction_id": 5, "is_fraud": true}', "invalid"),
        (b"[true]", "not_object"),
    ]
    with fraudstream_process(
        ["train", "--no-mlflow", "--metrics-port", str(port)], env, tmp_path / "train.log"
    ) as train:
        for raw, _ in junk:
            outside.produce(settings.topics.labels, raw, b"k")
        # A label for a transaction nobody scored: buffered, never learned.
        outside.produce(
            settings.topics.labels,
            b'{"transaction_id": "unknown", "is_fraud": true, "source": "investigation"}',
            b"unknown",
        )
        outside.flush(30)
        dlq = read_topic(settings, settings.topics.labels_dlq, lambda m: len(m) >= len(junk))
        deadline = time.monotonic() + 15
        pending = {}
        while time.monotonic() < deadline:
            pending = _metric(port, "fraudstream_join_pending")
            if pending.get((("side", "label"),)) == 1.0:
                break
            time.sleep(0.5)
        learned = _metric(port, "fraudstream_labels_learned_total")
        assert train.poll() is None

    assert [dict(m.headers())["error"].decode() for m in dlq] == [r for _, r in junk]
    assert pending.get((("side", "label"),)) == 1.0
    assert sum(learned.values()) == 0
