"""Runs every benchmark in one go and reports a table (and JSON): medians over rounds,
ratios against the passthrough ceiling measured in the same run."""

from __future__ import annotations

import logging
import statistics
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from fraudstream.benchmark import api, freshness, latency, memory, scaleout, throughput, trainer
from fraudstream.benchmark.common import create_topics, preload, uid
from fraudstream.benchmark.steal import StealMeter
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
    # A paired round (ceiling and scorer, or one and two processes) is repeated when the
    # hypervisor stole more than this share of the CPU during it; 1.0 keeps every round.
    max_steal: float = 0.05
    parts: tuple[str, ...] = (
        "throughput", "latency", "scaleout", "memory", "trainer", "freshness", "api",
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
                f"rounds {_list(t['passthrough'], t['kept'])}",
                f"  scorer                {t['scorer_median']:>10,.0f} rec/s   "
                f"rounds {_list(t['scorer'], t['kept'])}",
                f"  scorer / ceiling      {t['ratio']:>10.0%}   {_kept(t)}; all rounds "
                f"{t['ratio_all_rounds']:.0%}",
                f"  steal per round       {_steals(t['steal'])}",
            ]
        if "latency" in r:
            lines.append("  latency, event time -> output (ms)     p50      p99      max")
            for row in r["latency"]:
                load = f"at {row['load']:>4.0%} ({row['offered_per_s']:>7,.0f}/s)"
                lines.append(
                    f"    {row['target']:<11} {load}"
                    f" {row['p50_ms']:>8.1f} {row['p99_ms']:>8.1f} {row['max_ms']:>8.1f}"
                    f"   steal {_steals([row['steal']])}"
                )
        if "scaleout" in r:
            s = r["scaleout"]
            lines.append(
                f"  scale-out             1 process {s['one']:,.0f} rec/s, 2 processes "
                f"{s['two']:,.0f} rec/s  (x{s['speedup']:.2f})   {_kept(s)}, "
                f"steal {_steals(s['steal'])}"
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
        if "api" in r:
            lines += _render_api(r["api"])
        return "\n".join(lines)


def _render_api(a: dict[str, Any]) -> list[str]:
    lines = ["  HTTP API, request -> Score (ms)     req/s      p50      p99   202s  errors"]
    for level in a["levels"]:
        lines.append(
            f"    concurrency {level['concurrency']:>3}       {level['per_s']:>9,.0f} "
            f"{level['p50_ms']:>8.1f} {level['p99_ms']:>8.1f} {level['deadline_202']:>6.0f} "
            f"{level['errors']:>7.0f}"
        )
    light, kafka = a["light"], a["kafka_only"]
    lines += [
        f"    at {light['load']:.0%} ({light['offered_per_s']:>6,.0f}/s)  API  "
        f"{light['per_s']:>9,.0f} {light['p50_ms']:>8.1f} {light['p99_ms']:>8.1f}",
        f"    same rate, Kafka only      {kafka['offered_per_s']:>9,.0f} "
        f"{kafka['p50_ms']:>8.1f} {kafka['p99_ms']:>8.1f}   (produce -> Score read, same scorer)",
        f"    highest rate               {a['capacity_per_s']:>9,.0f} req/s scored",
    ]
    return lines


def _list(values: list[float], kept: list[bool] | None = None) -> str:
    """Rounds left out of the medians (too much steal) are shown in parentheses."""
    marks = kept or [True] * len(values)
    return (
        "["
        + ", ".join(f"{v:,.0f}" if k else f"({v:,.0f})" for v, k in zip(values, marks, strict=True))
        + "]"
    )


def _steals(values: list[float | None]) -> str:
    return "[" + ", ".join("n/a" if v is None else f"{v:.0%}" for v in values) + "]"


def _kept(r: dict[str, Any]) -> str:
    kept = sum(r["kept"])
    if kept == 0:
        return f"(every round had steal > {r['max_steal']:.0%}: medians of all rounds)"
    return f"({kept} of {len(r['kept'])} rounds kept, steal <= {r['max_steal']:.0%})"


@dataclass
class PairedRounds:
    """Rounds of two measurements taken back to back, each with its steal; the medians are
    over the rounds kept (steal at most `max_steal`), or over all if none was."""

    max_steal: float
    first: list[float] = field(default_factory=list)
    second: list[float] = field(default_factory=list)
    steal: list[float | None] = field(default_factory=list)
    kept: list[bool] = field(default_factory=list)

    def run(
        self,
        measure: Callable[[], tuple[float, float]],
        rounds: int,
        tries: int,
        meter_factory: Callable[[], StealMeter] = StealMeter,
    ) -> None:
        """Until `rounds` rounds are kept or `tries` were made."""
        while sum(self.kept) < rounds and len(self.kept) < tries:
            with meter_factory() as meter:
                a, b = measure()
            self.first.append(a)
            self.second.append(b)
            self.steal.append(meter.fraction)
            self.kept.append(meter.fraction is None or meter.fraction <= self.max_steal)
            log.info("round %d: %.0f, %.0f, steal %s", len(self.kept), a, b, meter.fraction)

    def medians(self) -> tuple[float, float]:
        keep = self.kept if any(self.kept) else [True] * len(self.kept)
        first = [v for v, k in zip(self.first, keep, strict=True) if k]
        second = [v for v, k in zip(self.second, keep, strict=True) if k]
        return statistics.median(first), statistics.median(second)


def run_bench(settings: Settings, options: BenchOptions, json_path: Path | None) -> BenchReport:
    report = BenchReport(options)
    work_dir = Path(tempfile.mkdtemp(prefix="fraudstream-bench-"))
    source = f"bench-transactions-{uid()}"
    create_topics(settings, [source], options.partitions)
    log.info("pre-loading %d transactions into %s", options.records, source)
    preload(settings, source, options.records)
    n, p = options.records, options.partitions
    scorer_median = None
    tries = 3 * options.rounds
    if "throughput" in options.parts:
        pairs = PairedRounds(options.max_steal)
        pairs.run(
            lambda: (
                throughput.passthrough_rate(settings, source, n, p),
                throughput.scorer_rate(settings, source, n, p),
            ),
            options.rounds,
            tries,
        )
        passthrough_median, scorer_median = pairs.medians()
        report.results["throughput"] = {
            "passthrough": pairs.first,
            "scorer": pairs.second,
            "steal": pairs.steal,
            "kept": pairs.kept,
            "max_steal": options.max_steal,
            "passthrough_median": passthrough_median,
            "scorer_median": scorer_median,
            "ratio": scorer_median / passthrough_median,
            "ratio_all_rounds": statistics.median(pairs.second) / statistics.median(pairs.first),
        }
    if "latency" in options.parts:
        base = scorer_median or throughput.scorer_rate(settings, source, n, p)
        rows = []
        for load in (0.2, 0.8):
            for target in ("passthrough", "scorer"):
                with StealMeter() as meter:
                    row = latency.measure(
                        settings, target, base * load, options.latency_s, p, work_dir
                    )
                rows.append({"target": target, "load": load, **row, "steal": meter.fraction})
                log.info("latency %s at %.0f%%: %s", target, load * 100, row)
        report.results["latency"] = rows
    if "scaleout" in options.parts:
        pairs = PairedRounds(options.max_steal)
        pairs.run(
            lambda: (
                scaleout.rate(settings, source, n, 1, p, work_dir),
                scaleout.rate(settings, source, n, 2, p, work_dir),
            ),
            1,
            3,
        )
        one, two = pairs.medians()
        report.results["scaleout"] = {
            "one": one, "two": two, "speedup": two / one, "rounds_one": pairs.first,
            "rounds_two": pairs.second, "steal": pairs.steal, "kept": pairs.kept,
            "max_steal": options.max_steal,
        }  # fmt: skip
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
    if "api" in options.parts:
        report.results["api"] = api.measure(settings, p, options.latency_s, work_dir)
    if json_path is not None:
        json_path.write_bytes(report.as_json())
    log.info("bench logs in %s", work_dir)
    return report
