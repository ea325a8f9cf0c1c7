"""CardSlots (core/card_table.py) against a dict model of CardStore, and the byte hash
(core/byte_hash.py) against a pure-Python reference."""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.byte_hash import SEED, hash_column, hash_span, hash_strings
from core.card_table import CardSlots, _home

_M64 = (1 << 64) - 1


class DictModel:
    """CardStore's logic (core/features.py before the move to Numba), keyed by hash."""

    def __init__(self, max_cards: int) -> None:
        self.max_cards = max_cards
        self.cards: dict[int, int] = {}
        self.free: list[int] = []
        self.next = 0
        self.evicted = 0

    def assign(self, hashes: list[int]) -> tuple[list[int], list[bool]]:
        slots, first = [], []
        for h in hashes:
            slot = self.cards.pop(h, None)
            first.append(slot is None)
            if slot is None:
                if self.free:
                    slot = self.free.pop()
                else:
                    slot = self.next
                    self.next += 1
            self.cards[h] = slot
            slots.append(slot)
        return slots, first

    def trim(self) -> int:
        excess = len(self.cards) - self.max_cards
        if excess <= 0:
            return 0
        for key in [k for k, _ in zip(self.cards, range(excess), strict=False)]:
            self.free.append(self.cards.pop(key))
        self.evicted += excess
        return excess

    def clear(self) -> None:
        self.cards.clear()
        self.free.clear()
        self.next = 0


def check_index(table: CardSlots) -> None:
    """Every stored key is reachable by linear probing: no empty bucket lies between its home
    and its bucket (a bad backward-shift deletion breaks this), and the load is <= 1/2."""
    stored = table._table[:, 0]
    size = len(stored)
    occupied = stored != 0
    assert np.count_nonzero(occupied) == len(table) <= size // 2
    assert len(np.unique(stored[occupied])) == len(table)
    # run[j]: occupied buckets in a row ending at j, cyclically (rolled to start at an empty).
    e = int(np.argmin(occupied))
    idx = np.arange(size)
    rolled = np.roll(occupied, -e)
    run = np.roll(idx - np.maximum.accumulate(np.where(rolled, 0, idx)), e)
    shift = np.uint64(64 - (size.bit_length() - 1))
    home = ((stored * np.uint64(0x9E3779B97F4A7C15)) >> shift).astype(np.int64)
    displacement = (idx - home) & (size - 1)
    assert np.all(displacement[occupied] < run[occupied])


def check_same(table: CardSlots, model: DictModel, absent: Sequence[int] = ()) -> None:
    assert len(table) == len(model.cards)
    assert table.evicted == model.evicted
    assert table.next_slot == model.next
    assert table.recency().tolist() == list(model.cards)
    check_index(table)
    entries = table._table[table._table[:, 0] != 0].tolist()
    index = {h: s for h, s in entries}
    assert index == model.cards
    for h in list(model.cards)[-100:]:
        assert h in table
    for h in absent:
        assert (h in table) == (h in model.cards)


def drive(
    table: CardSlots, model: DictModel, batches: list[np.ndarray], check_every: int = 1
) -> None:
    for b, batch in enumerate(batches):
        got_slots, got_first = table.assign(batch)
        want_slots, want_first = model.assign(batch.tolist())
        assert got_slots.dtype == np.int64 and got_first.dtype == np.bool_
        assert got_slots.tolist() == want_slots
        assert got_first.tolist() == want_first
        if b % check_every == 0:
            check_same(table, model)  # before trim: the count may exceed max_cards
        assert table.trim() == model.trim()
        if b % check_every == 0:
            check_same(table, model, absent=batch[:50].tolist())


def random_keys(rng: np.random.Generator, n: int) -> np.ndarray:
    keys = rng.integers(1, 2**64, size=n, dtype=np.uint64, endpoint=False)
    assert len(np.unique(keys)) == n
    return keys


def zipf_stream(
    rng: np.random.Generator, keys: np.ndarray, n_batches: int, max_batch: int
) -> list[np.ndarray]:
    """Batches drawing keys with Zipf-like frequencies: many repeats, a long tail."""
    ranks = rng.permutation(len(keys))
    out = []
    for _ in range(n_batches):
        size = int(rng.integers(0, max_batch + 1))
        idx = np.minimum(rng.zipf(1.3, size) - 1, len(keys) - 1)
        out.append(keys[ranks[idx]])
    return out


