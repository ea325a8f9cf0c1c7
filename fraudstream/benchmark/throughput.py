"""Sustained records/s over a pre-loaded topic: the passthrough ceiling and the scorer.

Both run in this process with the same client settings, each timed from its first record to
its last output, so group-join time is excluded from both.
"""

from __future__ import annotations

import threading
import time

from fraudstream.benchmark.common import (
    create_topics,
    delete_topics,
    measurement,
    passthrough_loop,
    uid,
)
from infra.config import Settings
from infra.metrics import Metrics
from scorer.run import Scorer


def passthrough_rate(settings: Settings, source: str, n: int, partitions: int) -> float:
    sink = f"bench-pass-{uid()}"
    create_topics(settings, [sink], partitions)
    try:
        return passthrough_loop(settings, source, sink, f"bench-pass-{uid()}", lambda: False, n)
    finally:
        delete_topics(settings, [sink])


def scorer_rate(settings: Settings, source: str, n: int, partitions: int) -> float:
    with measurement(settings, "bench", partitions, source=source) as run:
        s = settings.model_copy(
            update={
                "topics": run.topics,
                "scorer": settings.scorer.model_copy(update={"group_id": run.group}),
            }
        )
        scorer = Scorer(s, Metrics())
        thread = threading.Thread(target=scorer.run, kwargs={"model_wait_s": 10.0}, daemon=True)
        thread.start()
        # Coarse polling: a waiting thread that wakes every millisecond takes the GIL from the
        # scorer each time (~14% of its time spent waiting for it).
        while scorer.scored < n:
            time.sleep(0.02)
        scorer.producer.flush(30)
        end = time.perf_counter()
        scorer.stop()
        thread.join(60)
    assert scorer.first_batch_at is not None
    return n / (end - scorer.first_batch_at)
