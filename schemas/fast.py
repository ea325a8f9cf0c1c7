"""Fast paths from bytes to a validated transaction (the scorer) or label (the trainer), with
msgspec (~4x pydantic).

pydantic (`schemas.models.Transaction`) stays the definition of the contract. A record that
msgspec rejects goes through pydantic, so it is rejected with the codec's reason, or
accepted if it was valid in a form msgspec does not take; `tests/test_fast_decode.py`
checks on generated input that whatever msgspec accepts, pydantic accepts with equal values.
The same holds for labels (`schemas.models.Label`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, TypeVar

import msgspec

from schemas.codec import MAX_RECORD_BYTES, decode_label, decode_transaction
from schemas.models import MAX_AMOUNT, MAX_STR

T = TypeVar("T")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STR)]
_Opt = Annotated[str, msgspec.Meta(max_length=MAX_STR)] | None
# msgspec parses RFC 3339 in C (a third of the cost of a regex check plus fromisoformat), and
# requires a zone, like pydantic's AwareDatetime. One difference remains: a fraction with more
# than 6 digits is rounded to the microsecond, where pydantic truncates it (at most 1 us).
_Stamp = Annotated[datetime, msgspec.Meta(tz=True)]


class FastTransaction(msgspec.Struct, gc=False):
    """Same fields and rules as `schemas.models.Transaction`."""

    transaction_id: _Id
    card_id: _Id
    amount: Annotated[float, msgspec.Meta(ge=0.0, le=MAX_AMOUNT)]
    merchant_category: _Id
    timestamp: _Stamp
    currency: _Opt = None
    merchant_id: _Opt = None
    country: _Opt = None
    channel: _Opt = None


_decoder = msgspec.json.Decoder(FastTransaction)
# For a loop that calls msgspec itself (the scorer): records it rejects, or longer than
# MAX_RECORD_BYTES, must then go through `decode_transaction_fast`.
TRANSACTION_DECODER = _decoder


def _try_fast(decoder: msgspec.json.Decoder[T], raw: bytes | None) -> T | None:
    """The record if msgspec takes it, else None (the caller asks pydantic for the reason)."""
    if raw and len(raw) <= MAX_RECORD_BYTES:
        try:
            return decoder.decode(raw)
        except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError, RecursionError):
            pass  # (invalid UTF-8 inside a string: UnicodeDecodeError; deep nesting: Recursion)
    return None


def decode_transaction_fast(raw: bytes | None) -> FastTransaction:
    """A validated transaction; raises `schemas.DecodeError` exactly as the codec does."""
    fast = _try_fast(_decoder, raw)
    if fast is not None:
        return fast
    tx = decode_transaction(raw)  # the precise reason, or a valid record in a rarer form
    return FastTransaction(
        tx.transaction_id,
        tx.card_id,
        tx.amount,
        tx.merchant_category,
        tx.timestamp,
        tx.currency,
        tx.merchant_id,
        tx.country,
        tx.channel,
    )


class FastLabel(msgspec.Struct, gc=False):
    """Same fields and rules as `schemas.models.Label`."""

    transaction_id: _Id
    is_fraud: bool  # JSON true / false only, as pydantic's strict bool
    labeled_at: _Stamp | None = None
    source: _Opt = None


_label_decoder = msgspec.json.Decoder(FastLabel)


def decode_label_fast(raw: bytes | None) -> FastLabel:
    """A validated label; raises `schemas.DecodeError` exactly as the codec does."""
    fast = _try_fast(_label_decoder, raw)
    if fast is not None:
        return fast
    label = decode_label(raw)  # the precise reason, or a valid record in a rarer form
    return FastLabel(label.transaction_id, label.is_fraud, label.labeled_at, label.source)
