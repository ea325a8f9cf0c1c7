"""The one place bytes become validated models (or a precise, machine-readable error)."""

from __future__ import annotations

from typing import Any, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from core.contracts import Label, Score, Transaction
from core.errors import FraudstreamError

M = TypeVar("M", bound=BaseModel)

# Records larger than this are rejected before parsing: no transaction is 64 KiB.
MAX_RECORD_BYTES = 64 * 1024


class DecodeError(FraudstreamError, ValueError):
    """A record that cannot become a model. `reason` is a short stable code for metrics/DLQ."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def loads(raw: bytes | str) -> Any:
    return orjson.loads(raw)


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


def _first_error(exc: ValidationError) -> str:
    err = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in err["loc"]) or "<root>"
    return f"{loc}: {err['msg']}"


def decode(raw: bytes | None, model: type[M]) -> M:
    """Parse and validate one record value.

    Reasons: ``empty``, ``too_large``, ``not_json``, ``not_object``, ``invalid``.
    """
    if not raw:
        raise DecodeError("empty", "record has no value")
    if len(raw) > MAX_RECORD_BYTES:
        raise DecodeError("too_large", f"{len(raw)} bytes > {MAX_RECORD_BYTES}")
    try:
        # pydantic parses JSON in Rust: one pass, no intermediate dict (the hot path).
        return model.model_validate_json(raw)
    except ValidationError as exc:
        err = exc.errors(include_url=False, include_input=False)[0]
        if err["type"] == "json_invalid":
            raise DecodeError("not_json", err["msg"]) from None
        if err["type"] == "model_type" and not err["loc"]:
            raise DecodeError("not_object", "JSON value is not an object") from None
        raise DecodeError("invalid", _first_error(exc)) from None


def decode_transaction(raw: bytes | None) -> Transaction:
    return decode(raw, Transaction)


def decode_label(raw: bytes | None) -> Label:
    return decode(raw, Label)


def decode_score(raw: bytes | None) -> Score:
    return decode(raw, Score)


def encode(model: BaseModel) -> bytes:
    return orjson.dumps(model.model_dump(mode="json", exclude_none=True))
