"""`fraudstream replay-labels FILE`: publish labels from a CSV or JSON-lines file."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.commands.args import UsageError, add_common, positive, settings_for

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers


def add_parsers(sub: Subparsers) -> None:
    replay = sub.add_parser("replay-labels", help="publish labels from a CSV or JSONL file")
    add_common(replay)
    replay.add_argument("file", type=Path, metavar="FILE")
    replay.add_argument(
        "--rate", type=positive(float), help="labels/s (default: as fast as possible)"
    )
    replay.add_argument("--no-progress", action="store_true")


def cmd_replay_labels(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable
    from producer.replay import replay_labels

    settings = settings_for(args)
    if not args.file.is_file():
        raise UsageError(f"label file {args.file} does not exist")
    check_reachable(settings)
    report = replay_labels(args.file, settings, rate=args.rate, progress=not args.no_progress)
    for line, error in report.rejected:
        print(f"{args.file}:{line}: rejected: {error}", file=sys.stderr)
    print(f"sent {report.sent} labels, rejected {len(report.rejected)}")
    return 0 if report.ok else 1
