"""`fraudstream evaluate --live`: play a stream through the running system and grade what it served.

The offline replay grades a model in a simulation; this grades the Score records that real
`fraudstream score` and `fraudstream train` processes publish, on the same stream:

1. a broker: the embedded one, started for the run, or the cluster given;
2. fresh topics and consumer groups named with a suffix of this run, so runs never mix
   (and no snapshot of an earlier run is served);
3. `score` and `train` started as separate processes (the trainer without MLflow unless
   asked; with MLflow it does not warm-start from the registry, so the run starts untrained);
4. the offline replay of the online learner, while those processes start;
5. every transaction published to `transactions` at its event time and every label to
   `labels` at its arrival time, merged in that order and paced at `rate` records/s;
6. every Score read back from `scores` until each transaction is scored (or no new score
   came for `score_timeout_s`), de-duplicated by transaction_id (delivery is at-least-once);
7. both graded side by side (`evaluation.live_report`).

Event time runs `rate` records per second of wall time: what the scorer serves trails the
labels by the trainer's snapshot interval and the scorer's latency, i.e. by about
`rate * (trainer.snapshot_every_s + latency)` records. A lower rate stays closer to the
offline replay, whose model learns each label the instant it arrives.

The processes run in sessions of their own (the terminal's Ctrl-C reaches only this one) and
are stopped, with the embedded broker, whatever way the run ends.

`run_live` is the sequence; `evaluation.live_run` owns the broker, topics and processes and
publishes and reads the records, which `evaluation.live_records` puts in publishing order.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson

from evaluation.live_records import stream_records
from evaluation.live_report import grade, render
from evaluation.live_run import LiveError, LiveOptions, LiveRun
from evaluation.replay import build_features, run_learners
from evaluation.report import ReportOptions
from evaluation.run import Evaluation, load_stream
from evaluation.streams import Stream
from infra.config import Settings

log = logging.getLogger(__name__)


@dataclass
class LiveEvaluation(Evaluation):
    complete: bool  # every transaction was scored


def offline_scores(stream: Stream, settings: Settings, seed: int) -> np.ndarray:
    """The online learner's progressive scores, as `fraudstream evaluate` computes them."""
    features = build_features(stream)
    results = run_learners(
        stream, features, ("online",), float(stream.ts[0]), model=settings.model, seed=seed, jobs=1
    )
    return results["online"].scores


def run_live(
    settings: Settings,
    options: LiveOptions,
    on_error: Callable[[str], None] | None = None,
) -> LiveEvaluation:
    started = time.monotonic()
    if not (options.rate > 0 and math.isfinite(options.rate)):
        raise LiveError(f"--rate must be > 0, got {options.rate}")
    stream = load_stream(options.stream, on_error)
    records = stream_records(stream)
    out = options.stream.out_dir
    log_dir = out / "live-logs" / time.strftime("%Y%m%d-%H%M%S")
    run = LiveRun(settings, options, log_dir)
    try:
        run.start()
        log.info(
            "%s: scorer and trainer starting (logs in %s); offline replay meanwhile",
            run.settings.bootstrap,
            log_dir,
        )
        t = time.monotonic()
        offline = offline_scores(stream, settings, options.stream.seed)
        offline_s = time.monotonic() - t
        run.wait_ready()
        log.info(
            "publishing %d transactions and %d labels at %.0f records/s",
            records.transactions,
            records.labels,
            options.rate,
        )
        publish_s = run.publish(records)
        t = time.monotonic()
        served = run.collect(stream)
        drain_s = time.monotonic() - t
    finally:
        run.close()
    delay = served.scored_at - records.transaction_times(run.sent_at, len(stream))
    delay = delay[np.isfinite(delay)]
    live = {
        "rate": options.rate,
        "achieved_rate": len(records) / publish_s if publish_s > 0 else None,
        "bootstrap": run.settings.bootstrap,
        "embedded": run.broker is not None,
        "topic_suffix": run.tag,
        "published": {"transactions": records.transactions, "labels": records.labels},
        "max_scorer_lag": run.max_scorer_lag,
        # From when a transaction was sent to its Score's scored_at.
        "scoring_delay_s": {
            "p50": float(np.median(delay)) if len(delay) else None,
            "p99": float(np.quantile(delay, 0.99)) if len(delay) else None,
            "max": float(delay.max()) if len(delay) else None,
        },
        "logs": str(log_dir),
        "seconds": {
            "offline": offline_s,
            "publish": publish_s,
            "drain": drain_s,
            "total": time.monotonic() - started,
        },
    }
    meta = {"source": stream.source, **stream.info}
    opts = ReportOptions(
        fpr=options.stream.report.fpr, daily_budget=options.stream.report.daily_budget
    )
    report = grade(stream, offline, served, options.burn_in_s, opts, meta)
    report["live"] = live
    markdown = render(report)
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "evaluation-live.md",
        "json": options.stream.json_path or out / "evaluation-live.json",
    }
    files["markdown"].write_text(markdown)
    files["json"].parent.mkdir(parents=True, exist_ok=True)
    files["json"].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    return LiveEvaluation(report, markdown, files, complete=report["served"]["unscored"] == 0)
