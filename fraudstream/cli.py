"""`fraudstream` command line: one console script, a subcommand per process.

The subcommands live in `fraudstream.commands`, one module per group; this module assembles
their parsers, dispatches to them and turns the errors a user can fix into one line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from typing import NoReturn

from fraudstream.commands import (
    bench,
    broker,
    evaluate,
    keys,
    model,
    processes,
    replay_labels,
    up,
)
from fraudstream.commands.args import UsageError
from infra.config import ConfigError

# In this order in `fraudstream --help`.
GROUPS = (up, broker, processes, bench, replay_labels, evaluate, model, keys)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudstream",
        description="Kafka streaming fraud scorer that learns in real time.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(sub)
    return parser


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": up.cmd_up,
    "broker": broker.cmd_broker,
    "topics": broker.cmd_topics_create,
    "produce": processes.cmd_produce,
    "score": processes.cmd_score,
    "train": processes.cmd_train,
    "replay-labels": replay_labels.cmd_replay_labels,
    "bench": bench.cmd_bench,
    "api": processes.cmd_api,
    "evaluate": evaluate.cmd_evaluate,
    "warm-up": bench.cmd_warm_up,
    "model": model.cmd_model,
    "keys": keys.cmd_keys,
}


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"fraudstream: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from infra.logs import configure

    configure(args.log_level, getattr(args, "log_format", "text"))
    from infra.broker import BrokerError
    from infra.kafka import BrokerUnreachable, MissingTopics
    from producer.replay import ReplayError

    try:
        return COMMANDS[args.command](args)
    except (
        ConfigError,
        UsageError,
        BrokerError,
        BrokerUnreachable,
        MissingTopics,
        ReplayError,
    ) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
