"""A seeded 64-bit hash of byte strings, computed by Numba straight from Kafka record bytes.

Per-card state is keyed by a hash of the card id. The fast decoding path finds each record's
fields as byte spans of the raw message and hashes them without building Python strings
(`hash_column`); records that went through the slow path, and code holding Python objects,
hash the UTF-8 bytes of their strings with `hash_strings`, which gives the same values.

The function is XXH64's short-input path (one accumulator): 8 bytes per step, then one step
for the last 1-7 bytes zero-padded, then XXH64's avalanche. The length is mixed into the
initial state, so zero padding cannot make two lengths collide. It is not XXH64 itself (the
4- and 1-byte tails and the 32-byte stripes are simplified) and not cryptographic, but it is
seeded per process (`SEED`, like Python's own str hash), so state keys are per process and an
outsider cannot pick colliding ids offline. 0 is never returned: it means "none" (null span)
and marks empty entries in `core/card_table.py`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from itertools import repeat
from operator import is_
from typing import cast

import numba
import numpy as np

SEED: int = int.from_bytes(os.urandom(8), "little")

# XXH64 primes; numpy scalars so Numba keeps every operation in uint64 (a Python int mixed
# with a uint64 would promote to float64).
_P1 = np.uint64(0x9E3779B97F4A7C15)
_P2 = np.uint64(0xC2B2AE3D27D4EB4F)
_P3 = np.uint64(0x165667B19E3779F9)
_P4 = np.uint64(0x85EBCA77C2B2AE63)
_P5 = np.uint64(0x27D4EB2F165667C5)
_U64 = np.uint64


@numba.njit(cache=True, nogil=True, inline="always")
def _rotl(x: np.uint64, r: int) -> np.uint64:
    return (x << _U64(r)) | (x >> _U64(64 - r))


@numba.njit(cache=True, nogil=True, inline="always")
def _round(h: np.uint64, w: np.uint64) -> np.uint64:
    k = _rotl(w * _P2, 31) * _P1
    return _rotl(h ^ k, 27) * _P1 + _P4


@numba.njit(cache=True, nogil=True, inline="always")
def _word(buf: np.ndarray, p: int) -> np.uint64:
    # Little-endian 8 bytes; LLVM folds the pattern into one unaligned load.
    return (
        _U64(buf[p])
        | (_U64(buf[p + 1]) << _U64(8))
        | (_U64(buf[p + 2]) << _U64(16))
        | (_U64(buf[p + 3]) << _U64(24))
        | (_U64(buf[p + 4]) << _U64(32))
        | (_U64(buf[p + 5]) << _U64(40))
        | (_U64(buf[p + 6]) << _U64(48))
        | (_U64(buf[p + 7]) << _U64(56))
    )


@numba.njit(cache=True, nogil=True, inline="always")
def hash_span(buf: np.ndarray, start: int, end: int, seed: np.uint64) -> np.uint64:
    """Hash of the bytes buf[start:end] (uint8 array); never 0."""
    n = end - start
    h = _U64(seed) + _P5 + _U64(n)
    p = start
    while p + 8 <= end:
        h = _round(h, _word(buf, p))
        p += 8
    if p < end:
        w = _U64(0)
        shift = _U64(0)
        while p < end:
            w |= _U64(buf[p]) << shift
            shift += _U64(8)
            p += 1
        h = _round(h ^ _P3, w)  # ^ _P3: the tail step differs from a full-word step
    h ^= h >> _U64(33)
    h *= _P2
    h ^= h >> _U64(29)
    h *= _P3
    h ^= h >> _U64(32)
    if h == 0:
        h = _P1
    return h


@numba.njit(cache=True, nogil=True)
def hash_column(buf: np.ndarray, spans: np.ndarray, seed: np.uint64) -> np.ndarray:
    """Hash of each span [start, end) of `buf` (spans: int64 (n, 2), any layout, e.g. a
    strided view `spans3d[:, field, :]`); 0 where start < 0 (null)."""
    n = spans.shape[0]
    s = _U64(seed)
    out = np.empty(n, dtype=np.uint64)
    for i in range(n):
        start = spans[i, 0]
        if start < 0:
            out[i] = 0
        else:  # not a conditional expression: int 0 | uint64 would unify to float64
            out[i] = hash_span(buf, start, spans[i, 1], s)
    return out


def hash_strings(values: Sequence[str | None], seed: int = SEED) -> np.ndarray:
    """`hash_column` of the UTF-8 bytes of each string (uint64 (n,)); None -> 0."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.uint64)
    nulls = None
    texts = cast("Sequence[str]", values)  # a None among them fails the join, below
    try:
        joined = "".join(texts)
    except TypeError:  # None among them: hash "" there, then set 0
        nulls = np.fromiter(map(is_, values, repeat(None)), np.bool_, n)
        texts = ["" if v is None else v for v in values]
        joined = "".join(texts)
    if joined.isascii():
        # The common case: one encode (a copy) and str lengths = byte lengths, no bytes
        # object per value (a third of the time of encoding each).
        data = joined.encode()
        lengths = np.fromiter(map(len, texts), np.int64, n)
    else:
        encoded = [v.encode("utf-8", "surrogatepass") for v in texts]
        data = b"".join(encoded)
        lengths = np.fromiter(map(len, encoded), np.int64, n)
    ends = np.cumsum(lengths)
    spans = np.empty((n, 2), dtype=np.int64)
    spans[:, 1] = ends
    spans[0, 0] = 0
    spans[1:, 0] = ends[:-1]
    if nulls is not None:
        spans[nulls, 0] = -1
    buf = np.frombuffer(data, dtype=np.uint8)
    return hash_column(buf, spans, np.uint64(seed))
