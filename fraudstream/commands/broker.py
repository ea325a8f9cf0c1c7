"""`fraudstream broker` (the embedded broker in the foreground) and `fraudstream topics create`."""

from __future__ import annotations

import argparse
import logging
import threading
from typing import TYPE_CHECKING

from fraudstream.commands.args import (
    add_common,
    port_number,
    positive,
    settings_for,
    stop_on_signals,
)

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers

log = logging.getLogger("fraudstream")


def add_parsers(sub: Subparsers) -> None:
    broker = sub.add_parser("broker", help="run the embedded broker (Tansu) in the foreground")
    broker.add_argument("--port", type=port_number, default=9092)
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )

    topics = sub.add_parser("topics", help="topic administration")
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create the topics (existing ones are kept)")
    add_common(create)
    create.add_argument("--partitions", type=positive(int), help="default: settings (4)")


def cmd_broker(args: argparse.Namespace) -> int:
    from infra.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, host=args.host)
    stop = threading.Event()
    stop_on_signals(stop.set)
    broker.start(foreground_output=True)
    print(f"embedded broker listening on {broker.bootstrap} (Ctrl-C to stop)", flush=True)
    try:
        while not stop.wait(0.5):
            if broker.process is None or broker.process.poll() is not None:
                log.error("embedded broker exited")
                return 1
    finally:
        broker.stop()
    return 0


def cmd_topics_create(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable
    from infra.topics import create_topics

    settings = settings_for(args)
    check_reachable(settings)
    for name, state in sorted(create_topics(settings, args.partitions).items()):
        print(f"{name}: {state}")
    return 0
