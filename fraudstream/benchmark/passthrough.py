"""The passthrough ceiling as a process of its own (for the latency runs):
`python -m fraudstream.benchmark.passthrough SOURCE SINK GROUP`, stopped by SIGTERM."""

from __future__ import annotations

import signal
import sys
import threading

from fraudstream.benchmark.common import passthrough_loop
from infra.config import load_settings


def main() -> int:
    source, sink, group = sys.argv[1:4]
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    passthrough_loop(load_settings(), source, sink, group, stop.is_set)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