@pytest.mark.parametrize(
    "max_cards, universe, n_batches, max_batch",
    [(50, 400, 400, 300), (300, 5_000, 300, 800), (1, 20, 200, 20), (0, 30, 50, 10)],
)
def test_matches_dict_model_on_zipf_streams(
    max_cards: int, universe: int, n_batches: int, max_batch: int
) -> None:
    rng = np.random.default_rng(max_cards * 7919 + universe)
    keys = random_keys(rng, universe)
    batches = zipf_stream(rng, keys, n_batches, max_batch)
    table, model = CardSlots(max_cards), DictModel(max_cards)
    drive(table, model, batches, check_every=7)
    check_same(table, model, absent=keys.tolist())
    assert model.evicted > 0


def test_long_stream_with_heavy_eviction_and_reuse() -> None:
    # 150k+ assignments over 3k keys with room for 200: most records evict and reuse a slot.
    rng = np.random.default_rng(11)
    keys = random_keys(rng, 3_000)
    batches = [
        keys[rng.integers(0, len(keys), size=int(rng.integers(1, 1500)))] for _ in range(200)
    ]
    assert sum(map(len, batches)) > 100_000
    table, model = CardSlots(200), DictModel(200)
    drive(table, model, batches, check_every=10)
    assert model.evicted > 50_000
    check_same(table, model, absent=keys.tolist())


def colliding_keys(rng: np.random.Generator, size: int, buckets: set[int], n: int) -> np.ndarray:
    """n distinct keys whose home, in an index of `size` buckets, is one of `buckets`."""
    shift = np.uint64(64 - (size.bit_length() - 1))
    found: list[int] = []
    while len(found) < n:
        cand = rng.integers(1, 2**64, size=50_000, dtype=np.uint64)
        homes = (cand * np.uint64(0x9E3779B97F4A7C15)) >> shift
        found.extend(int(c) for c, h in zip(cand, homes, strict=True) if int(h) in buckets)
    keys = np.array(sorted(set(found))[:n], dtype=np.uint64)
    for k in keys:  # the test's home formula is the kernel's
        assert _home(np.uint64(k), shift) in buckets
    return keys


def test_deletion_in_long_probe_clusters() -> None:
    # A 64-bucket index holding up to 31 keys, nearly all homed on 3 buckets that wrap around
    # the end of the table: clusters of ~30 entries where every eviction backward-shifts.
    rng = np.random.default_rng(3)
    hot = colliding_keys(rng, 64, {62, 63, 0}, 40)
    cold = colliding_keys(rng, 64, set(range(20, 40)), 10)
    keys = np.concatenate([hot, cold])
    table, model = CardSlots(22, _index_size=64), DictModel(22)
    batches = [keys[rng.integers(0, len(keys), size=int(rng.integers(1, 10)))] for _ in range(3000)]
    drive(table, model, batches)
    assert table._table.shape[0] == 64  # never grew: the clusters stayed long
    assert model.evicted > 5_000
    check_same(table, model, absent=keys.tolist())


def test_growth_across_many_resizes_then_clear() -> None:
    rng = np.random.default_rng(5)
    keys = random_keys(rng, 120_000)
    table, model = CardSlots(100_000, _index_size=2), DictModel(100_000)
    # Mostly new keys, with repeats of earlier ones: the index doubles ~17 times, the slot
    # arrays grow by a quarter ~20 times, several times inside one batch.
    batches = []
    for lo in range(0, len(keys), 15_000):
        fresh = keys[lo : lo + 15_000]
        old = keys[rng.integers(0, lo + len(fresh), size=3_000)]
        batches.append(rng.permutation(np.concatenate([fresh, old])))
    drive(table, model, batches, check_every=3)
    assert table._table.shape[0] == 2**18  # 100k-118k cards at load <= 1/2
    assert table._slot_hash.shape[0] >= model.next
    check_same(table, model, absent=keys[::97].tolist())
    table.clear()
    model.clear()
    check_same(table, model, absent=keys[::97].tolist())
    assert table.nbytes < 100_000
    evicted = model.evicted
    table.max_cards = model.max_cards = 1000
    drive(table, model, zipf_stream(rng, keys[:5000], 30, 2000), check_every=3)
    assert table.evicted == model.evicted > evicted


