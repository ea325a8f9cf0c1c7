"""`fraudstream evaluate`: generate or read a stream, replay it, report, write the files."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from core.model_settings import ModelSettings
from evaluation.learners import LEARNERS
from evaluation.replay import build_features, run_learners
from evaluation.report import ReportOptions, build_report
from evaluation.report_markdown import render_markdown
from evaluation.report_plot import write_plot
from evaluation.streams import DAY_S, Stream, StreamError, generate_stream, read_stream

log = logging.getLogger(__name__)


@dataclass
class EvaluateOptions:
    # A recorded stream (both files), else a generated one.
    transactions: Path | None = None
    labels: Path | None = None
    label_delay_s: float | None = None
    # Generated stream.
    count: int = 300_000
    days: float = 30.0
    seed: int = 42
    fraud_rate: float = 0.005
    label_coverage: float = 0.9
    n_cards: int = 5000
    n_merchants: int = 800
    # A fraction of the stream; for recorded streams it only marks the plot and the tables.
    drift_at: float | None = 0.5
    # Learners.
    learners: tuple[str, ...] = LEARNERS
    static_part: float = 0.25
    model: ModelSettings = field(default_factory=ModelSettings)
    drift_reaction: str = "none"
    forest_models: int = 6
    legit_sample: float = 0.1
    jobs: int | None = None
    # The online model's highest-scored transactions reported with their reasons.
    top: int = 20
    top_reasons: int = 3
    report: ReportOptions = field(default_factory=ReportOptions)
    # Outputs.
    out_dir: Path = Path("evaluation-out")
    json_path: Path | None = None


@dataclass
class Evaluation:
    report: dict[str, Any]
    markdown: str
    files: dict[str, Path]


def load_stream(opts: EvaluateOptions, on_error: Callable[[str], None] | None = None) -> Stream:
    if (opts.transactions is None) != (opts.labels is None):
        raise StreamError("--transactions and --labels go together")
    if opts.transactions is not None and opts.labels is not None:
        stream = read_stream(opts.transactions, opts.labels, opts.label_delay_s, None, on_error)
        if opts.drift_at is not None:
            t0, t1 = float(stream.ts[0]), float(stream.ts[-1])
            stream.drift_time = t0 + opts.drift_at * (t1 - t0)
        return stream
    delay = opts.label_delay_s if opts.label_delay_s is not None else DAY_S
    return generate_stream(
        n=opts.count,
        days=opts.days,
        seed=opts.seed,
        fraud_rate=opts.fraud_rate,
        drift_at=opts.drift_at,
        label_delay_s=delay,
        label_coverage=opts.label_coverage,
        n_cards=opts.n_cards,
        n_merchants=opts.n_merchants,
    )


def run_evaluation(
    opts: EvaluateOptions, on_error: Callable[[str], None] | None = None
) -> Evaluation:
    if not 0.0 < opts.static_part < 1.0:
        raise StreamError(f"--static-part must be in (0, 1), got {opts.static_part}")
    if opts.top < 0 or opts.top_reasons < 1:
        raise StreamError(f"--top must be ≥ 0 and reasons ≥ 1, got {opts.top}, {opts.top_reasons}")
    if opts.drift_at is not None and not opts.static_part < opts.drift_at < 1.0:
        raise StreamError(
            f"--drift-at ({opts.drift_at}) must come after the static part ({opts.static_part})"
        )
    started = time.perf_counter()
    stream = load_stream(opts, on_error)
    log.info("stream: %d transactions (%.1f s)", len(stream), time.perf_counter() - started)
    t = time.perf_counter()
    features = build_features(stream)
    feature_s = time.perf_counter() - t
    t0, t1 = float(stream.ts[0]), float(stream.ts[-1])
    static_until = t0 + opts.static_part * (t1 - t0)
    t = time.perf_counter()
    results = run_learners(
        stream,
        features,
        opts.learners,
        static_until,
        model=opts.model,
        reaction=opts.drift_reaction,
        seed=opts.seed,
        forest_models=opts.forest_models,
        legit_sample=opts.legit_sample,
        jobs=opts.jobs,
        top=opts.top,
        top_reasons=opts.top_reasons,
    )
    learn_s = time.perf_counter() - t
    meta = {
        "source": stream.source,
        **stream.info,
        "static_part": opts.static_part,
        "drift_reaction": opts.drift_reaction,
        "model": opts.model.model_dump(),
        "forest_models": opts.forest_models,
        "legit_sample": opts.legit_sample,
        "seconds": {
            "features": feature_s,
            "learners": learn_s,
            "total": time.perf_counter() - started,
        },
    }
    report = build_report(stream, results, static_until, opts.report, meta)
    markdown = render_markdown(report)
    out = opts.out_dir
    out.mkdir(parents=True, exist_ok=True)
    files = {
        "markdown": out / "evaluation.md",
        "json": opts.json_path or out / "evaluation.json",
        "plot": out / "evaluation.png",
    }
    files["markdown"].write_text(markdown)
    files["json"].parent.mkdir(parents=True, exist_ok=True)
    files["json"].write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_plot(report, files["plot"])
    report["stream"]["seconds"]["total"] = time.perf_counter() - started
    return Evaluation(report, markdown, files)
