"""One scorer process vs two in one group, on the same pre-loaded topic."""

from __future__ import annotations

from pathlib import Path

from fraudstream.benchmark.common import (
    OutputReader,
    bench_topics,
    create_topics,
    delete_topics,
    spawn,
    stop,
    topic_env,
    topics_of,
    uid,
)
from infra.config import Settings


def rate(
    settings: Settings, source: str, n: int, processes: int, partitions: int, work_dir: Path
) -> float:
    """Records/s from the first score to the last, read off the scores topic."""
    sink = f"scale-out-{uid()}"
    create_topics(settings, [sink], partitions)
    topics = bench_topics(settings, source, sink, partitions)
    env = topic_env(settings, topics, f"scale-{uid()}")
    procs = [
        spawn(
            ["fraudstream.cli", "score", "--metrics-port", "0"],
            env,
            work_dir / f"scale-{processes}-{i}.log",
        )
        for i in range(processes)
    ]
    try:
        with OutputReader(settings, sink, keep_values=False) as reader:
            if not reader.wait_for(n, 300):
                raise RuntimeError(f"only {len(reader.arrivals)} of {n} scores arrived")
            times = [t for t, _ in reader.arrivals[:n]]
    finally:
        for p in procs:
            stop(p)
        delete_topics(settings, topics_of(topics))
    # Skip the first 5%: the second process may still be joining while the first one runs.
    k = n // 20
    return (n - k) / (times[-1] - times[k])
