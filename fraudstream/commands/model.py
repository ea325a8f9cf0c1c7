"""`fraudstream model list` and `fraudstream model rollback VERSION`: the MLflow Model Registry."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from fraudstream.commands.args import UsageError, add_common, positive, settings_for

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers


def add_parsers(sub: Subparsers) -> None:
    model = sub.add_parser("model", help="the MLflow Model Registry: list versions, roll back")
    msub = model.add_subparsers(dest="model_command", required=True, metavar="ACTION")
    mlist = msub.add_parser("list", help="registry versions, newest first, with their lineage")
    add_common(mlist)
    rollback = msub.add_parser(
        "rollback",
        help="serve an earlier registry version again: scorers load it at once, the trainer "
        "learns on from it, the champion alias moves to it",
    )
    add_common(rollback)
    rollback.add_argument("version", type=positive(int), metavar="VERSION")


def cmd_model(args: argparse.Namespace) -> int:
    from datetime import datetime

    from infra import registry

    settings = settings_for(args)
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
