"""Credentials for the API that `fraudstream up` starts when none are configured: one client
`local` with every scope, its secret written to a file only the user can read (never
printed or logged)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import orjson

from fraudstream.api.auth import SCOPES, hash_secret
from infra.config import Settings

LOCAL_CLIENT = "local"


def local_credentials(settings: Settings, run_dir: Path) -> tuple[dict[str, str], str]:
    """The API process's extra environment, and a line telling the user how to log in."""
    if settings.api.clients:
        return {}, "clients: as configured (api.clients)"
    secret = secrets.token_urlsafe(24)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / "api-client-secret"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secret + "\n")
    # Its labels count as an investigator's, as the demo producer's do.
    clients = {
        LOCAL_CLIENT: {
            "secret_sha256": hash_secret(secret),
            "scopes": list(SCOPES),
            "label_source": "investigation",
        }
    }
    env = {"FRAUDSTREAM_API__CLIENTS": orjson.dumps(clients).decode()}
    if settings.api.token_key is None:
        env["FRAUDSTREAM_API__TOKEN_KEY"] = secrets.token_urlsafe(32)
    return env, f"client id {LOCAL_CLIENT!r}, secret in {path}"
