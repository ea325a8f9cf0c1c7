"""Runs every benchmark in one go and reports a table (and JSON): medians over rounds,
ratios against the passthrough ceiling measured in the same run."""

from __future__ import annotations

import logging
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fraudstream.benchmark import freshness, latency, memory, scaleout, throughput, trainer
from fraudstream.benchmark.common import create_topics, preload, uid
from infra.config import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchOptions:
    records: int = 200_000
    rounds: int = 3
    partitions: int = 4
    latency_s: float = 8.0
    cards: int = 1_000_000
    trainer_labels: int = 100_000
    freshness_rate: float = 2000.0
    parts: tuple[str, ...] = (
        "throughput", "latency", "scaleout", "memory", "trainer", "freshness",
    )  # fmt: skip


@dataclass
class BenchReport:
    options: BenchOptions
    results: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> bytes:
        return orjson.dumps(
            {"options": self.options.__dict__, "results": self.results},
            option=orjson.OPT_INDENT_2 | orjson.OPT_SERIALIZE_NUMPY,
        )

    def render(self) -> str:
        r = self.results
        o = self.options
        lines = [f"fraudstream bench ({o.records:,} records, {o.partitions} partitions)"]
        if "throughput" in r:
            t = r["throughput"]
            lines += [
                f"  passthrough ceiling   {t['passthrough_median']:>10,.0f} rec/s   "
                f"rounds {_list(t['passthrough'])}",
                f"  scorer                {t['scorer_median']:>10,.0f} rec/s   "
                f"rounds {_list(t['scorer'])}",
                f"  scorer / ceiling      {t['ratio']:>10.0%}",
            ]
        if "latency" in r:
            lines.append("  latency, event time -> output (ms)     p50      p99      max")
            for row in r["latency"]:
                load = f"at {row['load']:>4.0%} ({row['offered_per_s']:>7,.0f}/s)"
                lines.append(
                    f"    {row['target']:<11} {load}"
                    f" {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}"
                )
        if "scaleout" in r:
            s = r["scaleout"]
            lines.append(
                f"  scale-out             1 process {s['one']:,.0f} rec/s, 2 processes "
                f"{s['two']:,.0f} rec/s  (x{s['speedup']:.2f})"
            )
        if "memory" in r:
            m = r["memory"]
            lines.append(
                f"  memory                {m['cards']:,.0f} cards: {m['bytes_per_card']:.0f} "
                f"bytes/card, peak RSS {m['peak_rss_mib']:.0f} MiB"
            )
        if "trainer" in r:
            t = r["trainer"]
            lines.append(
                f"  trainer               {t['labels_per_s']:>10,.0f} labels/s  "
                f"rounds {_list(t.get('rounds', [t['labels_per_s']]))}"
            )
        if "freshness" in r:
            f = r["freshness"]
            lines.append(
                f"  label -> serving      p50 {f['p50_ms']:,.0f} ms, p99 {f['p99_ms']:,.0f} ms, "
                f"max {f['max_ms']:,.0f} ms  ({f['offered_labels_per_s']:,.0f} labels/s, "
                f"{f['snapshots_seen']:.0f} snapshots)"
            )
        return "\n".join(lines)


def _list(values: list[float]) -> str:
    return "[" + ", ".join(f"{v:,.0f}" for v in values) + "]"


def run_bench(settings: Settings, options: BenchOptions, json_path: Path | None) -> BenchReport:
    report = BenchReport(options)
    work_dir = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    source = f"bench-transactions-{uid()}"
    create_topics(settings, [source], options.partitions)
    log.info("pre-loading %d transactions into %s", options.records, source)
    preload(settings, source, options.records)
    n, p = options.records, options.partitions
    scorer_median = None
    if "throughput" in options.parts:
        passes, scores = [], []
        for i in range(options.rounds):
            passes.append(throughput.passthrough_rate(settings, source, n, p))
            scores.append(throughput.scorer_rate(settings, source, n, p))
            log.info("round %d: passthrough %.0f/s, scorer %.0f/s", i + 1, passes[-1], scores[-1])
        scorer_median = statistics.median(scores)
        report.results["throughput"] = {
            "passthrough": passes,
            "scorer": scores,
            "passthrough_median": statistics.median(passes),
            "scorer_median": scorer_median,
            "ratio": scorer_median / statistics.median(passes),
        }
    if "latency" in options.parts:
        base = scorer_median or throughput.scorer_rate(settings, source, n, p)
        rows = []
        for load in (0.2, 0.8):
            for target in ("passthrough", "scorer"):
                row = latency.measure(settings, target, base * load, options.latency_s, p, work_dir)
                rows.append({"target": target, "load": load, **row})
                log.info("latency %s at %.0f%%: %s", target, load * 100, row)
        report.results["latency"] = rows
    if "scaleout" in options.parts:
        one = scaleout.rate(settings, source, n, 1, p, work_dir)
        two = scaleout.rate(settings, source, n, 2, p, work_dir)
        report.results["scaleout"] = {"one": one, "two": two, "speedup": two / one}
    if "memory" in options.parts:
        report.results["memory"] = memory.measure(options.cards)
    if "trainer" in options.parts:
        rates = [
            trainer.labels_per_s(settings, options.trainer_labels, p) for _ in range(options.rounds)
        ]
        report.results["trainer"] = {"rounds": rates, "labels_per_s": statistics.median(rates)}
    if "freshness" in options.parts:
        report.results["freshness"] = freshness.measure(
            settings, options.freshness_rate, max(options.latency_s, 5.0), p, work_dir
        )
    if json_path is not None:
        json_path.write_bytes(report.as_json())
    log.info("bench logs in %s", work_dir)
    return report
