"""One scorer process vs two in one group, on the same pre-loaded topic."""

from __future__ import annotations

from pathlib import Path

from fraudstream.benchmark.common import OutputReader, measurement
from infra.config import Settings


def rate(
    settings: Settings, source: str, n: int, processes: int, partitions: int, work_dir: Path
) -> float:
    """Records/s from the first score to the last, read off the scores topic."""
    with measurement(settings, "scale", partitions, source=source) as run:
        for i in range(processes):
            run.spawn(
                ["fraudstream.cli", "score", "--metrics-port", "0"],
                work_dir / f"scale-{processes}-{i}.log",
            )
        with OutputReader(settings, run.topics.scores, keep_values=False) as reader:
            if not reader.wait_for(n, 300):
                raise RuntimeError(f"only {len(reader.arrivals)} of {n} scores arrived")
            times = [t for t, _ in reader.arrivals[:n]]
    # Skip the first 5%: the second process may still be joining while the first one runs.
    k = n // 20
    return (n - k) / (times[-1] - times[k])
