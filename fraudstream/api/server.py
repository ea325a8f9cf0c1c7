"""`fraudstream api`: checks the broker and topics, then serves the app with uvicorn."""

from __future__ import annotations

import logging

import uvicorn

from fraudstream.api.app import create_app
from infra.config import Settings
from infra.kafka import check_reachable, check_topics

log = logging.getLogger(__name__)


def serve(settings: Settings) -> None:
    check_reachable(settings)
    t = settings.topics
    check_topics(settings, [t.transactions, t.scores, t.labels, t.model_updates])
    if not settings.api.clients:
        log.warning("api.clients is empty: no caller can get a token (see README, HTTP API)")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.api.host,
        port=settings.api.port,
        # Logging is configured by the CLI; access lines would be one per request.
        log_config=None,
        access_log=False,
        server_header=False,
        # Slow clients must not hold a connection open for long.
        timeout_keep_alive=5,
    )
    server = uvicorn.Server(config)
    log.info("api on http://%s:%d (docs at /docs)", settings.api.host, settings.api.port)
    server.run()
