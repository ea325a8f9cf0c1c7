"""Scale out: scorers in one group share the partitions; one joins and another leaves
mid-stream, and every transaction is still scored."""

from __future__ import annotations

import re
import threading

import orjson
import pytest

from infra.broker import free_port
from infra.metrics import Metrics
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, log_match, metric_total, read_topic, wait_for

pytestmark = pytest.mark.integration


def test_member_joins_and_leaves_mid_stream_without_losing_a_transaction(
    make_settings: SettingsFactory, tmp_path
) -> None:
    settings = make_settings(partitions=4)
    env = settings_env(settings)
    stop = threading.Event()
    report = {}

    def produce() -> None:
        report["r"] = run_producer(
            settings,
            ProduceOptions(rate=2000, duration_s=20, seed=3, label_coverage=0.0),
            Metrics(),
            stop,
        )

    a_log, b_log = tmp_path / "a.log", tmp_path / "b.log"
    a_port, b_port = free_port(), free_port()
    scored = "fraudstream_transactions_scored_total"
    with fraudstream_process(["score", "--metrics-port", str(a_port)], env, a_log) as a:
        wait_for(
            "a to take partition 3", lambda: log_match(a_log, r"assigned .*\[3\]"), 30, {a_log: a}
        )
        producer = threading.Thread(target=produce)
        producer.start()
        # b joins once a is scoring, and leaves once it has scored too.
        wait_for("a to score 2000", lambda: metric_total(a_port, scored) >= 2000, 60)
        with fraudstream_process(["score", "--metrics-port", str(b_port)], env, b_log) as b:
            wait_for(
                "b to take partitions",
                lambda: log_match(b_log, "assigned transactions"),
                30,
                {b_log: b},
            )
            wait_for("b to score 500", lambda: metric_total(b_port, scored) >= 500, 60)
        assert b.returncode == 0, b_log.read_text()[-2000:]
        producer.join(60)
        produced = report["r"].transactions
        scores = read_topic(
            settings,
            settings.topics.scores,
            lambda m: len({orjson.loads(x.value())["transaction_id"] for x in m}) >= produced,
            90,
        )
        assert a.poll() is None

    txs = read_topic(settings, settings.topics.transactions, lambda m: len(m) >= produced)
    expected = {orjson.loads(m.value())["transaction_id"] for m in txs}
    got = [orjson.loads(m.value())["transaction_id"] for m in scores]
    assert len(expected) == produced
    assert expected - set(got) == set(), "transactions lost across the rebalance"
    # Each partition is owned by one member at a time: b's partitions were revoked from a.
    assert re.search(r"revoked .*transactions", a_log.read_text())
    assert re.search(r"revoked .*transactions", b_log.read_text())
    duplicates = len(got) - len(set(got))
    print(f"produced={produced} scores={len(got)} duplicates={duplicates}")
