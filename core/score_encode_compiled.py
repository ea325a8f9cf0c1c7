"""Score records written by one compiled loop per batch: the scorer's fast encoder.

Python makes a handful of calls per batch, not tens of objects per record (tokens, list
slots, reason fragments, as the batch encoder in `core/score_encode.py` builds): orjson escapes
the strings and formats the probabilities of the whole batch at once, and a Numba loop
copies those tokens into one buffer between constant pieces, writes the features and reasons
as fixed-point decimals, picks the top reasons, and ends each record with a newline, so one
`split` yields the records.

Features are rounded to 6 decimals before scoring (`round_features`), so the text is exactly
what the model saw. `tests/test_score_encode_compiled_mirror.py` checks every record parses to
what the reference encoder (`ScoreEncoder.encode`) writes, hostile strings included.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import numba
import numpy as np
import orjson

from core.features import DENSE_FEATURES
from core.vocabulary import ONE_HOT

# Beyond this magnitude 6-decimal digits are not exact in a double: such batches fall back.
FIXED_LIMIT = 9e9
_SCALE = 1e6
_COMMA, _QUOTE, _BACKSLASH, _NEWLINE = 44, 34, 92, 10
# Constant pieces, in this order (indexes into the constant table).
_OPEN, _CARD, _SCORE, _TRUE, _FALSE, _AFTER_FLAG, _FEATURES, _REASONS = range(8)
_REASON_OPEN, _REASON_VALUE, _SHADOW, _CLOSE_REASONS, _END = range(8, 13)
_MERCHANT, _CATEGORY, _COUNTRY, _NULL = range(13, 17)


def round_features(dense: np.ndarray) -> bool:
    """Round every feature to 6 decimals in place (what the Score will carry, so what the
    model must score). False, with `dense` untouched, if a value is non-finite or too large."""
    if dense.size and not (np.abs(dense) < FIXED_LIMIT).all():
        return False
    np.floor(dense * _SCALE + 0.5, out=dense)
    dense /= _SCALE
    return True


# "00", "01", ... "99": two digits per lookup instead of one division per digit.
_PAIRS = np.frombuffer("".join(f"{i:02d}" for i in range(100)).encode(), dtype=np.uint8).copy()


# Byte loops, inlined: for pieces of a few dozen bytes they are 2-3x faster than numba's
# slice assignment (which checks overlap and dispatches per call).
@numba.njit(cache=True, nogil=True, inline="always")
def _put(out: np.ndarray, op: int, table: np.ndarray, ends: np.ndarray, i: int) -> int:
    for c in range(ends[i - 1] if i > 0 else 0, ends[i]):
        out[op] = table[c]
        op += 1
    return op


@numba.njit(cache=True, nogil=True, inline="always")
def _quoted(out: np.ndarray, op: int, src: np.ndarray, start: int, end: int) -> int:
    """Write src[start:end] (JSON string content, already escaped) between quotes."""
    out[op] = _QUOTE
    op += 1
    for c in range(start, end):
        out[op] = src[c]
        op += 1
    out[op] = _QUOTE
    return op + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _nullable(
    out: np.ndarray,
    op: int,
    src: np.ndarray,
    span: np.ndarray,
    const: np.ndarray,
    const_ends: np.ndarray,
) -> int:
    """A quoted string src[start:end], or null where the span is unset (start < 0)."""
    if span[0] < 0:
        return _put(out, op, const, const_ends, _NULL)
    return _quoted(out, op, src, span[0], span[1])


@numba.njit(cache=True, nogil=True, inline="always")
def _number(out: np.ndarray, op: int, src: np.ndarray, sp: int) -> tuple[int, int]:
    """Copy the number token at src[sp] up to the next separator; skip the separator."""
    while True:
        c = src[sp]
        if c == _COMMA or c == 93:  # ]
            break
        out[op] = c
        op += 1
        sp += 1
    return op, sp + 1


@numba.njit(cache=True, nogil=True, inline="always")
def _pair(out: np.ndarray, op: int, v: np.uint64) -> None:
    i = np.intp(v) * 2
    out[op] = _PAIRS[i]
    out[op + 1] = _PAIRS[i + 1]


@numba.njit(cache=True, nogil=True, inline="always")
def _fixed(out: np.ndarray, op: int, x: float) -> int:
    """x with 6 decimals, trailing zeros dropped (one kept): '-12.5', '0.0', '3.000001'.

    Unsigned arithmetic throughout: division by a constant then compiles to a multiply (the
    signed, Python-semantics version is twice as slow)."""
    v = np.floor(x * _SCALE + 0.5)
    if v < 0.0:
        out[op] = 45  # -
        op += 1
        v = -v
    d = np.uint64(v)
    million = np.uint64(1000000)
    hundred = np.uint64(100)
    whole = d // million
    frac = d - whole * million
    if whole < np.uint64(10):
        out[op] = np.uint8(48) + np.uint8(whole)
        op += 1
    elif whole < hundred:
        _pair(out, op, whole)
        op += 2
    else:
        digits = 0
        t = whole
        while t > np.uint64(0):
            t //= np.uint64(10)
            digits += 1
        pos = op + digits
        while whole >= hundred:
            q = whole // hundred
            _pair(out, pos - 2, whole - q * hundred)
            pos -= 2
            whole = q
        if whole >= np.uint64(10):
            _pair(out, pos - 2, whole)
        else:
            out[pos - 1] = np.uint8(48) + np.uint8(whole)
        op += digits
    out[op] = 46  # .
    if frac == np.uint64(0):
        out[op + 1] = 48
        return op + 2
    a = frac // np.uint64(10000)
    rest = frac - a * np.uint64(10000)
    b = rest // hundred
    _pair(out, op + 1, a)
    _pair(out, op + 3, b)
    _pair(out, op + 5, rest - b * hundred)
    last = op + 6
    while out[last] == 48:  # frac > 0: a nonzero digit stops it
        last -= 1
    return last + 1


@numba.njit(cache=True, nogil=True)
def _write(
    out: np.ndarray,
    const: np.ndarray,
    const_ends: np.ndarray,
    arena: np.ndarray,
    id_spans: np.ndarray,
    card_spans: np.ndarray,
    entity_spans: np.ndarray,
    time_text: np.ndarray,
    time_len: np.ndarray,
    prob_text: np.ndarray,
    probs: np.ndarray,
    threshold: float,
    dense: np.ndarray,
    keys: np.ndarray,
    key_ends: np.ndarray,
    onehot: np.ndarray,
    names: np.ndarray,
    name_ends: np.ndarray,
    contrib: np.ndarray,
    sparse_contrib: np.ndarray,
    top: int,
    shadow_text: np.ndarray,
    shadow_names: np.ndarray,
    shadow_ends: np.ndarray,
) -> int:
    """Write every record of the batch into `out`; return the length written.

    Each record's transaction and card id are `arena[start:end]` of its row in `id_spans` /
    `card_spans` (escaped JSON string content), its merchant id, category and country the
    same by `entity_spans[i, 0..2]` (start < 0: null), its event time
    `time_text[i, :time_len[i]]`.
    `names` holds the quoted names of the dense features, then of the one-hot keys; `onehot`
    (n x 2) the name index of each record's one-hot keys (-1: none), `sparse_contrib` their
    contributions. Reasons: the `top` largest positive contributions, dense before one-hot
    on ties, with 6 decimals.
    """
    n, k = dense.shape
    n_shadow = shadow_ends.shape[0]
    pp = 1  # past the '[' of each orjson array
    sp = 1
    op = 0
    chosen = np.empty(max(top, 1), dtype=np.int64)
    chosen_v = np.empty(max(top, 1), dtype=np.float64)
    for i in range(n):
        op = _put(out, op, const, const_ends, _OPEN)
        op = _quoted(out, op, arena, id_spans[i, 0], id_spans[i, 1])
        op = _put(out, op, const, const_ends, _CARD)
        op = _quoted(out, op, arena, card_spans[i, 0], card_spans[i, 1])
        op = _put(out, op, const, const_ends, _MERCHANT)
        op = _nullable(out, op, arena, entity_spans[i, 0], const, const_ends)
        op = _put(out, op, const, const_ends, _CATEGORY)
        op = _nullable(out, op, arena, entity_spans[i, 1], const, const_ends)
        op = _put(out, op, const, const_ends, _COUNTRY)
        op = _nullable(out, op, arena, entity_spans[i, 2], const, const_ends)
        op = _put(out, op, const, const_ends, _SCORE)
        op, pp = _number(out, op, prob_text, pp)
        op = _put(out, op, const, const_ends, _TRUE if probs[i] >= threshold else _FALSE)
        op = _put(out, op, const, const_ends, _AFTER_FLAG)
        op = _quoted(out, op, time_text[i], 0, time_len[i])
        op = _put(out, op, const, const_ends, _FEATURES)
        for j in range(k):
            if j > 0:
                out[op] = _COMMA
                op += 1
            op = _put(out, op, keys, key_ends, j)
            op = _fixed(out, op, dense[i, j])
        for s in range(onehot.shape[1]):
            if onehot[i, s] >= 0:
                out[op] = _COMMA
                op += 1
                op = _put(out, op, names, name_ends, k + onehot[i, s])
                for c in (58, 49, 46, 48):  # :1.0
                    out[op] = c
                    op += 1
        op = _put(out, op, const, const_ends, _REASONS)
        # One pass keeps the `top` largest positive contributions, largest first; an equal
        # value does not pass an earlier feature (strict >), so dense stay before one-hot.
        written = 0
        if top > 0:
            for j in range(k + onehot.shape[1]):
                v = contrib[i, j] if j < k else sparse_contrib[i, j - k]
                if not v > 0.0:  # also skips NaN (no key)
                    continue
                if written == top and not v > chosen_v[top - 1]:
                    continue
                pos = written if written < top else top - 1
                while pos > 0 and v > chosen_v[pos - 1]:
                    chosen[pos] = chosen[pos - 1]
                    chosen_v[pos] = chosen_v[pos - 1]
                    pos -= 1
                chosen[pos] = j
                chosen_v[pos] = v
                if written < top:
                    written += 1
        for r in range(written):
            best = chosen[r]
            if r > 0:
                out[op] = _COMMA
                op += 1
            op = _put(out, op, const, const_ends, _REASON_OPEN)
            name = best if best < k else k + onehot[i, best - k]
            op = _put(out, op, names, name_ends, name)
            op = _put(out, op, const, const_ends, _REASON_VALUE)
            op = _fixed(out, op, min(chosen_v[r], FIXED_LIMIT))
            out[op] = 125  # }
            op += 1
        op = _put(out, op, const, const_ends, _CLOSE_REASONS)
        for c in range(n_shadow):
            op = _put(out, op, const, const_ends, _SHADOW) if c == 0 else op
            if c > 0:
                out[op] = _COMMA
                op += 1
            op = _put(out, op, shadow_names, shadow_ends, c)
            op, sp = _number(out, op, shadow_text, sp)
        if n_shadow:
            out[op] = 125  # }
            op += 1
        op = _put(out, op, const, const_ends, _END)
    return op


def _table(pieces: Sequence[bytes]) -> tuple[np.ndarray, np.ndarray]:
    blob = b"".join(pieces)
    ends = np.cumsum([len(p) for p in pieces]).astype(np.int64) if pieces else np.zeros(0, int)
    return np.frombuffer(blob, dtype=np.uint8).copy(), ends


def _array(blob: bytes) -> np.ndarray:
    return np.frombuffer(blob, dtype=np.uint8)


class ScoreWriter:
    """Writes batches of Score records; one-hot keys are named by their `ONE_HOT` ids."""

    def __init__(self, reasons: int = 3) -> None:
        self.top = reasons
        self._keys, self._key_ends = _table([orjson.dumps(n) + b":" for n in DENSE_FEATURES])
        self._names: list[bytes] = [orjson.dumps(n) for n in DENSE_FEATURES]
        self._name_table = _table(self._names)

    def _name_table_now(self) -> tuple[np.ndarray, np.ndarray]:
        """Quoted dense names, then every ONE_HOT key name (extended as keys appear)."""
        keys = ONE_HOT.names
        known = len(self._names) - len(DENSE_FEATURES)
        if known < len(keys):
            self._names.extend(orjson.dumps(k) for k in keys[known:])
            self._name_table = _table(self._names)
        return self._name_table

    def warm_up(self) -> None:
        """Load (or compile) the kernel now rather than on the first batch."""
        now = datetime.now(UTC)
        dense = np.zeros((1, len(DENSE_FEATURES)))
        self.write(["w"], ["w"], [now], np.zeros(1), 0.5, 0, now, dense, [()], dense, {})

    def write(
        self,
        transaction_ids: Sequence[str],
        card_ids: Sequence[str],
        event_times: Sequence[datetime],
        probs: np.ndarray,
        threshold: float,
        model_version: int,
        scored_at: datetime,
        dense: np.ndarray,
        sparse: Sequence[tuple[str, ...]] | np.ndarray,
        contrib: np.ndarray | None,
        sparse_weights: dict[str, float],
        challenger_scores: dict[str, np.ndarray] | None = None,
        entities: Sequence[Sequence[str | None]] | None = None,
    ) -> list[bytes]:
        """The batch's Score records as JSON, in input order, from Python values (`write_spans`
        does the work). `entities`: the merchant ids, categories and countries (three columns;
        None: all null). `dense` must have been through `round_features`; `sparse` holds each
        record's one-hot keys, as names or as an (n, 2) array of ONE_HOT ids (-1: none);
        `contrib` each dense feature's contribution to the logit (None: no reasons)."""
        n = len(transaction_ids)
        if n == 0:
            return []
        strings = StringArena()
        id_spans = strings.add_all(transaction_ids)
        card_spans = strings.add_all(card_ids)
        entity_spans = np.full((n, 3, 2), -1, dtype=np.int64)
        for c, column in enumerate(entities or ()):
            for i, value in enumerate(column):
                if value is not None:
                    entity_spans[i, c] = strings.add(value)
        time_text, time_len = event_time_text(event_times)
        return self.write_spans(
            strings.array(), id_spans, card_spans, time_text, time_len, probs, threshold,
            model_version, scored_at, dense, sparse, contrib, sparse_weights, challenger_scores,
            entity_spans,
        )  # fmt: skip

    def write_spans(
        self,
        arena: np.ndarray,
        id_spans: np.ndarray,
        card_spans: np.ndarray,
        time_text: np.ndarray,
        time_len: np.ndarray,
        probs: np.ndarray,
        threshold: float,
        model_version: int,
        scored_at: datetime,
        dense: np.ndarray,
        sparse: Sequence[tuple[str, ...]] | np.ndarray,
        contrib: np.ndarray | None,
        sparse_weights: dict[str, float],
        challenger_scores: dict[str, np.ndarray] | None = None,
        entity_spans: np.ndarray | None = None,
    ) -> list[bytes]:
        """As `write`, with the ids as (n, 2) [start, end) spans of escaped JSON string content
        in the byte array `arena` (the scorer passes the consumed records' own bytes), the
        merchant id, category and country as (n, 3, 2) spans (start < 0, or None: null), and
        the event times as canonical text rows (`event_time_text`)."""
        n = len(probs)
        if n == 0:
            return []
        if entity_spans is None:
            entity_spans = np.full((n, 3, 2), -1, dtype=np.int64)
        entity_spans = np.ascontiguousarray(entity_spans, dtype=np.int64)
        if isinstance(sparse, np.ndarray):
            onehot = np.ascontiguousarray(sparse, dtype=np.int64)
        else:
            onehot = np.full((n, 2), -1, dtype=np.int64)
            for i, keys in enumerate(sparse):
                for slot, key in enumerate(keys[:2]):
                    onehot[i, slot] = ONE_HOT.id_of(key)
        names, name_ends = self._name_table_now()
        top = self.top if contrib is not None else 0
        if contrib is None:
            contrib = np.zeros((n, dense.shape[1]))
        weights = np.array(
            [sparse_weights.get(key, 0.0) for key in ONE_HOT.names] or [0.0], dtype=np.float64
        )
        sparse_contrib = np.where(onehot >= 0, weights[np.maximum(onehot, 0)], np.nan)
        shadow = challenger_scores or {}
        shadow_text = (
            orjson.dumps(np.column_stack(list(shadow.values())).ravel(), option=_NUMPY)
            if shadow
            else b"[]"
        )
        shadow_names, shadow_ends = _table([orjson.dumps(name) + b":" for name in shadow])
        const, const_ends = _table(
            [
                b'{"transaction_id":',
                b',"card_id":',
                b',"score":',
                b',"flagged":true',
                b',"flagged":false',
                b',"threshold":'
                + orjson.dumps(float(threshold))
                + b',"model_version":'
                + orjson.dumps(int(model_version))
                + b',"event_time":',
                b',"scored_at":' + orjson.dumps(scored_at) + b',"features":{',
                b'},"reasons":[',
                b'{"feature":',
                b',"contribution":',
                b',"challenger_scores":{',
                b"]",
                b"}\n",
                b',"merchant_id":',
                b',"merchant_category":',
                b',"country":',
                b"null",
            ]
        )
        prob_text = orjson.dumps(np.ascontiguousarray(probs, dtype=np.float64), option=_NUMPY)
        per_record = (
            len(const)
            + len(self._keys)
            + dense.shape[1] * 20
            + 2 * (int(name_ends[-1]) + 8)
            + top * (int(name_ends[-1]) + 60)
            + len(shadow) * 8
            + 12  # the quotes of five strings, or a null
        )
        entity_len = entity_spans[:, :, 1] - entity_spans[:, :, 0]
        text = int(
            (id_spans[:, 1] - id_spans[:, 0]).sum()
            + (card_spans[:, 1] - card_spans[:, 0]).sum()
            + entity_len[entity_spans[:, :, 0] >= 0].sum()
        )
        capacity = (
            text + int(time_len.sum()) + len(prob_text) + len(shadow_text)
            + len(shadow_names) * n + n * per_record
        )  # fmt: skip
        out = np.empty(capacity, dtype=np.uint8)
        end = _write(
            out, const, const_ends, arena, id_spans, card_spans, entity_spans, time_text, time_len,
            _array(prob_text), np.ascontiguousarray(probs, dtype=np.float64), float(threshold),
            np.ascontiguousarray(dense), self._keys, self._key_ends, onehot, names, name_ends,
            np.ascontiguousarray(contrib, dtype=np.float64), sparse_contrib, top,
            _array(shadow_text), shadow_names, shadow_ends,
        )  # fmt: skip
        return out[:end].tobytes().split(b"\n")[:n]


