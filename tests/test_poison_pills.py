"""Poison pills: envelope limits, dead letters that always fit a message, and produce errors
classified (permanent: dropped, counted, settled; retriable: retried after a back-off)."""

from __future__ import annotations

import time

import numpy as np
import pytest
from confluent_kafka import KafkaError, KafkaException, Message, Producer

from core.codec_msgspec import MAX_MODEL_FEATURES, features_error
from infra.broker import free_port
from infra.delivery import Delivery, is_permanent
from infra.dlq import MAX_DLQ_MESSAGE, dead_letter, dead_letter_size
from infra.envelope import MAX_HEADERS, MAX_KEY_BYTES, envelope_error, envelope_errors
from infra.metrics import Metrics
from scorer.offsets import OffsetTracker
from scorer.run import ScoredRun, Scorer
from tests.conftest import SettingsFactory


def _sample(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return value or 0.0


@pytest.mark.parametrize(
    ("key", "value"),
    [
        (b"k" * 512 * 1024, b"v" * 490 * 1024),  # the reported crash: key and value both large
        (b"k" * 2_000_000, b"v" * 2_000_000),
        (b"k", b"v" * 5_000_000),
        (None, None),
    ],
)
def test_a_dead_letter_fits_a_message_whatever_the_key_and_value(
    key: bytes | None, value: bytes | None
) -> None:
    msg = Message(topic="t", partition=0, offset=7, key=key, value=value)
    k, v, headers = dead_letter(msg, "too_large", "d" * 100_000)
    assert dead_letter_size(k, v, headers) <= MAX_DLQ_MESSAGE
    got = dict(headers)
    if key and len(key) > len(k or b""):
        assert int(got["original.key.size"]) == len(key) and key.startswith(k or b"")
    if value and len(value) > len(v or b""):
        assert int(got["original.size"]) == len(value) and value.startswith(v or b"")


def test_keys_and_headers_over_their_limits_are_refused_before_the_value_is_read() -> None:
    ok = Message(topic="t", key=b"card-1", value=b"{}")
    long_key = Message(topic="t", key=b"k" * (MAX_KEY_BYTES + 1), value=b"{}")
    many = Message(topic="t", key=b"c", value=b"{}", headers=[("h", b"")] * (MAX_HEADERS + 1))
    big = Message(topic="t", key=b"c", value=b"{}", headers=[("h", b"x" * 100_000)])
    keyless = Message(topic="t", key=None, value=b"{}")  # keyed by its card id later: fine
    msgs = [ok, long_key, many, big, ok, keyless]
    bad = envelope_errors(msgs, [m.key() for m in msgs])
    assert {i: e.reason for i, e in bad.items()} == {
        1: "key_too_large",
        2: "headers_too_large",
        3: "headers_too_large",
    }
    assert envelope_error(ok) is None
    assert [envelope_error(m).reason for m in (long_key, many, big)] == [  # type: ignore[union-attr]
        "key_too_large",
        "headers_too_large",
        "headers_too_large",
    ]
    assert envelope_errors([ok, ok], [b"a", b"b"]) == {}


@pytest.mark.parametrize(
    ("features", "reason"),
    [
        ({"amount": 1.0}, None),
        ({"amount": True}, None),
        ({f"f{i}": 1.0 for i in range(10_000)}, "too_many_features"),
        ({"x" * 1000: 1.0}, "feature_name_too_long"),
        ({"amount": float("nan")}, "feature_not_finite"),
        ({"amount": float("inf")}, "feature_not_finite"),
        ({"amount": 1e300}, "feature_too_large"),
        ({"amount": 10**400}, "feature_not_a_number"),
        ({"amount": "12"}, "feature_not_a_number"),
        ({"amount": None}, "feature_not_a_number"),
        ({"amount": {"deep": [1]}}, "feature_not_a_number"),
        ({}, "no_features"),
    ],
)
def test_score_features_outside_the_scorers_bounds_are_refused(
    features: dict[str, object], reason: str | None
) -> None:
    assert features_error(features, set()) == reason


def test_the_model_learns_a_bounded_number_of_feature_names() -> None:
    known: set[str] = set()
    for i in range(MAX_MODEL_FEATURES // 4):
        assert (
            features_error({f"a{i}": 1.0, f"b{i}": 1.0, f"c{i}": 1.0, f"d{i}": 1.0}, known) is None
        )
    assert len(known) == MAX_MODEL_FEATURES
    assert features_error({"new": 1.0}, known) == "too_many_features"
    assert features_error({"a0": 2.0}, known) is None  # names already learned go on


def test_errors_are_classified() -> None:
    assert is_permanent(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    assert is_permanent(KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED))
    assert not is_permanent(KafkaError(KafkaError._MSG_TIMED_OUT))
    assert not is_permanent(KafkaError(KafkaError._TRANSPORT))
    assert not is_permanent(KafkaError(KafkaError.NOT_ENOUGH_REPLICAS))


def test_a_record_too_large_is_dropped_counted_and_settled_not_raised(
    make_settings: SettingsFactory,
) -> None:
    settings = make_settings(partitions=1)
    producer = Producer({"bootstrap.servers": settings.bootstrap, "message.max.bytes": 10_000})
    metrics = Metrics()
    tracker = OffsetTracker()
    batch = tracker.open({("tx", 0): 3}, 2)
    delivery = Delivery(producer, metrics, settle=OffsetTracker.delivered)
    topic = settings.topics.transactions_dlq
    assert not delivery.produce(topic, b"v" * 50_000, b"k", None, batch)  # raised at once
    assert delivery.produce(topic, b"small", b"k", None, batch)
    producer.flush(30)
    assert batch.pending == 0 and tracker.ready() == {("tx", 0): 3}  # commits go on
    assert (
        _sample(
            metrics,
            "fraudstream_produce_errors_total",
            topic=topic,
            error="MSG_SIZE_TOO_LARGE",
            action="dropped",
        )
        == 1.0
    )


def test_a_retriable_failure_is_retried_with_a_growing_back_off_never_dropped(
    make_settings: SettingsFactory,
) -> None:
    # A producer pointed at a port nothing listens on: every delivery times out (retriable).
    dead = Producer(
        {"bootstrap.servers": f"127.0.0.1:{free_port()}", "message.timeout.ms": 300, "log_level": 0}
    )
    metrics = Metrics()
    delivered: list[bytes] = []
    delivery = Delivery(dead, metrics, base_backoff_s=0.05, max_backoff_s=0.4)

    def on_delivery(err: KafkaError | None, msg: Message) -> None:
        if err is None:
            delivered.append(msg.value())
        else:
            delivery.failed(err, msg, on_delivery)

    delivery.produce("t", b"x", b"k", None, on_delivery)
    backoffs = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(backoffs) < 4:
        dead.poll(0.05)
        waiting = delivery.waiting
        delivery.retry_due()
        if waiting and not delivery.waiting:  # a round: the record produced again
            backoffs.append(delivery.backoff_s)
    assert backoffs == [0.1, 0.2, 0.4, 0.4]  # doubled per round, capped
    assert _sample(
        metrics, "fraudstream_produce_errors_total", topic="t", error="_MSG_TIMED_OUT",
        action="retried",
    ) >= 4  # fmt: skip
    assert delivery.dropped == 0 and not delivered


class _RefusingProducer:
    """Raises KafkaException(MSG_SIZE_TOO_LARGE) for the values in `refuse`."""

    def __init__(self, refuse: set[bytes]) -> None:
        self.refuse = refuse
        self.sent: list[bytes] = []

    def produce(self, topic: str, value: bytes, key: bytes, partition: int, cb: object) -> None:
        if value in self.refuse:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        self.sent.append(value)

    def poll(self, _timeout: float) -> int:
        return 0


def test_a_score_refused_by_produce_is_dropped_and_the_rest_of_the_run_goes() -> None:
    from types import SimpleNamespace

    n = 10
    values = [f"v{i}".encode() for i in range(n)]
    run = ScoredRun([b"k"] * n, values, flagged=0, scored_at=1.0, event_ts=np.zeros(n))
    producer = _RefusingProducer({b"v3", b"v9"})
    metrics = Metrics()
    scorer = SimpleNamespace(
        topics=SimpleNamespace(scores="scores"),
        producer=producer,
        scored=0,
        metrics=metrics,
        delivery=Delivery(producer, metrics, settle=OffsetTracker.delivered),  # type: ignore[arg-type]
    )
    batch = OffsetTracker().open({("tx", 0): n}, n)
    Scorer._produce(scorer, run, batch)  # type: ignore[arg-type]
    assert producer.sent == [v for v in values if v not in (b"v3", b"v9")]
    assert batch.pending == n - 2  # the two dropped are settled; the others await delivery
