"""`fraudstream bench` (the benchmarks) and `fraudstream warm-up` (compile the kernels)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.commands.args import (
    UsageError,
    add_common,
    fraction,
    positive,
    positive_duration,
    settings_for,
)

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers


def add_parsers(sub: Subparsers) -> None:
    bench = sub.add_parser("bench", help="scorer throughput vs a plain passthrough (ceiling)")
    add_common(bench)
    bench.add_argument("--records", type=positive(int), default=200_000)
    bench.add_argument("--rounds", type=positive(int), default=3)
    bench.add_argument("--partitions", type=positive(int), default=4)
    bench.add_argument("--latency-seconds", type=positive_duration, default=8.0, metavar="T")
    bench.add_argument("--cards", type=positive(int), default=1_000_000)
    bench.add_argument("--trainer-labels", type=positive(int), default=100_000)
    bench.add_argument(
        "--max-steal",
        type=fraction,
        default=0.05,
        help="repeat a throughput or scale-out round (up to 3x --rounds tries) when the "
        "hypervisor stole more than this share of the CPU during it; 1 keeps every round",
    )
    bench.add_argument(
        "--only",
        nargs="+",
        choices=["throughput", "latency", "scaleout", "memory", "trainer", "freshness", "api"],
        help="run only these parts",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")

    warm = sub.add_parser(
        "warm-up", help="compile the scoring and learning kernels into their on-disk cache"
    )
    warm.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )


def cmd_bench(args: argparse.Namespace) -> int:
    from fraudstream.benchmark.run import BenchOptions, run_bench
    from infra.broker import EmbeddedBroker
    from infra.kafka import check_reachable
    from infra.signing import with_run_keys

    # A self-contained run: a key pair of its own unless one is configured.
    settings = with_run_keys(settings_for(args))
    options = BenchOptions(
        records=args.records,
        rounds=args.rounds,
        partitions=args.partitions,
        latency_s=args.latency_seconds,
        cards=args.cards,
        trainer_labels=args.trainer_labels,
        max_steal=args.max_steal,
        parts=tuple(args.only) if args.only else BenchOptions.parts,
    )
    broker = None
    if settings.embedded:
        broker = EmbeddedBroker()
        broker.start()
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
    try:
        check_reachable(settings)
        report = run_bench(settings, options, args.json)
    finally:
        if broker is not None:
            broker.stop()
    print(report.render())
    return 0


def cmd_warm_up(args: argparse.Namespace) -> int:
    from fraudstream.warm_up import warm_up

    kernels, elapsed = warm_up()
    missing = [k.name for k in kernels if k.signatures == 0]
    compiled = sum(k.compiled for k in kernels)
    loaded = sum(k.loaded for k in kernels)
    print(
        f"{len(kernels)} kernels ready in {elapsed:.1f} s: {compiled} signatures compiled, "
        f"{loaded} loaded from the cache"
    )
    if missing:
        raise UsageError("warm-up did not reach " + ", ".join(missing))
    return 0
