"""The FastAPI application: routes over the Kafka edge (publisher, score replies, model)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Annotated, Any

import orjson
from fastapi import FastAPI, Query, Request, Security
from fastapi.openapi.models import OAuthFlowClientCredentials, OAuthFlows
from fastapi.responses import JSONResponse, Response
from fastapi.security import OAuth2
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from core.codec import DecodeError, decode_label, decode_transaction, encode
from core.contracts import Label
from fraudstream.api import examples
from fraudstream.api.auth import Authenticator, Caller
from fraudstream.api.docs import mount_docs
from fraudstream.api.errors import HANDLERS, ApiError, invalid_body
from fraudstream.api.limits import BodySizeLimit
from fraudstream.api.metrics import ApiMetrics, MeasureRequests
from fraudstream.api.model_info import ModelInfo, registry_lineage
from fraudstream.api.publisher import Publisher, PublishError
from fraudstream.api.replies import ScoreReplies
from infra.config import Settings

log = logging.getLogger(__name__)

OAUTH2 = OAuth2(
    flows=OAuthFlows(
        clientCredentials=OAuthFlowClientCredentials(
            tokenUrl="/token",
            scopes={
                "score": "score transactions, read scores",
                "label": "file fraud labels",
                "admin": "roll the model back",
            },
        )
    ),
    auto_error=False,
)


@dataclass
class Edge:
    """The Kafka side of the API, started and stopped with the application."""

    settings: Settings
    auth: Authenticator
    metrics: ApiMetrics
    publisher: Publisher | None = None
    replies: ScoreReplies | None = None
    model: ModelInfo | None = None
    registry_lineage: dict[int, dict[str, Any]] = field(default_factory=dict)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self.publisher = Publisher(self.settings).start()
        self.replies = ScoreReplies(self.settings).start(loop)
        self.model = ModelInfo(self.settings).start()

    def stop(self) -> None:
        if self.model is not None:
            self.model.stop()
        if self.replies is not None:
            self.replies.stop()
        if self.publisher is not None:
            self.publisher.close()


def edge_of(request: Request) -> Edge:
    edge: Edge = request.app.state.edge
    return edge


def require(scope: str | None) -> Callable[..., Awaitable[Caller]]:
    """A dependency: the verified caller holding `scope` (None: any scope)."""

    async def dependency(
        request: Request,
        _token: str | None = Security(OAUTH2, scopes=[scope] if scope else []),
    ) -> Caller:
        return edge_of(request).auth.caller(request, scope)

    return dependency


ScoreCaller = Annotated[Caller, Security(require("score"))]
LabelCaller = Annotated[Caller, Security(require("label"))]
AdminCaller = Annotated[Caller, Security(require("admin"))]
AnyCaller = Annotated[Caller, Security(require(None))]
Wait = Annotated[bool, Query(description="false: answer 202 as soon as published")]


class RollbackRequest(BaseModel):
    version: int = Field(ge=1, description="Model Registry version to serve again")


def _json(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(value), status, headers, media_type="application/json")


def create_app(settings: Settings) -> FastAPI:
    edge = Edge(settings, Authenticator(settings.api), ApiMetrics())

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        edge.metrics.state.state("starting")
        edge.start(asyncio.get_running_loop())
        edge.metrics.state.state("running")
        log.info("api ready for requests on %s", settings.bootstrap)
        try:
            yield
        finally:
            edge.metrics.state.state("stopping")
            edge.stop()

    app = FastAPI(
        title="fraudstream",
        version="1",
        summary="Score card transactions and file fraud labels over the fraudstream topics.",
        description=(
            "Get a token with `POST /token` (OAuth2 client credentials), then send it as "
            "`Authorization: Bearer <token>`. Scopes: `score`, `label`, `admin`. Every error "
            'is JSON: `{"error": code, "detail": reason, ...}`.'
        ),
        docs_url=None,
        redoc_url=None,
        lifespan=lifespan,
        exception_handlers=HANDLERS,  # type: ignore[arg-type]
    )
    app.state.edge = edge
    mount_docs(app)
    _routes(app, settings)
    app.add_middleware(BodySizeLimit, max_bytes=settings.api.max_body_bytes)
    app.add_middleware(MeasureRequests, metrics=edge.metrics, routes=app)
    return app


def _routes(app: FastAPI, settings: Settings) -> None:  # noqa: C901  one place lists them all
    topics = settings.topics
    api = settings.api

    @app.post(
        "/token",
        tags=["auth"],
        summary="Trade client credentials for a short-lived bearer token",
        openapi_extra=examples.TOKEN_BODY,
    )
    async def token(request: Request) -> JSONResponse:
        return JSONResponse(await edge_of(request).auth.issue(request))

    @app.post(
        "/v1/transactions",
        tags=["scoring"],
        summary="Score one transaction",
        description=(
            "Validates the transaction with the wire contract, publishes it to the "
            "transactions topic and answers with its Score from the scores topic. Past "
            f"`api.deadline_ms` ({api.deadline_ms} ms) or with `wait=false` it answers 202 "
            "with where to fetch the Score later."
        ),
        openapi_extra=examples.TRANSACTION_BODY,
        responses={
            200: {
                "description": "The Score",
                "content": {"application/json": {"example": examples.SCORE}},
            },
            202: {"description": "Accepted; the Score is at `score_url` once scored"},
            422: {"description": "Not a valid transaction (`field` names the culprit)"},
        },  # fmt: skip
    )
    async def post_transaction(
        request: Request,
        caller: ScoreCaller,
        wait: Wait = True,
    ) -> Response:
        edge = edge_of(request)
        assert edge.publisher is not None and edge.replies is not None
        started = time.monotonic()
        try:
            tx = decode_transaction(await request.body())
        except DecodeError as exc:
            raise invalid_body(exc, "transaction") from None
        tid = tx.transaction_id
        accepted = _json(
            {"transaction_id": tid, "status": "accepted", "score_url": f"/v1/scores/{tid}"},
            202,
            {"Location": f"/v1/scores/{tid}"},
        )
        reply = edge.replies.expect(tid) if wait else None
        try:
            delivered = edge.publisher.publish(topics.transactions, tx.card_id.encode(), encode(tx))
            await _delivered(delivered)
            if reply is None:
                edge.metrics.score_replies.labels("nowait").inc()
                return accepted
            left = api.deadline_ms / 1000 - (time.monotonic() - started)
            try:
                value = await asyncio.wait_for(asyncio.shield(reply), max(left, 0.0))
            except TimeoutError:
                edge.metrics.score_replies.labels("deadline").inc()
                return accepted
            edge.metrics.score_replies.labels("scored").inc()
            return Response(value, 200, media_type="application/json")
        finally:
            if reply is not None:
                edge.replies.forget(tid, reply)

    @app.get(
        "/v1/scores/{transaction_id}",
        tags=["scoring"],
        summary="The Score of a transaction posted earlier",
        responses={
            200: {
                "description": "The Score",
                "content": {"application/json": {"example": examples.SCORE}},
            },
            404: {"description": "Not scored yet (retry), or older than this replica keeps"},
        },  # fmt: skip
    )
    async def get_score(request: Request, transaction_id: str, caller: ScoreCaller) -> Response:
        edge = edge_of(request)
        assert edge.replies is not None
        value = edge.replies.lookup(transaction_id)
        if value is None:
            raise ApiError(
                404,
                "score_not_found",
                f"no Score for {transaction_id!r} yet: not scored so far (retry shortly), or "
                f"older than the {api.score_cache} most recent Scores kept",
                retry_after_s=0.2,
            )
        return Response(value, 200, media_type="application/json")

    @app.post(
        "/v1/labels",
        tags=["labels"],
        summary="File one label, or a batch",
        description=(
            "Validated as the labels topic validates labels. `source` is the caller's "
            "`label_source`, else its client id (a `source` in the body is replaced). "
            "A batch is all or nothing: one "
            "invalid label refuses the whole batch (its index is in `field`)."
        ),
        status_code=202,
        openapi_extra=examples.LABEL_BODY,
        responses={422: {"description": "A label is invalid (`field` names it)"}},
    )
    async def post_labels(request: Request, caller: LabelCaller) -> Response:
        edge = edge_of(request)
        assert edge.publisher is not None
        labels = _parse_labels(await request.body(), api.max_batch_labels)
        client = settings.api.clients.get(caller.client_id)
        source = (client.label_source if client is not None else None) or caller.client_id
        stamped = [label.model_copy(update={"source": source}) for label in labels]
        futures = [
            edge.publisher.publish(topics.labels, label.transaction_id.encode(), encode(label))
            for label in stamped
        ]
        await _delivered(*futures)
        return _json({"accepted": len(stamped), "source": source}, 202)

    @app.get("/v1/model", tags=["model"], summary="The model the scorers serve")
    async def get_model(request: Request, caller: AnyCaller) -> Response:
        edge = edge_of(request)
        assert edge.model is not None
        current = edge.model.current
        if current is None:
            raise ApiError(
                503,
                "no_model",
                f"no model snapshot on {topics.model_updates} yet (the trainer publishes one "
                "once it has learned labels)",
            )
        return _json({**current, "registry": await _registry(edge, current)})

    @app.post(
        "/v1/model/rollback",
        tags=["model"],
        summary="Serve an earlier Model Registry version again (admin)",
        description="What `fraudstream model rollback VERSION` does.",
    )
    async def rollback(request: Request, body: RollbackRequest, caller: AdminCaller) -> Response:
        from infra import registry

        log.info("rollback to registry version %d requested by %s", body.version, caller.client_id)
        try:
            snapshot = await asyncio.to_thread(registry.rollback, settings, body.version)
        except registry.RegistryError as exc:
            raise ApiError(409, "rollback_refused", str(exc)) from None
        except Exception as exc:
            if type(exc).__module__.startswith("mlflow"):
                raise ApiError(502, "registry_unavailable", f"MLflow: {exc}") from None
            raise
        return _json(
            {
                "registry_version": body.version,
                "snapshot_version": snapshot.version,
                "topic": topics.model_updates,
            }
        )

    @app.get("/healthz", tags=["operations"], summary="The process is up")
    async def healthz() -> Response:
        return _json({"status": "ok"})

    @app.get(
        "/readyz",
        tags=["operations"],
        summary="Ready to serve: broker reachable, Score reader running, a model loaded",
    )
    async def readyz(request: Request) -> Response:
        edge = edge_of(request)
        assert edge.publisher is not None and edge.replies is not None and edge.model is not None
        checks = {
            "broker": await asyncio.to_thread(edge.publisher.broker_reachable),
            "score_reader": edge.replies.alive(),
            "model": edge.model.current is not None,
        }
        ready = all(checks.values())
        return _json(
            {"status": "ready" if ready else "not_ready", "checks": checks}, 200 if ready else 503
        )

    @app.get("/metrics", tags=["operations"], summary="Prometheus metrics")
    async def metrics(request: Request) -> Response:
        edge = edge_of(request)
        if edge.replies is not None:
            edge.metrics.pending.set(edge.replies.pending)
        return Response(generate_latest(edge.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def _delivered(*futures: asyncio.Future[None]) -> None:
    try:
        await asyncio.gather(*futures)
    except PublishError as exc:
        raise ApiError(
            503,
            "broker_unavailable",
            f"the broker did not take the record: {exc} (retry)",
            headers={"Retry-After": "1"},
        ) from None


def _parse_labels(raw: bytes, limit: int) -> list[Label]:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(422, "invalid_label", f"not JSON: {exc}", reason="not_json") from None
    if isinstance(body, dict) and "labels" in body:
        items = body["labels"]
        if not isinstance(items, list) or not items:
            raise ApiError(422, "invalid_label", "labels must be a non-empty list", field="labels")
        if len(items) > limit:
            raise ApiError(
                422,
                "invalid_label",
                f"{len(items)} labels in one batch, at most {limit}",
                field="labels",
            )
        prefixes = [f"labels.{i}." for i in range(len(items))]
    elif isinstance(body, dict):
        items, prefixes = [body], [""]
    else:
        raise ApiError(
            422,
            "invalid_label",
            'send a label object or {"labels": [...]}',
            reason="not_object",
        )
    out = []
    for item, prefix in zip(items, prefixes, strict=True):
        try:
            out.append(decode_label(orjson.dumps(item)))
        except DecodeError as exc:
            raise invalid_body(exc, "label", prefix) from None
    return out


async def _registry(edge: Edge, current: dict[str, Any]) -> dict[str, Any]:
    """The registry's view of the served snapshot, looked up once per snapshot version. A
    snapshot republished from the registry (rollback, warm start) names its version itself."""
    settings = edge.settings
    name = settings.registry.name or settings.model.name
    if not settings.registry.enabled:
        return {"name": name, "enabled": False}
    key = int(current["version"])
    if key not in edge.registry_lineage:
        try:
            found = await asyncio.wait_for(asyncio.to_thread(registry_lineage, settings, key), 5.0)
        except Exception as exc:  # noqa: BLE001  the registry is optional for serving
            return {"name": name, "version": None, "error": f"registry unavailable: {exc}"}
        if len(edge.registry_lineage) > 1000:
            edge.registry_lineage.clear()
        edge.registry_lineage[key] = found
    lineage = dict(edge.registry_lineage[key])
    if current["lineage"]["registry_version"] is not None:
        lineage["version"] = current["lineage"]["registry_version"]
    return {"name": name, **lineage}
