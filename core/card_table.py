"""Card hash -> state slot, least recently seen evicted first, in numpy arrays updated by Numba.

`CardStore` (core/features.py) kept this in a Python dict in recency order (pop and reinsert
per record), ~0.5 us a record in the hot path. `CardSlots` has the same semantics in flat
arrays walked by compiled kernels:

- The index: open addressing with linear probing in a power-of-two table of (hash, slot)
  pairs, one 16-byte entry per bucket so a hit costs one cache miss; hash 0 marks an empty
  bucket (`core/byte_hash.py` never returns 0). The home bucket is the top bits of
  hash * 2^64/phi (Fibonacci hashing), so even poorly mixed keys spread. Load stays <= 1/2
  (the table doubles first). Deletion is backward-shift: entries after the hole that may
  move into it do, so no tombstones accumulate and probe lengths stay short.
- Recency: a doubly linked list over slots (`links[s] = prev, next`, adjacent so an unlink
  touches one cache line per node), head = least recent, tail = most recent. Marking a slot
  most recent and evicting the least recent are O(1).
- Slot allocation as in CardStore: a new card takes the most recently freed slot (a stack,
  like list.pop()) or else the next never-used one; `next_slot` is one past the highest slot
  handed out, the rows the state arrays need. Eviction happens only in `trim()` (once per
  batch), so a batch may exceed `max_cards`.

The kernels stop before a record that needs more room (slot arrays or index); Python grows the
arrays and resumes at that record, so growth is exactly as if done record by record.

Memory per card: 16 B x 2-4 index buckets (load 1/2 down to 1/4 after a doubling) plus 20 B
x 1-1.25 slot rows (hash 8, prev/next 8, free stack 4): 54 B at 1M cards, at most ~89 B
(`nbytes` gives the total).
"""

from __future__ import annotations

import numba
import numpy as np

_FIB = np.uint64(0x9E3779B97F4A7C15)  # 2^64 / golden ratio
_MIN_INDEX = 1024
_MIN_SLOTS = 1024

# Scalar state, one int64 array so kernels update it in place.
_COUNT, _NEXT, _HEAD, _TAIL, _FREE_TOP, _EVICTED = range(6)


@numba.njit(cache=True, nogil=True, inline="always")
def _home(h: np.uint64, shift: np.uint64) -> int:
    return np.int64((h * _FIB) >> shift)  # type: ignore[return-value]  # a numpy int


@numba.njit(cache=True, nogil=True, inline="always")
def _find(table: np.ndarray, h: np.uint64, shift: np.uint64) -> int:
    """Bucket holding h, or ~bucket (negative) of the empty one where it would go."""
    mask = table.shape[0] - 1
    i = _home(h, shift)
    while True:
        k = table[i, 0]
        if k == h:
            return i
        if k == 0:
            return ~i
        i = (i + 1) & mask


@numba.njit(cache=True, nogil=True, inline="always")
def _delete(table: np.ndarray, i: int, shift: np.uint64) -> None:
    """Empty bucket i, shifting back later entries of its cluster that may fill the hole (an
    entry stays if its home lies cyclically in (hole, its bucket])."""
    mask = table.shape[0] - 1
    j = i
    while True:
        j = (j + 1) & mask
        k = table[j, 0]
        if k == 0:
            break
        if ((j - _home(k, shift)) & mask) >= ((j - i) & mask):
            table[i, 0] = k
            table[i, 1] = table[j, 1]
            i = j
    table[i, 0] = 0
    table[i, 1] = 0


