"""`fraudstream` command line: one console script, a subcommand per process."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from core.durations import parse_duration
from core.errors import FraudstreamError
from infra.config import ConfigError, Settings, load_settings

if TYPE_CHECKING:
    from evaluation.run import Evaluation

log = logging.getLogger("fraudstream")
E = TypeVar("E", bound="Evaluation")


class UsageError(FraudstreamError):
    """A bad argument found after parsing (checked against settings)."""


def _number(
    kind: type[float] | type[int],
    bad: Callable[[float], bool],
    rule: str,
    what: str = "a number",
) -> Callable[[str], Any]:
    """An argparse type: `kind(text)`, rejected with `rule` when `bad(value)`."""

    def parse(text: str) -> float | int:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if bad(value):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return value

    return parse


def _positive(kind: type[float] | type[int]) -> Callable[[str], Any]:
    return _number(kind, lambda v: v <= 0, "must be > 0")


_fraction = _number(float, lambda v: not 0.0 <= v <= 1.0, "must be between 0 and 1")
_port = _number(int, lambda v: not 0 <= v <= 65535, "port must be 0-65535", "a port number")


def _duration(bad: Callable[[float], bool], rule: str) -> Callable[[str], float]:
    """An argparse type for a duration (`parse_duration`), rejected with `rule` when bad."""

    def parse(text: str) -> float:
        try:
            seconds = parse_duration(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if bad(seconds):
            raise argparse.ArgumentTypeError(f"{rule}, got {text}")
        return seconds

    return parse


_positive_duration = _duration(lambda v: v <= 0, "must be > 0")
_non_negative_duration = _duration(lambda v: v < 0, "must be >= 0")


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="YAML settings file (default: params.yaml)")
    p.add_argument(
        "--bootstrap-servers",
        metavar="HOSTS",
        help="Kafka cluster (default: $FRAUDSTREAM_BOOTSTRAP_SERVERS, else the embedded broker)",
    )
    p.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    p.add_argument(
        "--log-format", default="text", choices=["text", "json"], help="json: one object a line"
    )


def _metrics_port(p: argparse.ArgumentParser, default_help: str) -> None:
    p.add_argument(
        "--metrics-port",
        type=_port,
        metavar="N",
        help=f"serve Prometheus metrics on this port (0: any free port; {default_help})",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fraudstream",
        description="Kafka streaming fraud scorer that learns in real time.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = sub.add_parser("up", help="run everything on this machine with a live view")
    _common(up)
    up.add_argument(
        "--duration", type=_positive_duration, metavar="T", help="stop after T (30, 45s, 10m, 2h)"
    )
    up.add_argument("--rate", type=_positive(float), default=500.0, help="transactions/s")
    up.add_argument("--seed", type=int, default=42)
    up.add_argument("--fraud-rate", type=_fraction, default=0.01)
    up.add_argument("--label-delay", type=_non_negative_duration, default=3.0, metavar="T")
    up.add_argument("--label-coverage", type=_fraction, default=1.0)
    up.add_argument("--plain", action="store_true", help="log lines instead of a live view")
    up.add_argument("--run-dir", type=Path, default=Path(".fraudstream"), help="logs go here")

    broker = sub.add_parser("broker", help="run the embedded broker (Tansu) in the foreground")
    broker.add_argument("--port", type=_port, default=9092)
    broker.add_argument("--host", default="127.0.0.1")
    broker.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )

    topics = sub.add_parser("topics", help="topic administration")
    tsub = topics.add_subparsers(dest="topics_command", required=True, metavar="ACTION")
    create = tsub.add_parser("create", help="create the topics (existing ones are kept)")
    _common(create)
    create.add_argument("--partitions", type=_positive(int), help="default: settings (4)")

    produce = sub.add_parser("produce", help="publish synthetic transactions and their labels")
    _common(produce)
    _metrics_port(produce, "default: off")
    produce.add_argument("--rate", type=_positive(float), default=1000.0, help="transactions/s")
    produce.add_argument("--count", type=_positive(int), help="stop after N transactions")
    produce.add_argument("--duration", type=_positive_duration, metavar="T")
    produce.add_argument("--seed", type=int, default=42)
    produce.add_argument("--fraud-rate", type=_fraction, default=0.01)
    produce.add_argument("--label-delay", type=_non_negative_duration, default=5.0, metavar="T")
    produce.add_argument("--label-coverage", type=_fraction, default=1.0)

    score = sub.add_parser("score", help="run one scorer instance")
    _common(score)
    _metrics_port(score, "default: $FRAUDSTREAM_METRICS_PORT, else 9101")

    train = sub.add_parser("train", help="run the trainer (single writer of the model)")
    _common(train)
    _metrics_port(train, "default: $FRAUDSTREAM_METRICS_PORT, else 9102")
    train.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    api = sub.add_parser("api", help="serve the HTTP API (score, label, model) over the topics")
    _common(api)
    api.add_argument("--host", help="listen address (default: settings api.host, 127.0.0.1)")
    api.add_argument("--port", type=_port, help="listen port (default: settings api.port, 8000)")

    bench = sub.add_parser("bench", help="scorer throughput vs a plain passthrough (ceiling)")
    _common(bench)
    bench.add_argument("--records", type=_positive(int), default=200_000)
    bench.add_argument("--rounds", type=_positive(int), default=3)
    bench.add_argument("--partitions", type=_positive(int), default=4)
    bench.add_argument("--latency-seconds", type=_positive_duration, default=8.0, metavar="T")
    bench.add_argument("--cards", type=_positive(int), default=1_000_000)
    bench.add_argument("--trainer-labels", type=_positive(int), default=100_000)
    bench.add_argument(
        "--max-steal",
        type=_fraction,
        default=0.05,
        help="repeat a throughput or scale-out round (up to 3x --rounds tries) when the "
        "hypervisor stole more than this share of the CPU during it; 1 keeps every round",
    )
    bench.add_argument(
        "--only",
        nargs="+",
        choices=["throughput", "latency", "scaleout", "memory", "trainer", "freshness", "api"],
        help="run only these parts",
    )
    bench.add_argument("--json", type=Path, metavar="FILE", help="write the results as JSON")

    warm = sub.add_parser(
        "warm-up", help="compile the scoring and learning kernels into their on-disk cache"
    )
    warm.add_argument(
        "--log-level", default="WARNING", choices=["DEBUG", "INFO", "WARNING", "ERROR"]
    )

    replay = sub.add_parser("replay-labels", help="publish labels from a CSV or JSONL file")
    _common(replay)
    replay.add_argument("file", type=Path, metavar="FILE")
    replay.add_argument(
        "--rate", type=_positive(float), help="labels/s (default: as fast as possible)"
    )
    replay.add_argument("--no-progress", action="store_true")

    ev = sub.add_parser(
        "evaluate", help="offline progressive evaluation of learners on a generated or own stream"
    )
    _common(ev)
    src = ev.add_argument_group("stream (default: generated)")
    src.add_argument("--transactions", type=Path, metavar="FILE", help="Transaction JSON lines")
    src.add_argument("--labels", type=Path, metavar="FILE", help="Label rows, JSONL or CSV")
    src.add_argument(
        "--label-delay",
        type=_non_negative_duration,
        metavar="T",
        help="label arrival = transaction time + T where a label has no labeled_at "
        "(generated: mean delay, default 86400)",
    )
    src.add_argument("--count", type=_positive(int), default=300_000, help="generated records")
    src.add_argument("--days", type=_positive(float), default=30.0, help="generated time span")
    src.add_argument("--seed", type=int, default=42)
    src.add_argument("--fraud-rate", type=_fraction, default=0.005)
    src.add_argument("--label-coverage", type=_fraction, default=0.9)
    src.add_argument("--cards", type=_positive(int), default=5000)
    src.add_argument("--merchants", type=_positive(int), default=800)
    src.add_argument(
        "--drift-at",
        type=_fraction,
        metavar="F",
        help="switch the generated fraud mix after this fraction of the stream (own files: "
        "only marks it)",
    )
    lrn = ev.add_argument_group("learners")
    lrn.add_argument(
        "--learners", nargs="+", choices=["online", "static", "forest"], metavar="NAME"
    )
    lrn.add_argument("--static-part", type=_fraction, default=0.25, metavar="F")
    lrn.add_argument("--drift-reaction", choices=["none", "boost", "reset"], default="none")
    lrn.add_argument("--learning-rate", type=_positive(float), help="default: settings")
    lrn.add_argument("--fraud-weight", type=_positive(float), help="default: settings")
    lrn.add_argument("--forest-models", type=_positive(int), default=6)
    lrn.add_argument("--legit-sample", type=_fraction, default=0.1, metavar="F")
    lrn.add_argument("--jobs", type=_positive(int), help="parallel learners (default: cores)")
    rep = ev.add_argument_group("report")
    rep.add_argument("--threshold", type=_fraction, help="default: scorer threshold setting")
    rep.add_argument("--alert-rate", type=_fraction, default=0.01, metavar="F")
    rep.add_argument("--fpr", type=_fraction, default=0.01, metavar="F")
    rep.add_argument("--daily-budget", type=_positive(int), default=100, metavar="N")
    rep.add_argument("--window-days", type=_positive(float), metavar="D")
    rep.add_argument("--chunk-frauds", type=_positive(int), default=50, metavar="N")
    rep.add_argument(
        "--top",
        type=_number(int, lambda v: v < 0, "must be >= 0", "an integer"),
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
        type=_positive(float),
        default=2000.0,
        help="records (transactions and labels) published per second (default 2000)",
    )
    live.add_argument(
        "--burn-in",
        type=_non_negative_duration,
        default=0.0,
        metavar="DURATION",
        help="grade only transactions this far into the stream (event time): 30d, 168h, "
        "30m, 45s or seconds (default 0)",
    )
    live.add_argument(
        "--score-timeout",
        type=_positive_duration,
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

    model = sub.add_parser("model", help="the MLflow Model Registry: list versions, roll back")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mlist = msub.add_parser("list", help="registry versions, newest first, with their lineage")
    _common(mlist)
    rollback = msub.add_parser(
        "rollback",
        help="serve an earlier registry version again: scorers load it at once, the trainer "
        "learns on from it, the champion alias moves to it",
    )
    _common(rollback)
    rollback.add_argument("version", type=_positive(int), metavar="VERSION")

    keys = sub.add_parser("keys", help="snapshot signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = ksub.add_parser(
        "generate",
        help="write a new Ed25519 pair: snapshot-signing.pem (the trainer's, mode 0600) and "
        "snapshot-verify.pem (every reader's)",
    )
    _common(generate)
    generate.add_argument("--out", type=Path, default=Path("."), metavar="DIR")
    return parser


def _settings(args: argparse.Namespace, **extra: Any) -> Settings:
    overrides: dict[str, Any] = dict(extra)
    if getattr(args, "bootstrap_servers", None):
        overrides["bootstrap_servers"] = args.bootstrap_servers
    if getattr(args, "metrics_port", None) is not None:
        overrides["metrics_port"] = args.metrics_port
    return load_settings(getattr(args, "config", None), **overrides)


def _stop_on_signals(stop: Callable[[], None]) -> None:
    def handler(signum: int, _frame: Any) -> None:
        log.info("%s received: stopping", signal.Signals(signum).name)
        stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)


def _serve_metrics(metrics: Any, port: int | None, host: str = "127.0.0.1") -> None:
    try:
        bound = metrics.serve(port, host)
    except OSError as exc:
        raise UsageError(
            f"--metrics-port {port}: cannot listen on {host} ({exc.strerror})"
        ) from None
    if bound is not None:
        log.info("metrics on http://%s:%d/metrics", host, bound)


def cmd_broker(args: argparse.Namespace) -> int:
    from infra.broker import EmbeddedBroker

    broker = EmbeddedBroker(port=args.port, host=args.host)
    stop = threading.Event()
    _stop_on_signals(stop.set)
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

    settings = _settings(args)
    check_reachable(settings)
    for name, state in sorted(create_topics(settings, args.partitions).items()):
        print(f"{name}: {state}")
    return 0


def cmd_produce(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable
    from infra.metrics import Metrics
    from producer.run import ProduceOptions, run_producer

    settings = _settings(args)
    check_reachable(settings)
    metrics = Metrics()
    _serve_metrics(metrics, settings.metrics_port, settings.metrics_host)
    stop = threading.Event()
    _stop_on_signals(stop.set)
    options = ProduceOptions(
        rate=args.rate,
        count=args.count,
        duration_s=args.duration,
        seed=args.seed,
        fraud_rate=args.fraud_rate,
        label_delay_s=args.label_delay,
        label_coverage=args.label_coverage,
    )
    metrics.state.state("running")
    report = run_producer(settings, options, metrics, stop)
    print(
        f"produced {report.transactions} transactions ({report.frauds} fraud), "
        f"{report.labels} labels"
    )
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable, check_topics
    from infra.metrics import Metrics
    from infra.signing import verify_key
    from scorer.run import Scorer

    settings = _settings(args)
    verify_key(settings)  # no snapshot is read unverified: no start without the key
    check_reachable(settings)
    t = settings.topics
    check_topics(settings, [t.transactions, t.scores, t.transactions_dlq, t.model_updates])
    metrics = Metrics()
    port = settings.metrics_port if settings.metrics_port is not None else 9101
    _serve_metrics(metrics, port, settings.metrics_host)
    scorer = Scorer(settings, metrics)
    _stop_on_signals(scorer.stop)
    scorer.run()
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable, check_topics
    from infra.metrics import Metrics
    from infra.signing import require_signing_key, verify_key
    from trainer.run import Trainer
    from trainer.tracking import MlflowLogger

    settings = _settings(args)
    require_signing_key(settings, "the trainer")
    verify_key(settings)
    check_reachable(settings)
    t = settings.topics
    check_topics(settings, [t.scores, t.labels, t.labels_dlq, t.model_updates])
    metrics = Metrics()
    port = settings.metrics_port if settings.metrics_port is not None else 9102
    _serve_metrics(metrics, port, settings.metrics_host)
    params = {
        **{f"model.{k}": v for k, v in settings.model.model_dump().items()},
        "threshold": settings.scorer.threshold,
        "snapshot_every_labels": settings.trainer.snapshot_every_labels,
    }
    mlflow_logger = None if args.no_mlflow else MlflowLogger(settings, params)
    trainer = Trainer(settings, metrics, mlflow_logger)
    _stop_on_signals(trainer.stop)
    trainer.run()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from fraudstream.api.server import serve

    api = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serve(_settings(args, **({"api": api} if api else {})))
    return 0


def cmd_replay_labels(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable
    from producer.replay import replay_labels

    settings = _settings(args)
    if not args.file.is_file():
        raise UsageError(f"label file {args.file} does not exist")
    check_reachable(settings)
    report = replay_labels(args.file, settings, rate=args.rate, progress=not args.no_progress)
    for line, error in report.rejected:
        print(f"{args.file}:{line}: rejected: {error}", file=sys.stderr)
    print(f"sent {report.sent} labels, rejected {len(report.rejected)}")
    return 0 if report.ok else 1


def cmd_bench(args: argparse.Namespace) -> int:
    from fraudstream.benchmark.run import BenchOptions, run_bench
    from infra.broker import EmbeddedBroker
    from infra.kafka import check_reachable
    from infra.signing import with_run_keys

    # A self-contained run: a key pair of its own unless one is configured.
    settings = with_run_keys(_settings(args))
    options = BenchOptions(
        records=args.records,
        rounds=args.rounds,
        partitions=args.partitions,
        latency_s=args.latency_seconds,
        cards=args.cards,
        trainer_labels=args.trainer_labels,
        max_steal=args.max_steal,
        parts=tuple(args.only) if args.only else BenchOptions.parts,
    )
    broker = None
    if settings.embedded:
        broker = EmbeddedBroker()
        broker.start()
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
    try:
        check_reachable(settings)
        report = run_bench(settings, options, args.json)
    finally:
        if broker is not None:
            broker.stop()
    print(report.render())
    return 0


def cmd_warm_up(args: argparse.Namespace) -> int:
    from fraudstream.warm_up import warm_up

    kernels, elapsed = warm_up()
    missing = [k.name for k in kernels if k.signatures == 0]
    compiled = sum(k.compiled for k in kernels)
    loaded = sum(k.loaded for k in kernels)
    print(
        f"{len(kernels)} kernels ready in {elapsed:.1f} s: {compiled} signatures compiled, "
        f"{loaded} loaded from the cache"
    )
    if missing:
        raise UsageError("warm-up did not reach " + ", ".join(missing))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from evaluation.learners import LEARNERS
    from evaluation.report import ReportOptions
    from evaluation.run import EvaluateOptions, run_evaluation
    from evaluation.streams import StreamError

    settings = _settings(args)
    model = settings.model.model_copy(
        update={
            k: v
            for k, v in (("learning_rate", args.learning_rate), ("fraud_weight", args.fraud_weight))
            if v is not None
        }
    )
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
    from evaluation.live import LiveError, LiveOptions, run_live
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


def cmd_up(args: argparse.Namespace) -> int:
    from fraudstream.up import UpOptions, run_up

    settings = _settings(args)
    options = UpOptions(
        duration_s=args.duration,
        rate=args.rate,
        seed=args.seed,
        fraud_rate=args.fraud_rate,
        label_delay_s=args.label_delay,
        label_coverage=args.label_coverage,
        plain=args.plain or not sys.stdout.isatty(),
        run_dir=args.run_dir,
        config=args.config,
    )
    return run_up(settings, options)


def cmd_keys(args: argparse.Namespace) -> int:
    from infra.signing import key_id, parse_public_key, write_pair

    private, public = write_pair(args.out)
    kid = key_id(parse_public_key(public.read_text(), str(public)))
    print(f"signing key (trainer, rollback; keep it secret): {private}")
    print(f"verification key {kid} (scorers, trainer, MLflow model): {public}")
    print(
        f"set FRAUDSTREAM_SNAPSHOT_SIGNING_KEY_FILE={private} for the trainer and "
        f"FRAUDSTREAM_SNAPSHOT_VERIFY_KEY_FILE={public} for every reader"
    )
    return 0


def cmd_model(args: argparse.Namespace) -> int:
    from datetime import datetime

    from infra import registry

    settings = _settings(args)
    try:
        if args.model_command == "list":
            versions, aliases = registry.list_versions(settings)
            if not versions:
                print(
                    f"no versions of {registry.registry_name(settings)} at {settings.mlflow_uri()}"
                )
                return 0
            by_version: dict[str, list[str]] = {}
            for alias, version in aliases.items():
                by_version.setdefault(version, []).append(alias)
            head = ("version", "aliases", "snapshot", "labels", "roc_auc", "created", "origin")
            print("{:>7}  {:<12} {:>8} {:>9} {:>7}  {:<19}  {}".format(*head))
            for mv in versions:
                tags = mv.tags or {}
                auc = tags.get("metric.roc_auc")
                created = datetime.fromtimestamp(mv.creation_timestamp / 1000)
                print(
                    f"{mv.version:>7}  {','.join(by_version.get(str(mv.version), [])):<12} "
                    f"{'v' + tags.get('snapshot_version', '?'):>8} "
                    f"{tags.get('labels_learned', '?'):>9} "
                    f"{float(auc) if auc else float('nan'):>7.3f}  "
                    f"{created:%Y-%m-%d %H:%M:%S}  {tags.get('origin', '?')}"
                )
            return 0
        from infra.kafka import check_reachable, check_topics
        from infra.signing import require_signing_key, verify_key

        require_signing_key(settings, "`fraudstream model rollback` republishes a version and")
        verify_key(settings)
        check_reachable(settings)
        check_topics(settings, [settings.topics.model_updates])
        snapshot = registry.rollback(settings, args.version)
    except registry.RegistryError as exc:
        raise UsageError(str(exc)) from None
    except Exception as exc:
        if type(exc).__module__.startswith("mlflow"):
            raise UsageError(f"MLflow at {settings.mlflow_uri()}: {exc}") from None
        raise
    print(
        f"rolled back to registry version {args.version}: published as snapshot "
        f"v{snapshot.version} on {settings.topics.model_updates}; "
        f"{settings.registry.champion_alias} -> {args.version}"
    )
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "up": cmd_up,
    "broker": cmd_broker,
    "topics": cmd_topics_create,
    "produce": cmd_produce,
    "score": cmd_score,
    "train": cmd_train,
    "replay-labels": cmd_replay_labels,
    "bench": cmd_bench,
    "api": cmd_api,
    "evaluate": cmd_evaluate,
    "warm-up": cmd_warm_up,
    "model": cmd_model,
    "keys": cmd_keys,
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
