"""Bodies over `api.max_body_bytes` are refused with 413 before they are read whole: by their
Content-Length at once, or (chunked uploads) as soon as the bytes received pass the limit."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from core.errors import FraudstreamError
from fraudstream.api.errors import ApiError


class _TooLarge(FraudstreamError):
    pass


class BodySizeLimit:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _refusal(self, size: str) -> ApiError:
        return ApiError(
            413,
            "body_too_large",
            f"request body {size} bytes, the limit is {self.max_bytes} "
            "(send labels in smaller batches)",
            limit_bytes=self.max_bytes,
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    await ApiError(
                        400, "bad_content_length", "Content-Length is not a number"
                    ).response()(scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await self._refusal(value.decode()).response()(scope, receive, send)
                    return
        received = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await self._refusal(f"over {self.max_bytes}").response()(scope, receive, send)
