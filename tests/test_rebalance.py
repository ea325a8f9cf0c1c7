"""Scale out: scorers in one group share the partitions; one joins and another leaves
mid-stream, and every transaction is still scored."""

from __future__ import annotations

import re
import threading
import time

import orjson
import pytest

from infra.broker import free_port
from infra.metrics import Metrics
from producer.run import ProduceOptions, run_producer
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, metric_total, read_topic, wait_until

pytestmark = pytest.mark.integration


def _wait_for(log_path, pattern: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if log_path.exists() and re.search(pattern, log_path.read_text()):
            return
        time.sleep(0.2)
    raise AssertionError(f"{pattern!r} not in {log_path}:\n{log_path.read_text()[-2000:]}")


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
        _wait_for(a_log, r"assigned .*\[3\]")
        producer = threading.Thread(target=produce)
        producer.start()
        # b joins once a is scoring, and leaves once it has scored too.
        wait_until(lambda: metric_total(a_port, scored) >= 2000, 60, "a to score 2000")
        with fraudstream_process(["score", "--metrics-port", str(b_port)], env, b_log) as b:
            _wait_for(b_log, r"assigned transactions")  # b took some partitions over
            wait_until(lambda: metric_total(b_port, scored) >= 500, 60, "b to score 500")
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
