"""`fraudstream bench`, small: every part runs on the real broker and reports sane figures.

No speed is asserted (shared, noisy machines); what is checked is that each part measured
what it claims: records delivered, ratios from the same run, delays that are not negative.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kafka_helpers import run_bench

pytestmark = pytest.mark.integration


def test_bench_parts_report_consistent_figures(bootstrap: str, tmp_path: Path) -> None:
    stdout, results = run_bench(
        bootstrap,
        tmp_path,
        "--records", "3000", "--rounds", "1", "--partitions", "2", "--cards", "20000",
        "--trainer-labels", "2000", "--latency-seconds", "2",
        "--only", "throughput", "latency", "memory", "trainer", "freshness",
    )  # fmt: skip
    assert "scorer / ceiling" in stdout

    t = results["throughput"]
    assert t["passthrough_median"] > 0 and t["scorer_median"] > 0
    assert t["ratio"] == t["scorer_median"] / t["passthrough_median"]

    rows = {(r["target"], r["load"]): r for r in results["latency"]}
    assert set(rows) == {(t, load) for t in ("passthrough", "scorer") for load in (0.2, 0.8)}
    for row in rows.values():
        assert 0 < row["received"] <= row["sent"]
        assert 0 <= row["p50_ms"] <= row["p99_ms"] <= row["max_ms"]

    m = results["memory"]
    assert m["cards"] == 20000 and m["bytes_per_card"] > 0

    assert results["trainer"]["labels_per_s"] > 0

    f = results["freshness"]
    # A label cannot be served before it was sent (a pre-trained model once made it look so).
    assert f["snapshots_seen"] > 0 and 0 <= f["p50_ms"] <= f["p99_ms"] <= f["max_ms"]
