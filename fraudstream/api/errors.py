"""Every error the API answers is one JSON shape: {"error": code, "detail": text, ...}."""

from __future__ import annotations

from typing import Any

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from core.codec import DecodeError
from core.errors import FraudstreamError


class ApiError(FraudstreamError):
    """An answer other than success, with a stable `code` callers can branch on."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        headers: dict[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.headers = headers or {}
        self.extra = extra

    def response(self) -> JSONResponse:
        body = {"error": self.code, "detail": self.detail, **self.extra}
        return JSONResponse(body, status_code=self.status, headers=self.headers)


def invalid_body(exc: DecodeError, what: str, prefix: str = "") -> ApiError:
    """422 from a wire-contract decode error, with the field when there is one (the reasons
    are those the DLQ headers carry: empty, too_large, not_json, not_object, invalid)."""
    field = None
    if exc.reason == "invalid" and ": " in exc.detail:
        field = exc.detail.split(": ", 1)[0]
    extra: dict[str, Any] = {"reason": exc.reason}
    if field is not None:
        extra["field"] = prefix + field
    return ApiError(422, f"invalid_{what}", f"{prefix}{exc.detail}", **extra)


async def _api_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
    return JSONResponse(
        {"error": code, "detail": str(exc.detail)},
        status_code=exc.status_code,
        headers=getattr(exc, "headers", None),
    )


async def _validation_error(_request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    err = exc.errors()[0]
    field = ".".join(str(p) for p in err["loc"])
    return JSONResponse(
        {"error": "invalid_request", "detail": f"{field}: {err['msg']}", "field": field},
        status_code=422,
    )


HANDLERS = {
    ApiError: _api_error,
    StarletteHTTPException: _http_error,
    RequestValidationError: _validation_error,
}
