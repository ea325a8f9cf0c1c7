"""Per-card state and the trainer's join buffer stay within their bounds however many
distinct cards and unjoined labels arrive; what is dropped is counted."""

from __future__ import annotations

import urllib.request

import orjson
import pytest
from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from infra.broker import free_port
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, wait_for

pytestmark = pytest.mark.integration


def _samples(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = s.name + "".join(f"|{k}={v}" for k, v in sorted(s.labels.items()))
            out[key] = s.value
    return out


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def _wait(port: int, key: str, target: float, timeout_s: float = 60) -> dict[str, float]:
    """The process's metrics once `key` has reached `target`."""

    def reached() -> dict[str, float] | None:
        try:
            samples = _samples(port)
        except OSError:  # not serving yet
            return None
        return samples if samples.get(key, 0) >= target else None

    return wait_for(f"{key} to reach {target}", reached, timeout_s, interval_s=0.5)


def _tx(i: int) -> bytes:
    return orjson.dumps(
        {
            "transaction_id": f"t{i}",
            "card_id": f"card-{i}",  # every record a new card
            "amount": 10.0 + i % 50,
            "merchant_category": "grocery",
            "timestamp": "2026-11-22T12:00:00Z",
        }
    )


def _publish_cards(producer: Producer, topic: str, cards: range) -> None:
    """One transaction for each of `cards`, each card its own."""
    for i in cards:
        producer.produce(topic, _tx(i), f"card-{i}".encode())
        if i % 5000 == 0:
            producer.poll(0)
    producer.flush(30)


def test_card_state_stays_bounded(make_settings: SettingsFactory, tmp_path) -> None:
    settings = make_settings(partitions=2)
    env = {**settings_env(settings), "FRAUDSTREAM_SCORER__MAX_CARDS": "1000"}
    port = free_port()
    outside = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 20})
    n = 30_000
    with fraudstream_process(["score", "--metrics-port", str(port)], env, tmp_path / "s.log") as p:
        _publish_cards(outside, settings.topics.transactions, range(n))
        first = _wait(port, "fraudstream_transactions_scored_total", n)
        rss_first = _rss_kib(p.pid)
        _publish_cards(outside, settings.topics.transactions, range(n, 2 * n))
        second = _wait(port, "fraudstream_transactions_scored_total", 2 * n)
        rss_second = _rss_kib(p.pid)

    # Two partitions owned, 1000 cards each at most.
    assert first["fraudstream_cards_tracked"] <= 2000
    assert second["fraudstream_cards_tracked"] <= 2000
    assert second["fraudstream_cards_evicted_total"] >= 2 * n - 2000
    # Another 30,000 distinct cards cost no more than noise (bounded, not 30k states).
    print(f"rss after {n} cards: {rss_first} KiB, after {2 * n}: {rss_second} KiB")
    assert rss_second - rss_first < 16 * 1024


def test_join_buffer_stays_bounded(make_settings: SettingsFactory, tmp_path) -> None:
    settings = make_settings(partitions=1)
    env = {**settings_env(settings), "FRAUDSTREAM_TRAINER__JOIN_BUFFER_SIZE": "500"}
    port = free_port()
    outside = Producer({"bootstrap.servers": settings.bootstrap, "linger.ms": 20})
    n = 5000
    with fraudstream_process(
        ["train", "--no-mlflow", "--metrics-port", str(port)], env, tmp_path / "t.log"
    ):
        for i in range(n):
            label = orjson.dumps(
                {
                    "transaction_id": f"never-scored-{i}",
                    "is_fraud": False,
                    "source": "investigation",
                }
            )
            outside.produce(settings.topics.labels, label, f"never-scored-{i}".encode())
        outside.flush(30)
        samples = _wait(port, "fraudstream_join_evicted_total|cause=full|side=label", n - 500)
    assert samples["fraudstream_join_pending|side=label"] == 500
    assert samples["fraudstream_labels_total|is_fraud=false"] == n
    assert samples.get("fraudstream_labels_learned_total", 0) == 0