@settings(max_examples=300, deadline=None)
@given(
    max_cards=st.integers(0, 12),
    index_size=st.sampled_from([2, 4, 8, 16]),
    batches=st.lists(st.lists(st.integers(0, 40), max_size=30), max_size=25),
    clear_at=st.integers(0, 30),
)
def test_matches_dict_model_hypothesis(
    max_cards: int, index_size: int, batches: list[list[int]], clear_at: int
) -> None:
    # Small keys map to a fixed pool where 3/4 of the keys share a few homes.
    keys = _POOL
    table, model = CardSlots(max_cards, _index_size=index_size), DictModel(max_cards)
    for b, batch in enumerate(batches):
        if b == clear_at:
            table.clear()
            model.clear()
        drive(table, model, [keys[np.array(batch, dtype=np.int64)]])
    check_same(table, model, absent=keys.tolist())


_POOL = np.concatenate(
    [
        colliding_keys(np.random.default_rng(9), 16, {15, 0}, 30),
        random_keys(np.random.default_rng(10), 11),
    ]
)


def test_assign_input_types_and_edge_cases() -> None:
    table = CardSlots(10)
    slots, first = table.assign(np.zeros(0, dtype=np.uint64))
    assert slots.shape == first.shape == (0,)
    big = 2**64 - 1
    slots, first = table.assign(np.array([big, 5, big], dtype=np.uint64))
    assert slots.tolist() == [0, 1, 0] and first.tolist() == [True, True, False]
    assert big in table and 5 in table
    assert 6 not in table and 0 not in table and -1 not in table and 2**64 not in table
    # int64 columns carry the same bits
    slots, _ = table.assign(np.array([-1, 5], dtype=np.int64))
    assert slots.tolist() == [0, 1]
    assert table.recency().tolist() == [big, 5]
    with pytest.raises(ValueError, match="reserved"):
        table.assign(np.array([3, 0], dtype=np.uint64))
    assert len(table) == 2 and 3 not in table  # the batch was rejected before any change
    with pytest.raises(ValueError):
        CardSlots(10, _index_size=12)


# -- the hash -------------------------------------------------------------------------------

_P1, _P2, _P3, _P4, _P5 = (
    0x9E3779B97F4A7C15,
    0xC2B2AE3D27D4EB4F,
    0x165667B19E3779F9,
    0x85EBCA77C2B2AE63,
    0x27D4EB2F165667C5,
)


def _rotl(x: int, r: int) -> int:
    return ((x << r) | (x >> (64 - r))) & _M64


def _round(h: int, w: int) -> int:
    k = (_rotl((w * _P2) & _M64, 31) * _P1) & _M64
    return (_rotl(h ^ k, 27) * _P1 + _P4) & _M64


def reference_hash(data: bytes, seed: int) -> int:
    """hash_span in plain Python integers."""
    n = len(data)
    h = (seed + _P5 + n) & _M64
    full = n - n % 8
    for p in range(0, full, 8):
        h = _round(h, int.from_bytes(data[p : p + 8], "little"))
    if full < n:
        h = _round(h ^ _P3, int.from_bytes(data[full:], "little"))
    h ^= h >> 33
    h = (h * _P2) & _M64
    h ^= h >> 29
    h = (h * _P3) & _M64
    h ^= h >> 32
    return h or _P1


def spans_of(parts: list[bytes | None]) -> tuple[np.ndarray, np.ndarray]:
    buf = b"".join(p or b"" for p in parts)
    spans = np.empty((len(parts), 2), dtype=np.int64)
    pos = 0
    for i, p in enumerate(parts):
        spans[i] = (pos, pos + len(p)) if p is not None else (-1, -1)
        pos += len(p or b"")
    return np.frombuffer(buf, dtype=np.uint8), spans


def test_hash_matches_python_reference() -> None:
    rng = np.random.default_rng(1)
    parts = [rng.bytes(n) for n in list(range(70)) + [255, 256, 257, 1000]]
    for seed in (0, 1, SEED, 2**64 - 1):
        buf, spans = spans_of(parts)
        got = hash_column(buf, spans, np.uint64(seed))
        assert got.tolist() == [reference_hash(p, seed) for p in parts]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(st.none(), st.text(max_size=40)), max_size=20))
