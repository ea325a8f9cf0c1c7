"""What the trainer reads of a Score when it arrives: its transaction id and, with maturation
on, its event time. The rest of the record is parsed (and checked) once, when it is learned."""

from __future__ import annotations

import orjson

from trainer.maturation import event_time_us

_TID_PREFIX = b'{"transaction_id":"'
# A Score is a few hundred bytes; its ids come from a transaction of at most 64 KiB. Larger
# records are not Scores, and the join buffer must not hold them.
MAX_SCORE_BYTES = 256 * 1024


def leading_tid(raw: bytes) -> str | None:
    """The transaction id of a Score that starts with it (as the scorer writes them), without
    parsing the rest; None when it does not, or the id has escapes: parse the whole record."""
    if not raw.startswith(_TID_PREFIX):
        return None
    end = raw.find(b'"', len(_TID_PREFIX))
    if end < 0:
        return None
    tid = raw[len(_TID_PREFIX) : end]
    if b"\\" in tid:
        return None
    try:
        return tid.decode()
    except UnicodeDecodeError:
        return None


def score_key(raw: bytes, with_event_time: bool) -> tuple[str, int] | str:
    """(transaction id, event time in microseconds; 0 unless `with_event_time`), or the
    dead-letter reason when `raw` is no usable Score: `too_large`, or `invalid_score` (not
    JSON, no string id, or, when the event time is wanted, none: it could never mature)."""
    if len(raw) > MAX_SCORE_BYTES:
        return "too_large"
    if not with_event_time:
        tid_fast = leading_tid(raw)  # fast path: our scorer writes the id first
        if tid_fast is not None:
            return tid_fast, 0
    try:
        record = orjson.loads(raw)
        tid = record["transaction_id"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return "invalid_score"
    if not isinstance(tid, str):
        return "invalid_score"
    if not with_event_time:
        return tid, 0
    event_us = event_time_us(record.get("event_time"))
    if event_us is None:
        return "invalid_score"
    return tid, event_us
