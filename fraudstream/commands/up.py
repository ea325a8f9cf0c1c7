"""`fraudstream up`: everything on this machine (embedded broker, producer, scorer, trainer,
MLflow store) with a live view.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.commands.args import (
    add_common,
    fraction,
    non_negative_duration,
    positive,
    positive_duration,
    settings_for,
)

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers


def add_parsers(sub: Subparsers) -> None:
    up = sub.add_parser("up", help="run everything on this machine with a live view")
    add_common(up)
    up.add_argument(
        "--duration", type=positive_duration, metavar="T", help="stop after T (30, 45s, 10m, 2h)"
    )
    up.add_argument("--rate", type=positive(float), default=500.0, help="transactions/s")
    up.add_argument("--seed", type=int, default=42)
    up.add_argument("--fraud-rate", type=fraction, default=0.01)
    up.add_argument("--label-delay", type=non_negative_duration, default=3.0, metavar="T")
    up.add_argument("--label-coverage", type=fraction, default=1.0)
    up.add_argument("--plain", action="store_true", help="log lines instead of a live view")
    up.add_argument("--run-dir", type=Path, default=Path(".fraudstream"), help="logs go here")


def cmd_up(args: argparse.Namespace) -> int:
    from fraudstream.up import UpOptions, run_up

    settings = settings_for(args)
    options = UpOptions(
        duration_s=args.duration,
        rate=args.rate,
        seed=args.seed,
        fraud_rate=args.fraud_rate,
        label_delay_s=args.label_delay,
        label_coverage=args.label_coverage,
        plain=args.plain or not sys.stdout.isatty(),
        run_dir=args.run_dir,
        config=args.config,
    )
    return run_up(settings, options)
