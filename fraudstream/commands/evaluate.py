"""`fraudstream evaluate`: offline progressive evaluation, or `--live` through running processes."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fraudstream.commands.args import (
    UsageError,
    add_common,
    fraction,
    non_negative_duration,
    number,
    positive,
    positive_duration,
    settings_for,
)
from infra.config import Settings

if TYPE_CHECKING:
    from evaluation.run import Evaluation
    from fraudstream.commands.args import Subparsers

E = TypeVar("E", bound="Evaluation")


def add_parsers(sub: Subparsers) -> None:
    ev = sub.add_parser(
        "evaluate", help="offline progressive evaluation of learners on a generated or own stream"
    )
    add_common(ev)
    src = ev.add_argument_group("stream (default: generated)")
    src.add_argument("--transactions", type=Path, metavar="FILE", help="Transaction JSON lines")
    src.add_argument("--labels", type=Path, metavar="FILE", help="Label rows, JSONL or CSV")
    src.add_argument(
        "--label-delay",
        type=non_negative_duration,
        metavar="T",
        help="label arrival = transaction time + T where a label has no labeled_at "
        "(generated: mean delay, default 86400)",
    )
    src.add_argument("--count", type=positive(int), default=300_000, help="generated records")
    src.add_argument("--days", type=positive(float), default=30.0, help="generated time span")
    src.add_argument("--seed", type=int, default=42)
    src.add_argument("--fraud-rate", type=fraction, default=0.005)
    src.add_argument("--label-coverage", type=fraction, default=0.9)
    src.add_argument("--cards", type=positive(int), default=5000)
    src.add_argument("--merchants", type=positive(int), default=800)
    src.add_argument(
        "--drift-at",
        type=fraction,
        metavar="F",
        help="switch the generated fraud mix after this fraction of the stream (own files: "
        "only marks it)",
    )
    lrn = ev.add_argument_group("learners")
    lrn.add_argument(
        "--learners", nargs="+", choices=["online", "static", "forest"], metavar="NAME"
    )
    lrn.add_argument("--static-part", type=fraction, default=0.25, metavar="F")
    lrn.add_argument("--drift-reaction", choices=["none", "boost", "reset"], default="none")
    lrn.add_argument("--learning-rate", type=positive(float), help="default: settings")
    lrn.add_argument("--fraud-weight", type=positive(float), help="default: settings")
    lrn.add_argument(
        "--average-labels",
        type=positive(int),
        metavar="N",
        help="labels the served weights are averaged over (1: raw SGD weights; default: settings)",
    )
    lrn.add_argument("--forest-models", type=positive(int), default=6)
    lrn.add_argument("--legit-sample", type=fraction, default=0.1, metavar="F")
    lrn.add_argument("--jobs", type=positive(int), help="parallel learners (default: cores)")
    rep = ev.add_argument_group("report")
    rep.add_argument("--threshold", type=fraction, help="default: scorer threshold setting")
    rep.add_argument("--alert-rate", type=fraction, default=0.01, metavar="F")
    rep.add_argument("--fpr", type=fraction, default=0.01, metavar="F")
    rep.add_argument("--daily-budget", type=positive(int), default=100, metavar="N")
    rep.add_argument("--window-days", type=positive(float), metavar="D")
    rep.add_argument("--chunk-frauds", type=positive(int), default=50, metavar="N")
    rep.add_argument(
        "--top",
        type=number(int, lambda v: v < 0, "must be >= 0", "an integer"),
        default=20,
        metavar="N",
        help="list the online model's N highest-scored transactions with their reasons",
    )
    rep.add_argument("--out", type=Path, default=Path("evaluation-out"), metavar="DIR")
    rep.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")
    live = ev.add_argument_group(
        "live: play the stream through running score and train processes and grade what "
        "they served beside the offline replay"
    )
    live.add_argument("--live", action="store_true", help="run the live evaluation")
    live.add_argument(
        "--rate",
        type=positive(float),
        default=2000.0,
        help="records (transactions and labels) published per second (default 2000)",
    )
    live.add_argument(
        "--burn-in",
        type=non_negative_duration,
        default=0.0,
        metavar="DURATION",
        help="grade only transactions this far into the stream (event time): 30d, 168h, "
        "30m, 45s or seconds (default 0)",
    )
    live.add_argument(
        "--score-timeout",
        type=positive_duration,
        default=120.0,
        metavar="T",
        help="stop waiting for scores once none came for T: 2m, 45s or seconds (default 120)",
    )
    live.add_argument(
        "--mlflow", action="store_true", help="let the trainer log to MLflow (default: off)"
    )
    live.add_argument(
        "--keep-topics",
        action="store_true",
        help="keep the run's topics on --bootstrap-servers (default: deleted at the end)",
    )


def cmd_evaluate(args: argparse.Namespace) -> int:
    from evaluation.learners import LEARNERS
    from evaluation.report import ReportOptions
    from evaluation.run import EvaluateOptions, run_evaluation
    from evaluation.streams import StreamError

    settings = settings_for(args)
    overrides = (
        ("learning_rate", args.learning_rate),
        ("fraud_weight", args.fraud_weight),
        ("average_labels", args.average_labels),
    )
    model = settings.model.model_copy(update={k: v for k, v in overrides if v is not None})
    # The live run's processes and its offline replay take the model from the settings.
    settings = settings.model_copy(update={"model": model})
    threshold = args.threshold if args.threshold is not None else settings.scorer.threshold
    options = EvaluateOptions(
        transactions=args.transactions,
        labels=args.labels,
        label_delay_s=args.label_delay,
        count=args.count,
        days=args.days,
        seed=args.seed,
        fraud_rate=args.fraud_rate,
        label_coverage=args.label_coverage,
        n_cards=args.cards,
        n_merchants=args.merchants,
        drift_at=args.drift_at,
        learners=tuple(args.learners) if args.learners else LEARNERS,
        static_part=args.static_part,
        model=model,
        drift_reaction=args.drift_reaction,
        forest_models=args.forest_models,
        legit_sample=args.legit_sample,
        jobs=args.jobs,
        top=args.top,
        report=ReportOptions(
            fpr=args.fpr,
            daily_budget=args.daily_budget,
            threshold=threshold,
            alert_rate=args.alert_rate,
            window_days=args.window_days,
            chunk_frauds=args.chunk_frauds,
        ),
        out_dir=args.out,
        json_path=args.json,
    )
    if args.live:
        return _evaluate_live(args, settings, options)
    _evaluation(lambda: run_evaluation(options, on_error=_print_error), StreamError)
    return 0


def _print_error(message: str) -> None:
    print(message, file=sys.stderr)


def _evaluation(run: Callable[[], E], *errors: type[Exception]) -> E:
    """Run an evaluation, print its report and the files it wrote; its `errors` become one-line
    usage errors."""
    try:
        result = run()
    except errors as exc:
        raise UsageError(str(exc)) from None
    print(result.markdown)
    print("wrote " + ", ".join(str(p) for p in result.files.values()))
    return result


def _evaluate_live(args: argparse.Namespace, settings: Settings, options: Any) -> int:
    from evaluation.live import run_live
    from evaluation.live_run import LiveError, LiveOptions
    from evaluation.streams import StreamError

    if args.learners and set(args.learners) != {"online"}:
        raise UsageError("--live compares the served scores with the online learner only")
    live = LiveOptions(
        stream=options,
        rate=args.rate,
        burn_in_s=args.burn_in,
        score_timeout_s=args.score_timeout,
        mlflow=args.mlflow,
        keep_topics=args.keep_topics,
        config=args.config,
    )

    def interrupt(_signum: int, _frame: Any) -> None:
        raise KeyboardInterrupt  # unwinds through run_live, which stops what it started

    signal.signal(signal.SIGTERM, interrupt)
    result = _evaluation(
        lambda: run_live(settings, live, on_error=_print_error), StreamError, LiveError
    )
    if not result.complete:
        print(
            f"fraudstream: error: {result.report['served']['unscored']} transactions were "
            "not scored (graded without them)",
            file=sys.stderr,
        )
        return 1
    return 0