@numba.njit(cache=True, nogil=True)
def _assign(
    hashes: np.ndarray,
    start: int,
    out_slots: np.ndarray,
    out_new: np.ndarray,
    table: np.ndarray,
    shift: np.uint64,
    slot_hash: np.ndarray,
    links: np.ndarray,
    free: np.ndarray,
    state: np.ndarray,
) -> int:
    """Assign hashes[start:] in order; returns the index of the first record it could not
    assign for lack of room (len(hashes) when done), nothing of which is changed."""
    count = state[_COUNT]
    nxt = state[_NEXT]
    head = state[_HEAD]
    tail = state[_TAIL]
    free_top = state[_FREE_TOP]
    room = table.shape[0] // 2  # entries the index may hold at load 1/2
    n = hashes.shape[0]
    i = start
    while i < n:
        h = hashes[i]
        b = _find(table, h, shift)
        if b >= 0:
            s = np.int64(table[b, 1])
            out_new[i] = False
            if s != tail:  # unlink, then append below
                p = links[s, 0]
                q = links[s, 1]  # >= 0: s is not the tail
                if p >= 0:
                    links[p, 1] = q
                else:
                    head = q
                links[q, 0] = p
            else:
                out_slots[i] = s
                i += 1
                continue
        else:
            if count >= room or (free_top == 0 and nxt >= slot_hash.shape[0]):
                break
            if free_top > 0:
                free_top -= 1
                s = np.int64(free[free_top])
            else:
                s = nxt
                nxt += 1
            b = ~b
            table[b, 0] = h
            table[b, 1] = s
            slot_hash[s] = h
            count += 1
            out_new[i] = True
        # s becomes the tail (most recent)
        links[s, 0] = tail
        links[s, 1] = -1
        if tail >= 0:
            links[tail, 1] = s
        else:
            head = s
        tail = s
        out_slots[i] = s
        i += 1
    state[_COUNT] = count
    state[_NEXT] = nxt
    state[_HEAD] = head
    state[_TAIL] = tail
    state[_FREE_TOP] = free_top
    return i


@numba.njit(cache=True, nogil=True)
def _trim(
    max_cards: int,
    table: np.ndarray,
    shift: np.uint64,
    slot_hash: np.ndarray,
    links: np.ndarray,
    free: np.ndarray,
    state: np.ndarray,
) -> int:
    """Evict from the head (least recent) down to max_cards; returns the number evicted."""
    count = state[_COUNT]
    head = state[_HEAD]
    free_top = state[_FREE_TOP]
    evicted = 0
    while count > max_cards:
        s = head
        h = slot_hash[s]
        _delete(table, _find(table, h, shift), shift)
        slot_hash[s] = 0
        head = links[s, 1]
        if head >= 0:
            links[head, 0] = -1
        free[free_top] = s  # pushed in LRU order: the last evicted is reused first
        free_top += 1
        count -= 1
        evicted += 1
    if count == 0:
        state[_TAIL] = -1
    state[_COUNT] = count
    state[_HEAD] = head
    state[_FREE_TOP] = free_top
    state[_EVICTED] += evicted
    return evicted


@numba.njit(cache=True, nogil=True)
def _rehash(old: np.ndarray, new: np.ndarray, shift: np.uint64) -> None:
    for i in range(old.shape[0]):
        h = old[i, 0]
        if h != 0:
            b = ~_find(new, h, shift)
            new[b, 0] = h
            new[b, 1] = old[i, 1]


@numba.njit(cache=True, nogil=True)
def _recency(slot_hash: np.ndarray, links: np.ndarray, head: int, count: int) -> np.ndarray:
    out = np.empty(count, dtype=np.uint64)
    s = head
    for i in range(count):
        out[i] = slot_hash[s]
        s = links[s, 1]
    return out


@numba.njit(cache=True, nogil=True)
def _contains(table: np.ndarray, h: np.uint64, shift: np.uint64) -> bool:
    return _find(table, h, shift) >= 0


def _shift(size: int) -> np.uint64:
    return np.uint64(64 - (size.bit_length() - 1))


