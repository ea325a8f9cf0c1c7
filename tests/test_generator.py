"""Unit tests for the synthetic transaction generator (no Kafka)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from statistics import median

import orjson
import pytest

from producer.generator import CATEGORIES, FRAUD_PATTERNS, TransactionGenerator
from schemas import decode_transaction

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)


def _times(n: int, start: datetime = T0, step_s: float = 0.5) -> list[datetime]:
    return [start + timedelta(seconds=i * step_s) for i in range(n)]


def _run(gen: TransactionGenerator, n: int, start: datetime = T0) -> list[tuple[dict, bool]]:
    return [gen.next(t) for t in _times(n, start)]


def _run_with_patterns(gen: TransactionGenerator, n: int) -> list[tuple[dict, bool, str | None]]:
    out = []
    for t in _times(n):
        rec, fraud = gen.next(t)
        out.append((rec, fraud, gen.last_pattern))
    return out


@pytest.fixture(scope="module")
def fraud_heavy() -> tuple[TransactionGenerator, list[tuple[dict, bool, str | None]]]:
    gen = TransactionGenerator(seed=11, fraud_rate=0.05, n_cards=2000, n_merchants=400)
    return gen, _run_with_patterns(gen, 40_000)


def test_same_seed_same_output() -> None:
    a = TransactionGenerator(seed=7, fraud_rate=0.05, n_cards=300, n_merchants=60)
    b = TransactionGenerator(seed=7, fraud_rate=0.05, n_cards=300, n_merchants=60)
    assert a.cards == b.cards
    assert a.merchants == b.merchants
    assert _run(a, 5000) == _run(b, 5000)


def test_output_does_not_depend_on_event_time_except_timestamp() -> None:
    a = TransactionGenerator(seed=7, fraud_rate=0.05, n_cards=300, n_merchants=60)
    b = TransactionGenerator(seed=7, fraud_rate=0.05, n_cards=300, n_merchants=60)
    ra = _run(a, 3000, start=T0)
    rb = _run(b, 3000, start=datetime(2031, 7, 9, 3, 0, tzinfo=timezone(timedelta(hours=-5))))
    strip = [({k: v for k, v in r.items() if k != "timestamp"}, f) for r, f in ra]
    assert strip == [({k: v for k, v in r.items() if k != "timestamp"}, f) for r, f in rb]
    assert ra[0][0]["timestamp"] != rb[0][0]["timestamp"]


def test_different_seeds_differ() -> None:
    a = _run(TransactionGenerator(seed=1, n_cards=300, n_merchants=60), 500)
    b = _run(TransactionGenerator(seed=2, n_cards=300, n_merchants=60), 500)
    assert {r["transaction_id"] for r, _ in a}.isdisjoint(r["transaction_id"] for r, _ in b)
    assert {r["card_id"] for r, _ in a}.isdisjoint(r["card_id"] for r, _ in b)
    assert [r["amount"] for r, _ in a] != [r["amount"] for r, _ in b]


def test_every_record_validates_against_the_wire_contract() -> None:
    gen = TransactionGenerator(seed=3, fraud_rate=0.2, n_cards=500, n_merchants=100)
    records = _run(gen, 10_000)
    assert any(f for _, f in records)
    for rec, _ in records:
        tx = decode_transaction(orjson.dumps(rec))
        assert tx.amount == rec["amount"] > 0
        assert round(rec["amount"], 2) == rec["amount"]
        assert rec["timestamp"].endswith("Z")
        assert tx.timestamp.utcoffset() == timedelta(0)
        assert tx.merchant_category in CATEGORIES
        assert tx.channel in {"pos", "online"}
        assert None not in (tx.currency, tx.merchant_id, tx.country, tx.channel)
    assert len({r["transaction_id"] for r, _ in records}) == len(records)


def test_timestamp_is_utc_z() -> None:
    gen = TransactionGenerator(seed=3, n_cards=50, n_merchants=20)
    t = datetime(2025, 1, 2, 3, 4, 5, 600_000, tzinfo=timezone(timedelta(hours=2)))
    rec, _ = gen.next(t)
    assert rec["timestamp"] == "2025-01-02T01:04:05.600000Z"


def test_naive_event_time_rejected() -> None:
    gen = TransactionGenerator(seed=3, n_cards=50, n_merchants=20)
    with pytest.raises(ValueError, match="timezone-aware"):
        gen.next(datetime(2025, 1, 1))


@pytest.mark.parametrize(("rate", "lo", "hi"), [(0.01, 0.006, 0.015), (0.1, 0.085, 0.115)])
def test_fraud_share_matches_rate(rate: float, lo: float, hi: float) -> None:
    gen = TransactionGenerator(seed=5, fraud_rate=rate, n_cards=1000, n_merchants=200)
    labels = [f for _, f in _run(gen, 50_000)]
    assert lo <= sum(labels) / len(labels) <= hi


def test_fraud_rate_one_is_all_fraud() -> None:
    gen = TransactionGenerator(seed=5, fraud_rate=1.0, n_cards=200, n_merchants=50)
    assert all(f for _, f in _run(gen, 2000))
    assert gen.pending <= 32


def test_fraud_rate_zero_yields_no_fraud() -> None:
    gen = TransactionGenerator(seed=5, fraud_rate=0, n_cards=500, n_merchants=100)
    assert not any(f for _, f in _run(gen, 20_000))
    assert gen.pending == 0
    assert gen.last_pattern is None


@pytest.mark.parametrize("bad", [-0.01, 1.01, math.nan, math.inf, "0.1", None, True])
def test_invalid_fraud_rate_raises(bad: object) -> None:
    with pytest.raises(ValueError, match="fraud_rate"):
        TransactionGenerator(fraud_rate=bad)  # type: ignore[arg-type]


def test_invalid_pool_sizes_raise() -> None:
    with pytest.raises(ValueError, match="n_cards"):
        TransactionGenerator(n_cards=0)
    with pytest.raises(ValueError, match="n_merchants"):
        TransactionGenerator(n_merchants=3)


def test_all_fraud_patterns_occur(fraud_heavy) -> None:
    _, rows = fraud_heavy
    seen = Counter(p for _, f, p in rows if f)
    assert set(seen) == set(FRAUD_PATTERNS)
    assert all(p is None for _, f, p in rows if not f)


def test_card_testing_is_small_online_bursts(fraud_heavy) -> None:
    _, rows = fraud_heavy
    positions: dict[str, list[int]] = defaultdict(list)
    for i, (rec, _, p) in enumerate(rows):
        if p == "card_testing":
            assert 0.5 <= rec["amount"] <= 5.0
            assert rec["channel"] == "online"
            positions[rec["card_id"]].append(i)
    testing = [r for r, _, p in rows if p == "card_testing"]
    cats = Counter(r["merchant_category"] for r in testing)
    assert (cats["gaming"] + cats["online_retail"]) / len(testing) > 0.6
    # Bursts: several charges per card, emitted over a short run of calls.
    assert all(len(pos) >= 3 for pos in positions.values())
    spans = [pos[-1] - pos[0] for pos in positions.values()]
    assert median(spans) < 30
    legit_small = sum(1 for r, f, _ in rows if not f and r["amount"] <= 5.0)
    assert legit_small / sum(1 for _, f, _ in rows if not f) < 0.2


def test_account_takeover_is_large_foreign_online(fraud_heavy) -> None:
    gen, rows = fraud_heavy
    cards = {c.card_id: c for c in gen.cards}
    ato = [r for r, _, p in rows if p == "account_takeover"]
    assert ato
    for rec in ato:
        card = cards[rec["card_id"]]
        assert rec["country"] != card.home_country
        assert rec["channel"] == "online"
        assert rec["merchant_category"] in {"electronics", "jewelry", "travel"}
        assert rec["amount"] >= 5.0 * card.spend_level - 0.01
    legit = [r for r, f, _ in rows if not f]
    home_share = sum(r["country"] == cards[r["card_id"]].home_country for r in legit) / len(legit)
    assert home_share > 0.95


def test_compromised_card_spends_much_more_than_usual(fraud_heavy) -> None:
    gen, rows = fraud_heavy
    cards = {c.card_id: c for c in gen.cards}

    def ratios(pattern: str | None, fraud: bool) -> list[float]:
        return [
            r["amount"] / cards[r["card_id"]].spend_level
            for r, f, p in rows
            if f is fraud and p == pattern
        ]

    spree = ratios("compromised_card", True)
    legit = ratios(None, False)
    assert spree and min(spree) >= 4.0 - 0.01
    assert median(spree) > 5 * median(legit)
    assert all(
        r["country"] == cards[r["card_id"]].home_country
        for r, _, p in rows
        if p == "compromised_card"
    )


def test_some_cards_are_much_more_active(fraud_heavy) -> None:
    _, rows = fraud_heavy
    counts = sorted(Counter(r["card_id"] for r, f, _ in rows if not f).values(), reverse=True)
    top = counts[: max(1, len(counts) // 10)]
    assert sum(top) / sum(counts) > 0.3