# Canonical event-time text: what orjson writes for the datetime (UTC as "Z"), unquoted.
TIME_WIDTH = 32


def event_time_text(times: Sequence[datetime]) -> tuple[np.ndarray, np.ndarray]:
    """(n, TIME_WIDTH) rows of each time's Score text and their lengths."""
    text = np.zeros((len(times), TIME_WIDTH), dtype=np.uint8)
    lengths = np.zeros(len(times), dtype=np.int64)
    for i, at in enumerate(times):
        raw = orjson.dumps(at, option=orjson.OPT_UTC_Z)[1:-1]
        text[i, : len(raw)] = np.frombuffer(raw, dtype=np.uint8)
        lengths[i] = len(raw)
    return text, lengths


class StringArena:
    """Python strings as escaped JSON string content in one byte array, by [start, end) span:
    how the writer takes ids that did not come straight from a consumed record."""

    def __init__(self, base: bytes = b"") -> None:
        self._pieces: list[bytes] = [base] if base else []
        self._size = len(base)

    def add(self, value: str) -> tuple[int, int]:
        raw = orjson.dumps(value)
        start = self._size + 1
        self._pieces.append(raw)
        self._size += len(raw)
        return start, self._size - 1

    def add_all(self, values: Sequence[str]) -> np.ndarray:
        spans = np.empty((len(values), 2), dtype=np.int64)
        for i, value in enumerate(values):
            spans[i] = self.add(value)
        return spans

    def array(self) -> np.ndarray:
        return np.frombuffer(b"".join(self._pieces), dtype=np.uint8)


_NUMPY = orjson.OPT_SERIALIZE_NUMPY