class CardSlots:
    """Card hash -> slot, least recently seen evicted first; all in numpy arrays, updated by
    njit kernels (open addressing with linear probing and backward-shift deletion, plus a
    doubly linked recency list over slots)."""

    def __init__(self, max_cards: int, _index_size: int = _MIN_INDEX) -> None:
        # _index_size: initial (and minimum) index buckets, a power of two; tests use a tiny
        # index to make long probe clusters.
        if _index_size < 2 or _index_size & (_index_size - 1):
            raise ValueError("index size must be a power of two >= 2")
        self.max_cards = max_cards
        self._min_index = _index_size
        self._state = np.zeros(6, dtype=np.int64)
        self._table = np.zeros((0, 2), dtype=np.uint64)
        self._slot_hash = np.zeros(0, dtype=np.uint64)
        self._links = np.zeros((0, 2), dtype=np.int32)
        self._free = np.zeros(0, dtype=np.int32)
        self.clear()

    # -- scalar state -------------------------------------------------------------------
    def __len__(self) -> int:
        return int(self._state[_COUNT])

    @property
    def evicted(self) -> int:
        """Total cards evicted so far (not reset by clear(), like CardStore)."""
        return int(self._state[_EVICTED])

    @property
    def next_slot(self) -> int:
        """One past the highest slot ever handed out: the rows the state arrays need."""
        return int(self._state[_NEXT])

    @property
    def nbytes(self) -> int:
        """Bytes held by the arrays."""
        return sum(a.nbytes for a in (self._table, self._slot_hash, self._links, self._free))

    def __contains__(self, h: object) -> bool:
        if not isinstance(h, int | np.integer) or not 0 < int(h) < 2**64:
            return False
        return bool(_contains(self._table, np.uint64(h), self._shift))

    # -- updates --------------------------------------------------------------------------
    def assign(self, hashes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each hash's slot (int64 (n,)) and whether it was new (bool (n,)), in order, marking
        each most recent. New keys take the most recently freed slot or the next never-used
        one; no eviction here (see trim)."""
        hashes = np.asarray(hashes)
        if hashes.dtype == np.int64:  # same bits, e.g. a hash column stored as int64
            hashes = hashes.view(np.uint64)
        hashes = np.ascontiguousarray(hashes, dtype=np.uint64)
        n = hashes.shape[0]
        if n and not hashes.all():
            raise ValueError("hash 0 is reserved (null)")
        slots = np.empty(n, dtype=np.int64)
        new = np.empty(n, dtype=np.bool_)
        i = 0
        while True:
            i = _assign(
                hashes, i, slots, new, self._table, self._shift, self._slot_hash, self._links,
                self._free, self._state,
            )  # fmt: skip
            if i == n:
                return slots, new
            self._make_room()

    def trim(self) -> int:
        """Evict least recently seen cards down to max_cards; returns the number evicted."""
        if self._state[_COUNT] <= self.max_cards:
            return 0
        return int(
            _trim(
                self.max_cards,
                self._table,
                self._shift,
                self._slot_hash,
                self._links,
                self._free,
                self._state,
            )  # fmt: skip
        )

    def clear(self) -> None:
        """Forget every card and release the arrays (evicted is kept, like CardStore)."""
        evicted = self._state[_EVICTED]
        self._state[:] = (0, 0, -1, -1, 0, evicted)
        self._set_table(np.zeros((self._min_index, 2), dtype=np.uint64))
        self._slot_hash = np.zeros(0, dtype=np.uint64)
        self._links = np.zeros((0, 2), dtype=np.int32)
        self._free = np.zeros(0, dtype=np.int32)

    def recency(self) -> np.ndarray:
        """Hashes from least to most recent (uint64)."""
        s = self._state
        return _recency(self._slot_hash, self._links, s[_HEAD], s[_COUNT])

    # -- growth ---------------------------------------------------------------------------
    def _set_table(self, table: np.ndarray) -> None:
        self._table = table
        self._shift = _shift(table.shape[0])

    def _make_room(self) -> None:
        s = self._state
        if s[_COUNT] >= self._table.shape[0] // 2:
            old = self._table
            self._set_table(np.zeros((2 * old.shape[0], 2), dtype=np.uint64))
            _rehash(old, self._table, self._shift)
        if s[_FREE_TOP] == 0 and s[_NEXT] >= self._slot_hash.shape[0]:
            # A quarter more, not double: a doubled array can leave half of it unused.
            old_n = self._slot_hash.shape[0]
            size = max(old_n + old_n // 4, _MIN_SLOTS)
            self._slot_hash = _grown(self._slot_hash, size)
            self._links = _grown(self._links, size)
            self._free = _grown(self._free, size)


def _grown(a: np.ndarray, size: int) -> np.ndarray:
    out = np.zeros((size, *a.shape[1:]), dtype=a.dtype)
    out[: a.shape[0]] = a
    return out
