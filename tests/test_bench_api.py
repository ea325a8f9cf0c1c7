"""`fraudstream bench --only api`, small: the API load test runs against a real scorer and
API process and reports consistent figures (no speed is asserted: shared, noisy machines)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fraudstream.benchmark.api import CONCURRENCIES, LIGHT_LOAD
from tests.kafka_helpers import run_bench

pytestmark = pytest.mark.integration


def test_api_bench_reports_rates_and_latencies_beside_kafka_only(
    bootstrap: str, tmp_path: Path
) -> None:
    stdout, results = run_bench(
        bootstrap,
        tmp_path,
        "--records", "100", "--partitions", "2", "--latency-seconds", "1", "--only", "api",
    )  # fmt: skip
    assert "HTTP API, request -> Score" in stdout
    api = results["api"]

    levels = api["levels"]
    assert [level["concurrency"] for level in levels] == list(CONCURRENCIES)
    for level in levels:
        assert level["errors"] == 0
        assert level["scored"] > 0
        assert level["requests"] == level["scored"] + level["deadline_202"]
        assert 0 < level["p50_ms"] <= level["p99_ms"]
    assert api["capacity_per_s"] == max(level["per_s"] for level in levels)

    light = api["light"]
    assert light["offered_per_s"] == pytest.approx(max(api["capacity_per_s"] * LIGHT_LOAD, 1.0))
    assert light["errors"] == 0 and 0 < light["p50_ms"] <= light["p99_ms"]
    kafka = api["kafka_only"]
    assert kafka["offered_per_s"] == light["offered_per_s"]
    assert 0 < kafka["received"] == kafka["sent"]
    assert 0 < kafka["p50_ms"] <= kafka["p99_ms"]
