"""Raw transaction records to columns in one compiled loop: the scorer's fast decode path.

`parse_transactions` reads a batch of records (concatenated bytes plus end offsets) and fills
columns: amount, event time (epoch seconds and the canonical text the Score carries), and the
[start, end) spans of every string field inside the buffer, so no Python object is made per
record.

Contract: `ok[i]` is True only for records in a strict subset of what
`core.codec_msgspec.TRANSACTION_DECODER` (msgspec) accepts, and then every column equals what that
decode gives (amount bit for bit, `ts == tx.timestamp.timestamp()`, strings, and the time text
equal to `orjson.dumps(tx.timestamp, option=orjson.OPT_UTC_Z)[1:-1]`). Any other record, valid
in a rarer form or invalid, gets `ok[i]` False, and the caller decodes it the existing way
(msgspec, then pydantic for the reason). The subset is what producers write:

- one JSON object, JSON whitespace (space, tab, LF, CR) around tokens, nothing after it;
  1..max_record_bytes bytes;
- only the nine field names, each at most once, keys without escapes (msgspec ignores unknown
  keys and keeps the last of duplicates: both fall back here);
- string values of printable ASCII (0x20..0x7E) without backslash, so no escapes; required ids
  1..MAX_STR long, optional ones 0..MAX_STR or `null`;
- amount: canonical JSON number without sign or exponent, mantissa < 10**15 and at most 22
  fraction digits, so mantissa / 10**k is one correctly rounded division of exact doubles,
  equal to msgspec's (correctly rounded) parse; value <= MAX_AMOUNT;
- timestamp: "YYYY-MM-DDTHH:MM:SS" [".f" with 1..6 digits] ("Z" | "+HH:MM" | "-HH:MM"),
  upper-case T and Z, fields range-checked, years 1970..2199 (so total microseconds stay below
  2**53 and float(us) / 1e6 is CPython's correctly rounded us / 10**6).

`tests/test_codec_compiled_mirror.py` checks this differentially against msgspec on generated valid,
near-valid and hostile records.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass

import numba
import numpy as np
from numba.core.errors import NumbaPerformanceWarning

from core.contracts import MAX_AMOUNT, MAX_STR

# String field columns (the second axis of `spans`).
TX_ID, CARD, CATEGORY, CURRENCY, MERCHANT, COUNTRY, CHANNEL = range(7)
N_STRINGS = 7
# Longest canonical time text: "YYYY-MM-DDTHH:MM:SS.ffffff+HH:MM".
TIME_WIDTH = 32

# Field codes: the string columns above, then these two.
_AMOUNT, _TIMESTAMP = 7, 8
_N_FIELDS = 9
_FIELD_NAMES = (
    "transaction_id",
    "card_id",
    "merchant_category",
    "currency",
    "merchant_id",
    "country",
    "channel",
    "amount",
    "timestamp",
)
_KEY_BYTES = np.frombuffer("".join(_FIELD_NAMES).encode(), dtype=np.uint8).copy()
_KEY_OFFSETS = np.cumsum([0] + [len(k) for k in _FIELD_NAMES]).astype(np.int64)
_REQUIRED = (1 << TX_ID) | (1 << CARD) | (1 << CATEGORY) | (1 << _AMOUNT) | (1 << _TIMESTAMP)
_OPTIONAL_STRINGS = (1 << CURRENCY) | (1 << MERCHANT) | (1 << COUNTRY) | (1 << CHANNEL)

# Exact doubles up to 10**22: mantissa / 10**k is then one correctly rounded operation.
_POW10 = np.array([10.0**k for k in range(23)], dtype=np.float64)
_MAX_FRACTION_DIGITS = 22
_MANTISSA_LIMIT = 10**15
_MIN_YEAR, _MAX_YEAR = 1970, 2199

_QUOTE, _BACKSLASH, _COMMA, _COLON, _DOT = 34, 92, 44, 58, 46
_OPEN, _CLOSE = 123, 125
_ZERO, _NINE = 48, 57


@dataclass(slots=True)
class WireColumns:
    """Columns for n records; rows with `ok` False have unspecified values."""

    ok: np.ndarray  # (n,) bool
    amount: np.ndarray  # (n,) float64
    ts: np.ndarray  # (n,) float64 epoch seconds
    spans: np.ndarray  # (n, N_STRINGS, 2) int64 [start, end) in buf; (-1, -1) null / absent
    time_text: np.ndarray  # (n, TIME_WIDTH) uint8 canonical event time, no quotes
    time_len: np.ndarray  # (n,) int64


@numba.njit(cache=True, nogil=True, inline="always")
def _skip_ws(buf: np.ndarray, p: int, e: int) -> int:
    while p < e:
        c = buf[p]
        if c == 32 or c == 10 or c == 13 or c == 9:
            p += 1
        else:
            break
    return p


@numba.njit(cache=True, nogil=True, inline="always")
def _string_end(buf: np.ndarray, p: int, e: int) -> int:
    """Index of the closing quote of the string whose opening quote is at p, or -1 if it
    holds anything but printable ASCII without backslash, or is not closed."""
    q = p + 1
    while q < e:
        c = buf[q]
        if c == _QUOTE:
            return q
        if c < 32 or c > 126 or c == _BACKSLASH:
            return -1
        q += 1
    return -1


@numba.njit(cache=True, nogil=True, inline="always")
def _field(buf: np.ndarray, a: int, b: int) -> int:
    """Field code of the key buf[a:b], or -1. The length picks the one candidate (the second
    byte among the three 7-byte names): a loop over all names cost half the parse."""
    n = b - a
    if n == 14:
        f = TX_ID
    elif n == 7:
        c = buf[a + 1]
        f = CARD if c == 97 else (COUNTRY if c == 111 else (CHANNEL if c == 104 else -1))
    elif n == 17:
        f = CATEGORY
    elif n == 8:
        f = CURRENCY
    elif n == 11:
        f = MERCHANT
    elif n == 6:
        f = _AMOUNT
    elif n == 9:
        f = _TIMESTAMP
    else:
        return -1
    if f < 0:
        return -1
    ks = _KEY_OFFSETS[f]
    for j in range(n):
        if buf[a + j] != _KEY_BYTES[ks + j]:
            return -1
    return f


@numba.njit(cache=True, nogil=True, inline="always")
def _number(buf: np.ndarray, p: int, e: int) -> tuple[float, int]:
    """(value, index after the number) of the amount at p, or (0.0, -1) outside the subset."""
    if p >= e:
        return 0.0, -1
    c = np.int64(buf[p])
    m = np.int64(0)
    if c == _ZERO:
        p += 1
        if p < e and _ZERO <= buf[p] <= _NINE:
            return 0.0, -1  # leading zero: not JSON
    elif _ZERO < c <= _NINE:
        while p < e and _ZERO <= buf[p] <= _NINE:
            m = m * 10 + (np.int64(buf[p]) - _ZERO)
            if m >= _MANTISSA_LIMIT:
                return 0.0, -1
            p += 1
    else:
        return 0.0, -1
    k = 0
    if p < e and buf[p] == _DOT:
        p += 1
        while p < e and _ZERO <= buf[p] <= _NINE:
            m = m * 10 + (np.int64(buf[p]) - _ZERO)
            k += 1
            if m >= _MANTISSA_LIMIT or k > _MAX_FRACTION_DIGITS:
                return 0.0, -1
            p += 1
        if k == 0:
            return 0.0, -1  # "1." is not JSON
    value = np.float64(m) / _POW10[k]
    if value > MAX_AMOUNT:
        return 0.0, -1
    return value, p


@numba.njit(cache=True, nogil=True, inline="always")
def _two(buf: np.ndarray, p: int) -> int:
    """The two decimal digits at p as a number, or -1."""
    a = np.int64(buf[p]) - _ZERO
    b = np.int64(buf[p + 1]) - _ZERO
    if a < 0 or a > 9 or b < 0 or b > 9:
        return -1
    return a * 10 + b  # type: ignore[return-value]  # a numpy int


@numba.njit(cache=True, nogil=True, inline="always")
def _days_from_civil(y: int, m: int, d: int) -> int:
    """Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm)."""
    if m <= 2:
        y -= 1
    era = y // 400
    yoe = y - era * 400
    mp = m - 3 if m > 2 else m + 9
    doy = (153 * mp + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


@numba.njit(cache=True, nogil=True, inline="always")
def _days_in_month(y: int, m: int) -> int:
    if m == 2:
        return 29 if (y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)) else 28
    if m == 4 or m == 6 or m == 9 or m == 11:
        return 30
    return 31


@numba.njit(cache=True, nogil=True, inline="always")
def _timestamp(buf: np.ndarray, a: int, b: int, text: np.ndarray, row: int) -> tuple[float, int]:
    """(epoch seconds, length of the canonical text written to `text`) for the timestamp
    content buf[a:b], or (0.0, -1) outside the subset."""
    n = b - a
    if n < 20 or n > TIME_WIDTH:
        return 0.0, -1
    if (
        buf[a + 4] != 45  # -
        or buf[a + 7] != 45
        or buf[a + 10] != 84  # T
        or buf[a + 13] != _COLON
        or buf[a + 16] != _COLON
    ):
        return 0.0, -1
    hi = _two(buf, a)
    lo = _two(buf, a + 2)
    month = _two(buf, a + 5)
    day = _two(buf, a + 8)
    hour = _two(buf, a + 11)
    minute = _two(buf, a + 14)
    second = _two(buf, a + 17)
    if hi < 0 or lo < 0 or month < 1 or month > 12 or day < 1:
        return 0.0, -1
    if hour < 0 or hour > 23 or minute < 0 or minute > 59 or second < 0 or second > 59:
        return 0.0, -1
    year = hi * 100 + lo
    if year < _MIN_YEAR or year > _MAX_YEAR or day > _days_in_month(year, month):
        return 0.0, -1
    q = a + 19
    micro = 0
    if buf[q] == _DOT:
        q += 1
        digits = 0
        while q < b and _ZERO <= buf[q] <= _NINE:
            micro = micro * 10 + (np.int64(buf[q]) - _ZERO)  # type: ignore[assignment]
            digits += 1
            q += 1
        if digits < 1 or digits > 6:
            return 0.0, -1  # msgspec rounds beyond 6 digits: leave that to it
        for _ in range(6 - digits):
            micro *= 10
    if q >= b:
        return 0.0, -1
    zone = buf[q]
    offset = 0  # seconds east of UTC
    if zone == 90:  # Z
        if q + 1 != b:
            return 0.0, -1
    elif zone == 43 or zone == 45:  # + -
        if q + 6 != b or buf[q + 3] != _COLON:
            return 0.0, -1
        oh = _two(buf, q + 1)
        om = _two(buf, q + 4)
        if oh < 0 or oh > 23 or om < 0 or om > 59:
            return 0.0, -1
        offset = oh * 3600 + om * 60
        if zone == 45:
            offset = -offset
    else:
        return 0.0, -1
    seconds = (
        _days_from_civil(year, month, day) * 86400 + hour * 3600 + minute * 60 + second - offset
    )
    us = np.int64(seconds) * 1000000 + micro
    # |us| < 2**53 for the accepted years: exact as a double, one correctly rounded division.
    epoch = np.float64(us) / 1e6
    # The text orjson writes: as given to the second, 6 fraction digits unless zero, and
    # "Z" for a zero offset (msgspec reads "+00:00" and "-00:00" as UTC).
    for j in range(19):
        text[row, j] = buf[a + j]
    t = 19
    if micro != 0:
        text[row, t] = _DOT
        v = micro
        for j in range(6, 0, -1):
            text[row, t + j] = _ZERO + v % 10
            v //= 10
        t += 7
    if offset == 0:
        text[row, t] = 90
        t += 1
    else:
        text[row, t] = zone
        for j in range(1, 6):
            text[row, t + j] = buf[q + j]
        t += 6
    return epoch, t


@numba.njit(cache=True, nogil=True, inline="always")
def _record(
    buf: np.ndarray,
    s: int,
    e: int,
    spans: np.ndarray,
    text: np.ndarray,
    row: int,
) -> tuple[bool, float, float, int]:
    """Parse buf[s:e] into spans (N_STRINGS, 2) and text; (ok, amount, ts, text length)."""
    for f in range(N_STRINGS):
        spans[row, f, 0] = -1
        spans[row, f, 1] = -1
    amount = 0.0
    ts = 0.0
    tlen = 0
    p = _skip_ws(buf, s, e)
    if p >= e or buf[p] != _OPEN:
        return False, amount, ts, tlen
    p = _skip_ws(buf, p + 1, e)
    seen = 0
    while True:
        if p >= e or buf[p] != _QUOTE:
            return False, amount, ts, tlen  # also rejects "{}" and a trailing comma
        q = _string_end(buf, p, e)
        if q < 0:
            return False, amount, ts, tlen
        f = _field(buf, p + 1, q)
        if f < 0 or (seen >> f) & 1 != 0:
            return False, amount, ts, tlen
        seen |= 1 << f
        p = _skip_ws(buf, q + 1, e)
        if p >= e or buf[p] != _COLON:
            return False, amount, ts, tlen
        p = _skip_ws(buf, p + 1, e)
        if p >= e:
            return False, amount, ts, tlen
        if f == _AMOUNT:
            amount, p = _number(buf, p, e)
            if p < 0:
                return False, amount, ts, tlen
        elif buf[p] == _QUOTE:
            q = _string_end(buf, p, e)
            if q < 0:
                return False, amount, ts, tlen
            if f == _TIMESTAMP:
                ts, tlen = _timestamp(buf, p + 1, q, text, row)
                if tlen < 0:
                    return False, amount, ts, tlen
            else:
                n = q - p - 1
                if n > MAX_STR or (n == 0 and (_OPTIONAL_STRINGS >> f) & 1 == 0):
                    return False, amount, ts, tlen
                spans[row, f, 0] = p + 1
                spans[row, f, 1] = q
            p = q + 1
        elif (
            (_OPTIONAL_STRINGS >> f) & 1 != 0
            and p + 4 <= e
            and buf[p] == 110  # n
            and buf[p + 1] == 117  # u
            and buf[p + 2] == 108  # l
            and buf[p + 3] == 108
        ):
            p += 4  # spans stay (-1, -1)
        else:
            return False, amount, ts, tlen
        p = _skip_ws(buf, p, e)
        if p >= e:
            return False, amount, ts, tlen
        if buf[p] == _COMMA:
            p = _skip_ws(buf, p + 1, e)
        elif buf[p] == _CLOSE:
            break
        else:
            return False, amount, ts, tlen
    if _skip_ws(buf, p + 1, e) != e or (seen & _REQUIRED) != _REQUIRED:
        return False, amount, ts, tlen
    return True, amount, ts, tlen


# parallel=True with no prange: nothing runs in parallel, but Numba's parallel pipeline compiles
# this loop to code about twice as fast, with the same columns (docs/performance.md). Numba
# warns that nothing was parallelised, which is the point.
PARALLEL_PIPELINE_WARNING = r"\s*The keyword argument 'parallel=True' was specified but no"


def configure_numba() -> None:
    """Process-wide Numba settings for this kernel; a process calls it once at start, before
    the kernel first runs (the scorer, `fraudstream warm-up`). Not done at import: settings of
    the whole process are the process's choice, not a library's.

    Loading the cached kernel starts Numba's thread pool (idle: nothing runs in parallel):
    the plain-pthreads pool, not GNU OpenMP's, which is not safe across fork(), unless
    NUMBA_THREADING_LAYER chooses another. And the parallel-pipeline warning is silenced."""
    warnings.filterwarnings("ignore", PARALLEL_PIPELINE_WARNING, NumbaPerformanceWarning)
    if "NUMBA_THREADING_LAYER" not in os.environ:
        numba.config.THREADING_LAYER = "workqueue"  # type: ignore[attr-defined]


@numba.njit(cache=True, nogil=True, parallel=True)
def parse_into(
    buf: np.ndarray,
    ends: np.ndarray,
    max_record_bytes: int,
    ok: np.ndarray,
    amount: np.ndarray,
    ts: np.ndarray,
    spans: np.ndarray,
    time_text: np.ndarray,
    time_len: np.ndarray,
) -> int:
    """The kernel: fill preallocated columns (shapes as in `WireColumns`) for the records
    buf[ends[i-1]:ends[i]]; returns how many rows are ok. Offsets outside buf, decreasing,
    or spanning an empty or too long record give ok False for that row."""
    size = buf.shape[0]
    count = 0
    start = 0
    for i in range(ends.shape[0]):
        end = ends[i]
        good = False
        if 0 <= start < end <= size and end - start <= max_record_bytes:
            good, value, epoch, tlen = _record(buf, start, end, spans, time_text, i)
            amount[i] = value
            ts[i] = epoch
            time_len[i] = tlen
        ok[i] = good
        if good:
            count += 1
        start = end
    return count


def parse_transactions(buf: np.ndarray, ends: np.ndarray, max_record_bytes: int) -> WireColumns:
    """Columns for the records buf[ends[i-1]:ends[i]] (the first starts at 0).

    buf: uint8 array of the concatenated records; ends: int64 end offsets. Rows with ok
    False have unspecified column values: decode those records the msgspec / pydantic way."""
    buf = np.ascontiguousarray(buf, dtype=np.uint8)
    ends = np.ascontiguousarray(ends, dtype=np.int64)
    n = ends.shape[0]
    cols = WireColumns(
        ok=np.empty(n, dtype=np.bool_),
        amount=np.empty(n, dtype=np.float64),
        ts=np.empty(n, dtype=np.float64),
        spans=np.empty((n, N_STRINGS, 2), dtype=np.int64),
        time_text=np.empty((n, TIME_WIDTH), dtype=np.uint8),
        time_len=np.empty(n, dtype=np.int64),
    )
    parse_into(
        buf,
        ends,
        max_record_bytes,
        cols.ok,
        cols.amount,
        cols.ts,
        cols.spans,
        cols.time_text,
        cols.time_len,
    )
    return cols


def warm_up() -> None:
    """Compile or load the cached kernel now, at start-up, not on the first batch."""
    record = (
        b'{"transaction_id":"t","card_id":"c","amount":1.5,"merchant_category":"m",'
        b'"timestamp":"2026-01-01T00:00:00Z","currency":null}'
    )
    buf = np.frombuffer(record, dtype=np.uint8)
    parse_transactions(buf, np.array([len(record)], dtype=np.int64), len(record))
