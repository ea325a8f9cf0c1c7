"""The long-running processes: `produce`, `score`, `train` and `api`."""

from __future__ import annotations

import argparse
import threading
from typing import TYPE_CHECKING

from fraudstream.commands.args import (
    add_common,
    add_metrics_port,
    fraction,
    non_negative_duration,
    port_number,
    positive,
    positive_duration,
    serve_metrics,
    settings_for,
    stop_on_signals,
)

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers
    from infra.config import Settings
    from infra.metrics import Metrics


def add_parsers(sub: Subparsers) -> None:
    produce = sub.add_parser("produce", help="publish synthetic transactions and their labels")
    add_common(produce)
    add_metrics_port(produce, "default: off")
    produce.add_argument("--rate", type=positive(float), default=1000.0, help="transactions/s")
    produce.add_argument("--count", type=positive(int), help="stop after N transactions")
    produce.add_argument("--duration", type=positive_duration, metavar="T")
    produce.add_argument("--seed", type=int, default=42)
    produce.add_argument("--fraud-rate", type=fraction, default=0.01)
    produce.add_argument("--label-delay", type=non_negative_duration, default=5.0, metavar="T")
    produce.add_argument("--label-coverage", type=fraction, default=1.0)

    score = sub.add_parser("score", help="run one scorer instance")
    add_common(score)
    add_metrics_port(score, "default: $FRAUDSTREAM_METRICS_PORT, else 9101")

    train = sub.add_parser("train", help="run the trainer (single writer of the model)")
    add_common(train)
    add_metrics_port(train, "default: $FRAUDSTREAM_METRICS_PORT, else 9102")
    train.add_argument("--no-mlflow", action="store_true", help="do not log to MLflow")

    api = sub.add_parser("api", help="serve the HTTP API (score, label, model) over the topics")
    add_common(api)
    api.add_argument("--host", help="listen address (default: settings api.host, 127.0.0.1)")
    api.add_argument(
        "--port", type=port_number, help="listen port (default: settings api.port, 8000)"
    )


def cmd_produce(args: argparse.Namespace) -> int:
    from infra.kafka import check_reachable
    from infra.metrics import Metrics
    from producer.run import ProduceOptions, run_producer

    settings = settings_for(args)
    check_reachable(settings)
    metrics = Metrics()
    serve_metrics(metrics, settings.metrics_port, settings.metrics_host)
    stop = threading.Event()
    stop_on_signals(stop.set)
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
    from infra.signing import verify_key
    from scorer.run import Scorer

    settings = settings_for(args)
    verify_key(settings)  # no snapshot is read unverified: no start without the key
    t = settings.topics
    metrics = _ready(
        settings, [t.transactions, t.scores, t.transactions_dlq, t.model_updates], 9101
    )
    scorer = Scorer(settings, metrics)
    stop_on_signals(scorer.stop)
    scorer.run()
    return 0


def _ready(settings: Settings, topics: list[str], default_port: int) -> Metrics:
    """Check the cluster and the topics a process needs, then serve its metrics."""
    from infra.kafka import check_reachable, check_topics
    from infra.metrics import Metrics

    check_reachable(settings)
    check_topics(settings, topics)
    metrics = Metrics()
    port = settings.metrics_port if settings.metrics_port is not None else default_port
    serve_metrics(metrics, port, settings.metrics_host)
    return metrics


def cmd_train(args: argparse.Namespace) -> int:
    from infra.signing import require_signing_key, verify_key
    from trainer.run import Trainer
    from trainer.tracking import MlflowLogger

    settings = settings_for(args)
    require_signing_key(settings, "the trainer")
    verify_key(settings)
    t = settings.topics
    metrics = _ready(settings, [t.scores, t.labels, t.labels_dlq, t.model_updates], 9102)
    params = {
        **{f"model.{k}": v for k, v in settings.model.model_dump().items()},
        "threshold": settings.scorer.threshold,
        "snapshot_every_labels": settings.trainer.snapshot_every_labels,
    }
    mlflow_logger = None if args.no_mlflow else MlflowLogger(settings, params)
    trainer = Trainer(settings, metrics, mlflow_logger)
    stop_on_signals(trainer.stop)
    trainer.run()
    return 0


def cmd_api(args: argparse.Namespace) -> int:
    from fraudstream.api.server import serve

    api = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    serve(settings_for(args, **({"api": api} if api else {})))
    return 0
