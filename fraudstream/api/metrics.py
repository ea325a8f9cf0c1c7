"""Prometheus metrics of the API, on a registry of its own (served at /metrics)."""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Enum, Gauge, Histogram
from starlette.applications import Starlette
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from infra.metrics import PROCESS_STATES

# Seconds; the POST /v1/transactions deadline (default 0.5 s) sits inside the range.
BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.5, 5.0, 10.0)


class ApiMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        # As every fraudstream process: `fraudstream up`'s live view waits for `running`.
        self.state = Enum(
            "fraudstream_process_state",
            "What the process is doing: starting, running (serving requests), stopping",
            states=list(PROCESS_STATES),
            registry=self.registry,
        )
        self.requests = Counter(
            "fraudstream_api_requests_total",
            "HTTP requests answered, by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fraudstream_api_request_seconds",
            "Time to answer an HTTP request, by route template, method and status",
            ["route", "method", "status"],
            buckets=BUCKETS,
            registry=self.registry,
        )
        self.score_replies = Counter(
            "fraudstream_api_score_replies_total",
            "POST /v1/transactions outcomes: scored (Score in time), deadline (202), nowait",
            ["outcome"],
            registry=self.registry,
        )
        self.pending = Gauge(
            "fraudstream_api_pending_scores",
            "Requests waiting for their Score on this replica",
            registry=self.registry,
        )


def route_of(app: Starlette, scope: Scope) -> str:
    """The route template (`/v1/scores/{transaction_id}`), never the raw path: one series
    per route, not per transaction id."""
    for route in app.router.routes:
        match, _ = route.matches(scope)
        if match == Match.FULL:
            return str(getattr(route, "path", "other"))
    return "unmatched"


class MeasureRequests:
    """ASGI middleware: counts and times every request, 413s and 500s included."""

    def __init__(self, app: ASGIApp, metrics: ApiMetrics, routes: Starlette) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            labels = (route_of(self.routes, scope), scope["method"], str(status))
            self.metrics.requests.labels(*labels).inc()
            self.metrics.latency.labels(*labels).observe(time.perf_counter() - started)