def test_hash_strings_equals_hash_column_hypothesis(values: list[str | None]) -> None:
    encoded = [None if v is None else v.encode("utf-8", "surrogatepass") for v in values]
    buf, spans = spans_of(encoded)
    want = hash_column(buf, spans, np.uint64(SEED))
    assert hash_strings(values).tolist() == want.tolist()
    assert hash_strings(values, seed=7).tolist() == [
        0 if e is None else reference_hash(e, 7) for e in encoded
    ]


def test_hash_strings_cases() -> None:
    values = [
        "card_0123456789ab",
        "",
        None,
        "é",
        "日本語カード",
        "x" * 256,
        "\U0001f4b3" * 64,
        "\ud800",
    ]
    h = hash_strings(values)
    assert h.dtype == np.uint64 and h.shape == (len(values),)
    want = [
        0 if v is None else reference_hash(v.encode("utf-8", "surrogatepass"), SEED) for v in values
    ]
    assert h.tolist() == want
    assert h[2] == 0 and np.count_nonzero(h) == len(values) - 1
    assert hash_strings(["a", "b"]).tolist() == hash_strings(["a", None, "b"])[[0, 2]].tolist()
    assert hash_strings([]).shape == (0,)
    assert hash_strings([None, None]).tolist() == [0, 0]
    # Writable and read-only buffers give the same hashes.
    buf, spans = spans_of([None if v is None else v.encode() for v in values[:5]])
    assert hash_column(buf, spans, np.uint64(SEED)).tolist() == h[:5].tolist()
    assert hash_column(buf.copy(), spans, np.uint64(SEED)).tolist() == h[:5].tolist()


def test_seed_changes_every_hash() -> None:
    values = [f"card_{i:012x}" for i in range(10_000)] + ["", "a"]
    a, b = hash_strings(values, seed=1), hash_strings(values, seed=2)
    assert not np.any(a == b)
    assert isinstance(SEED, int) and 0 <= SEED < 2**64


def test_no_collisions_among_a_million_card_ids() -> None:
    # Sequential ids differing in a few bits, and short ones.
    ids = [f"card_{i:012x}" for i in range(1_000_000)]
    ids[:1000] = [f"card_{i}" for i in range(1000)]
    h = hash_strings(ids)
    assert np.all(h != 0)
    assert len(np.unique(h)) == len(ids)
    # The low and high bits are each near uniform (the index uses the product's top bits).
    for bits in (h & np.uint64(0xFF), h >> np.uint64(56)):
        counts = np.bincount(bits.astype(np.int64), minlength=256)
        assert counts.min() > 3_500 and counts.max() < 4_300


def test_hash_column_on_strided_spans_view() -> None:
    values = [f"card_{i}" for i in range(100)]
    merchants = [f"merchant_{i * 7}" for i in range(100)]
    parts: list[bytes] = []
    spans3d = np.full((100, 7, 2), -1, dtype=np.int64)
    pos = 0
    for i in range(100):
        for field, text in ((2, values[i]), (5, merchants[i])):
            raw = b'"' + text.encode() + b'",'
            spans3d[i, field] = (pos + 1, pos + 1 + len(text.encode()))
            parts.append(raw)
            pos += len(raw)
    spans3d[::10, 5] = -1  # some nulls
    buf = np.frombuffer(b"".join(parts), dtype=np.uint8)
    view = spans3d[:, 2, :]
    assert not view.flags.c_contiguous
    assert hash_column(buf, view, np.uint64(SEED)).tolist() == hash_strings(values).tolist()
    want = hash_strings([None if i % 10 == 0 else m for i, m in enumerate(merchants)])
    assert hash_column(buf, spans3d[:, 5, :], np.uint64(SEED)).tolist() == want.tolist()
    assert hash_column(buf, spans3d[:, 0, :], np.uint64(SEED)).tolist() == [0] * 100


@numba.njit
def _hash_in_user_kernel(buf: np.ndarray, seed: np.uint64) -> np.uint64:
    return hash_span(buf, 1, buf.shape[0] - 1, seed)


def test_hash_span_inlines_into_other_kernels() -> None:
    buf = np.frombuffer(b'"card_42"', dtype=np.uint8)
    assert _hash_in_user_kernel(buf, np.uint64(SEED)) == hash_strings(["card_42"])[0]
