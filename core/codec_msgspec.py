"""msgspec decoders of the contracts (~4x pydantic): transactions (the scorer), labels and
the learning fields of Scores (the trainer).

pydantic (`core.contracts.Transaction`) stays the definition of the contract. A record that
msgspec rejects goes through pydantic, so it is rejected with the codec's reason, or
accepted if it was valid in a form msgspec does not take; `tests/test_codec_msgspec_mirror.py`
checks on generated input that whatever msgspec accepts, pydantic accepts with equal values.
The same holds for labels (`core.contracts.Label`).
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Annotated, Any, TypeVar

import msgspec

from core.codec import MAX_RECORD_BYTES, decode_label, decode_transaction
from core.contracts import MAX_AMOUNT, MAX_STR

T = TypeVar("T")

_Id = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_STR)]
_Opt = Annotated[str, msgspec.Meta(max_length=MAX_STR)] | None
# msgspec parses RFC 3339 in C (a third of the cost of a regex check plus fromisoformat), and
# requires a zone, like pydantic's AwareDatetime. One difference remains: a fraction with more
# than 6 digits is rounded to the microsecond, where pydantic truncates it (at most 1 us).
_Stamp = Annotated[datetime, msgspec.Meta(tz=True)]


class FastTransaction(msgspec.Struct, gc=False):
    """Same fields and rules as `core.contracts.Transaction`."""

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
    """A validated transaction; raises `core.codec.DecodeError` exactly as the codec does."""
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
    """Same fields and rules as `core.contracts.Label`."""

    transaction_id: _Id
    is_fraud: bool  # JSON true / false only, as pydantic's strict bool
    labeled_at: _Stamp | None = None
    source: _Opt = None


_label_decoder = msgspec.json.Decoder(FastLabel)


def decode_label_fast(raw: bytes | None) -> FastLabel:
    """A validated label; raises `core.codec.DecodeError` exactly as the codec does."""
    fast = _try_fast(_label_decoder, raw)
    if fast is not None:
        return fast
    label = decode_label(raw)  # the precise reason, or a valid record in a rarer form
    return FastLabel(label.transaction_id, label.is_fraud, label.labeled_at, label.source)


# Scores, as the trainer reads them: only the fields it learns from (the others are skipped).
# A quarter faster than `orjson.loads` of the whole record, and it checks that every feature
# is a number, which is what lets the trainer hand the features to the compiled learner
# (`core.learner_compiled`). A Score it does not take (a feature that is null, a string, a
# bool; no `features` object) gives None: the trainer then parses it with orjson and learns
# it through River.


class ScoreFields(msgspec.Struct, gc=False):
    # JSON integers are taken too, as floats: the same arithmetic as River does on them.
    features: dict[str, float]
    score: Any = None  # the score served (the guardrails check it is a finite number)
    event_time: Any = None  # parsed only when needed (trainer.maturation.event_time_us)
    # What the label-fed state is keyed by (checked to be strings when used).
    merchant_id: Any = None
    merchant_category: Any = None
    country: Any = None


_score_decoder = msgspec.json.Decoder(ScoreFields)


def decode_score_fields(raw: bytes) -> ScoreFields | None:
    """The Score's features (numbers only), served score and event time; None otherwise."""
    try:
        return _score_decoder.decode(raw)
    except (msgspec.MsgspecError, UnicodeDecodeError, RecursionError):  # RecursionError: nesting
        return None


# Bounds on what a Score may ask the model to learn. The scorer writes 20 dense features and
# at most 2 one-hot keys (of at most 101 values each), every value finite and at most 1e9 in
# size (the amount): anything beyond these bounds did not come from a scorer.
MAX_FEATURES = 256  # per Score
MAX_FEATURE_KEY = 128  # characters of a feature name
MAX_MODEL_FEATURES = 4096  # distinct feature names the model learns weights for
MAX_FEATURE_VALUE = 1e12  # |value|


def features_error(features: dict[str, Any], known: set[str]) -> str | None:
    """Why these features must not be learned (a reason code), or None. New names are added
    to `known`, the names learned so far, until it holds MAX_MODEL_FEATURES. C-level passes
    over the dict: no Python work per feature."""
    n = len(features)
    if n > MAX_FEATURES:
        return "too_many_features"
    if not n:
        return "no_features"
    try:
        if max(map(len, features)) > MAX_FEATURE_KEY:
            return "feature_name_too_long"
        values = features.values()
        if not all(map(math.isfinite, values)):
            return "feature_not_finite"
        if max(map(abs, values)) > MAX_FEATURE_VALUE:
            return "feature_too_large"
    except (TypeError, OverflowError):  # a value that is not a number, or a huge integer
        return "feature_not_a_number"
    if not known.issuperset(features):
        if len(known) + n > MAX_MODEL_FEATURES:
            return "too_many_features"
        known.update(features)
    return None
