"""Event time -> output arrival, at a fixed offered load, for the scorer and the passthrough.

The target runs as its own process; this process offers the load (records stamped with the
time they are sent) and reads the outputs, so both targets are measured the same way.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path

import numpy as np
import orjson

from fraudstream.benchmark.common import OutputReader, iso, measurement, percentile_ms, records
from infra.config import Settings
from infra.kafka import make_producer

WARMUP = 50


def _event_time(value: bytes) -> float:
    d = orjson.loads(value)
    stamp = d.get("event_time") or d["timestamp"]
    return datetime.fromisoformat(stamp).timestamp()


def measure(
    settings: Settings,
    target: str,
    rate: float,
    duration_s: float,
    partitions: int,
    work_dir: Path,
) -> dict[str, float]:
    """p50/p99/max seconds from event time to the output's arrival, at `rate` records/s."""
    with measurement(settings, "lat", partitions) as run:
        source, sink = run.topics.transactions, run.topics.scores
        if target == "scorer":
            args = ["fraudstream.cli", "score", "--metrics-port", "0"]
        else:
            args = ["fraudstream.benchmark.passthrough", source, sink, run.group]
        run.spawn(args, work_dir / f"latency-{target}-{int(rate)}.log")
        producer = make_producer(settings, "bench load")
        pool = records(5000, seed=11)
        with OutputReader(settings, sink) as reader:
            # Warm up until the target has joined its group and answers.
            for i in range(WARMUP):
                r = {**pool[i], "timestamp": iso(time.time())}
                producer.produce(source, orjson.dumps(r), str(r["card_id"]).encode())
            producer.flush(10)
            if not reader.wait_for(WARMUP, 60):
                raise RuntimeError(f"{target} did not answer the warm-up records")
            skip = len(reader.arrivals)
            # Records pre-encoded around their timestamp: at 80% load the load generator's own
            # per-record JSON encoding would take CPU from the target on these 2 cores.
            marker = "\u0000stamp\u0000"
            halves = [
                orjson.dumps({**r, "timestamp": marker}).split(orjson.dumps(marker)) for r in pool
            ]
            keys = [str(r["card_id"]).encode() for r in pool]
            sent = 0
            start = time.time()
            end = start + duration_s
            while (now := time.time()) < end:
                due = int((now - start) * rate) - sent
                stamp = orjson.dumps(iso(now))
                for _ in range(due):
                    head, tail = halves[sent % len(pool)]
                    producer.produce(source, head + stamp + tail, keys[sent % len(pool)])
                    sent += 1
                producer.poll(0)
                time.sleep(0.001)
            producer.flush(10)
            reader.wait_for(skip + sent, 30)
            arrivals = reader.arrivals[skip:]
    lat = np.array([t - _event_time(v) for t, v in arrivals if v is not None])
    return {
        "offered_per_s": rate,
        "sent": float(sent),
        "received": float(len(lat)),
        "p50_ms": percentile_ms(lat, 50),
        "p99_ms": percentile_ms(lat, 99),
        "max_ms": percentile_ms(lat, 100),
    }
