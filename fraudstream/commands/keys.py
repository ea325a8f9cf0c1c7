"""`fraudstream keys generate`: a new Ed25519 pair for signing and verifying snapshots."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

from fraudstream.commands.args import add_common

if TYPE_CHECKING:
    from fraudstream.commands.args import Subparsers


def add_parsers(sub: Subparsers) -> None:
    keys = sub.add_parser("keys", help="snapshot signing keys")
    ksub = keys.add_subparsers(dest="keys_command", required=True, metavar="ACTION")
    generate = ksub.add_parser(
        "generate",
        help="write a new Ed25519 pair: snapshot-signing.pem (the trainer's, mode 0600) and "
        "snapshot-verify.pem (every reader's)",
    )
    add_common(generate)
    generate.add_argument("--out", type=Path, default=Path("."), metavar="DIR")


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
