"""Unit tests for the synthetic transaction generator (no Kafka)."""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from statistics import median

import orjson
import pytest

from core.codec import decode_transaction
from producer.fraud_scenarios import FRAUD_PATTERNS
from producer.generator import TransactionGenerator
from producer.population import CATEGORIES

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
Row = tuple[dict, bool, str | None]


def _times(n: int, start: datetime = T0, step_s: float = 0.5) -> list[datetime]:
    return [start + timedelta(seconds=i * step_s) for i in range(n)]


def _run(gen: TransactionGenerator, n: int, start: datetime = T0) -> list[tuple[dict, bool]]:
    return [gen.next(t) for t in _times(n, start)]


def _ts(rec: dict) -> float:
    return datetime.fromisoformat(rec["timestamp"].replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def fraud_heavy() -> tuple[TransactionGenerator, list[Row]]:
    """Ten simulated days, 5% fraud, phase 0 only."""
    gen = TransactionGenerator(seed=11, fraud_rate=0.05, n_cards=2000, n_merchants=400)
    return gen, list(gen.simulate(60_000, T0, 10.0))


@pytest.fixture(scope="module")
def drifted() -> tuple[TransactionGenerator, list[Row]]:
    gen = TransactionGenerator(
        seed=12, fraud_rate=0.05, n_cards=2000, n_merchants=400, drift_at=30_000
    )
    return gen, list(gen.simulate(60_000, T0, 10.0))


def test_same_seed_same_output() -> None:
    a = TransactionGenerator(seed=7, fraud_rate=0.05, n_cards=300, n_merchants=60)
    b = TransactionGenerator(seed=7, fraud_rate=0.05, n_cards=300, n_merchants=60)
    assert a.cards == b.cards
    assert a.merchants == b.merchants
    assert _run(a, 5000) == _run(b, 5000)


def test_same_seed_same_simulated_stream_with_drift() -> None:
    def make() -> list[Row]:
        gen = TransactionGenerator(
            seed=8, fraud_rate=0.02, n_cards=300, n_merchants=60, drift_at=2000
        )
        return list(gen.simulate(4000, T0, 2.0))

    assert make() == make()


def test_different_seeds_differ() -> None:
    a = _run(TransactionGenerator(seed=1, n_cards=300, n_merchants=60), 500)
    b = _run(TransactionGenerator(seed=2, n_cards=300, n_merchants=60), 500)
    assert {r["transaction_id"] for r, _ in a}.isdisjoint(r["transaction_id"] for r, _ in b)
    assert {r["card_id"] for r, _ in a}.isdisjoint(r["card_id"] for r, _ in b)
    assert [r["amount"] for r, _ in a] != [r["amount"] for r, _ in b]


def test_every_record_validates_against_the_wire_contract(fraud_heavy) -> None:
    _, rows = fraud_heavy
    assert any(f for _, f, _ in rows)
    for rec, _, _ in rows[:20_000]:
        tx = decode_transaction(orjson.dumps(rec))
        assert tx.amount == rec["amount"] > 0
        assert round(rec["amount"], 2) == rec["amount"]
        assert rec["timestamp"].endswith("Z")
        assert tx.timestamp.utcoffset() == timedelta(0)
        assert tx.merchant_category in CATEGORIES
        assert tx.channel in {"pos", "online"}
        assert None not in (tx.currency, tx.merchant_id, tx.country, tx.channel)
    assert len({r["transaction_id"] for r, _, _ in rows}) == len(rows)


def test_timestamp_is_utc_z() -> None:
    gen = TransactionGenerator(seed=3, n_cards=50, n_merchants=20)
    t = datetime(2025, 1, 2, 3, 4, 5, 600_000, tzinfo=timezone(timedelta(hours=2)))
    rec, _ = gen.next(t)
    assert rec["timestamp"] == "2025-01-02T01:04:05.600000Z"


def test_naive_times_rejected() -> None:
    gen = TransactionGenerator(seed=3, n_cards=50, n_merchants=20)
    with pytest.raises(ValueError, match="timezone-aware"):
        gen.next(datetime(2025, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        gen.event_times(10, datetime(2025, 1, 1), 1.0)
    with pytest.raises(ValueError, match="timezone-aware"):
        TransactionGenerator(drift_at=datetime(2025, 1, 1))


@pytest.mark.parametrize(("rate", "lo", "hi"), [(0.005, 0.003, 0.007), (0.1, 0.085, 0.115)])
def test_fraud_share_matches_rate(rate: float, lo: float, hi: float) -> None:
    gen = TransactionGenerator(seed=5, fraud_rate=rate, n_cards=1000, n_merchants=200)
    labels = [f for _, f, _ in gen.simulate(60_000, T0, 20.0)]
    assert lo <= sum(labels) / len(labels) <= hi


def test_default_fraud_rate_is_well_under_one_percent() -> None:
    assert TransactionGenerator(n_cards=50, n_merchants=20).fraud_rate <= 0.005


def test_fraud_rate_one_is_all_fraud() -> None:
    gen = TransactionGenerator(seed=5, fraud_rate=1.0, n_cards=200, n_merchants=50)
    assert all(f for _, f in _run(gen, 2000))
    assert gen.pending <= 256


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


def test_event_times_are_sorted_in_range_and_diurnal() -> None:
    gen = TransactionGenerator(seed=4, n_cards=2000, n_merchants=100)
    times = gen.event_times(50_000, T0, 7.0)
    assert times == sorted(times)
    assert T0 <= times[0] and times[-1] <= T0 + timedelta(days=7)
    per_hour = Counter(t.hour for t in times)
    intensity = gen.hourly_intensity()
    busiest = max(range(24), key=intensity.__getitem__)
    quietest = min(range(24), key=intensity.__getitem__)
    assert per_hour[busiest] > 1.5 * per_hour[quietest]
    assert gen.event_times(10, T0, 1.0) == gen.event_times(10, T0, 1.0)


def test_legit_spending_follows_active_hours(fraud_heavy) -> None:
    gen, rows = fraud_heavy
    cards = {c.card_id: c for c in gen.cards}
    legit = [r for r, f, _ in rows if not f]
    inside = sum(cards[r["card_id"]].is_active(int(_ts(r) // 3600) % 24) for r in legit)
    assert inside / len(legit) > 0.85


def test_all_fraud_patterns_occur(fraud_heavy) -> None:
    _, rows = fraud_heavy
    seen = Counter(p for _, f, p in rows if f)
    assert set(seen) == set(FRAUD_PATTERNS)
    assert all(p is None for _, f, p in rows if not f)


def test_card_testing_is_small_online_bursts(fraud_heavy) -> None:
    _, rows = fraud_heavy
    stamps: dict[str, list[float]] = defaultdict(list)
    for rec, _, p in rows:
        if p == "card_testing":
            assert 0.5 <= rec["amount"] <= 5.0
            assert rec["channel"] == "online"
            stamps[rec["card_id"]].append(_ts(rec))
    testing = [r for r, _, p in rows if p == "card_testing"]
    cats = Counter(r["merchant_category"] for r in testing)
    assert (cats["gaming"] + cats["online_retail"]) / len(testing) > 0.6
    # Bursts: several charges per card within minutes.
    bursts = [s for s in stamps.values() if len(s) >= 3]
    assert len(bursts) > 0.8 * len(stamps)
    assert median(max(s) - min(s) for s in bursts) < 1800
    legit_small = sum(1 for r, f, _ in rows if not f and r["amount"] <= 5.0)
    assert legit_small / sum(1 for _, f, _ in rows if not f) < 0.2


def test_account_takeover_is_large_foreign_online_at_odd_hours(fraud_heavy) -> None:
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
    # The episode starts outside the holder's active hours.
    firsts: dict[str, dict] = {}
    for rec in ato:
        firsts.setdefault(rec["card_id"], rec)
    odd = [not cards[c].is_active(int(_ts(r) // 3600) % 24) for c, r in firsts.items()]
    assert sum(odd) / len(odd) > 0.9
    legit = [r for r, f, _ in rows if not f]
    home_share = sum(r["country"] == cards[r["card_id"]].home_country for r in legit) / len(legit)
    assert home_share > 0.9


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
    assert spree and median(spree) > 4 * median(legit)
    assert all(
        r["country"] == cards[r["card_id"]].home_country
        for r, _, p in rows
        if p == "compromised_card"
    )


def test_compromised_merchant_hits_many_cards_at_one_merchant_over_days(fraud_heavy) -> None:
    _, rows = fraud_heavy
    by_merchant: dict[str, list[dict]] = defaultdict(list)
    for rec, _, p in rows:
        if p == "compromised_merchant":
            by_merchant[rec["merchant_id"]].append(rec)
    big = [recs for recs in by_merchant.values() if len(recs) >= 5]
    assert big
    for recs in big:
        assert len({r["card_id"] for r in recs}) >= 0.8 * len(recs)
        assert all(r["channel"] == "pos" for r in recs)
    assert median(max(map(_ts, recs)) - min(map(_ts, recs)) for recs in big) > 86400 / 2


def _at_merchant(rows: list[Row]) -> dict[str, list[tuple[float, bool, str | None]]]:
    out: dict[str, list[tuple[float, bool, str | None]]] = defaultdict(list)
    for rec, f, p in rows:
        out[rec["merchant_id"]].append((_ts(rec), f, p))
    return out


def test_compromised_terminal_makes_every_payment_there_fraud_for_days(fraud_heavy) -> None:
    _, rows = fraud_heavy
    by_merchant = _at_merchant(rows)
    hit = {m for m, txs in by_merchant.items() if any(p == "compromised_terminal" for *_, p in txs)}
    assert len(hit) >= 5
    spans = []
    for m in hit:
        stamps = [t for t, _, p in by_merchant[m] if p == "compromised_terminal"]
        lo, hi = min(stamps), max(stamps)
        spans.append(hi - lo)
        # Inside the window every payment at the merchant is fraud, whoever made it.
        assert all(f for t, f, _ in by_merchant[m] if lo <= t <= hi)
    assert median(spans) > 2 * 86400
    # The window ends: the same merchants take legit payments before or after it.
    legit_outside = sum(1 for m in hit if any(not f for _, f, _ in by_merchant[m]))
    assert legit_outside >= 0.8 * len(hit)


def test_compromised_terminal_payments_look_legit(fraud_heavy) -> None:
    """Regular customers, usual amounts, at home, at point of sale: unlike a merchant
    compromise, where a fraudster charges random cards."""
    gen, rows = fraud_heavy
    cards = {c.card_id: c for c in gen.cards}

    def regulars(pattern: str) -> float:
        recs = [r for r, _, p in rows if p == pattern]
        usual = sum(
            any(
                r["merchant_id"] == m.merchant_id
                for fav in cards[r["card_id"]].usual_merchants
                for m in fav
            )
            for r in recs
        )
        return usual / len(recs)

    assert regulars("compromised_terminal") > 0.5
    assert regulars("compromised_merchant") < 0.1
    terminal = [r for r, _, p in rows if p == "compromised_terminal"]
    ratio = median(r["amount"] / cards[r["card_id"]].spend_level for r in terminal)
    legit = median(r["amount"] / cards[r["card_id"]].spend_level for r, f, _ in rows if not f)
    assert 0.5 < ratio / legit < 2.0
    assert {r["merchant_category"] for r in terminal} <= {
        "grocery",
        "fuel",
        "restaurant",
        "pharmacy",
        "clothing",
    }


def test_compromised_terminals_before_and_after_the_drift(drifted) -> None:
    _, rows = drifted
    before = sum(p == "compromised_terminal" for _, _, p in rows[:30_000])
    after = sum(p == "compromised_terminal" for _, _, p in rows[30_000:])
    assert before > 50 and after > 50


def test_compromised_terminals_depend_only_on_seed_and_clock() -> None:
    def terminals(seed: int) -> list[tuple[str, str]]:
        gen = TransactionGenerator(seed=seed, fraud_rate=0.05, n_cards=500, n_merchants=100)
        return [
            (r["transaction_id"], r["merchant_id"])
            for r, _, p in gen.simulate(20_000, T0, 8.0)
            if p == "compromised_terminal"
        ]

    first = terminals(21)
    assert first and first == terminals(21)
    assert first != terminals(22)


def test_terminal_share_zero_has_no_compromised_terminals_and_keeps_the_rate() -> None:
    gen = TransactionGenerator(
        seed=5, fraud_rate=0.05, n_cards=1000, n_merchants=200, terminal_share=0.0
    )
    rows = list(gen.simulate(30_000, T0, 10.0))
    assert not any(p == "compromised_terminal" for _, _, p in rows)
    assert 0.04 <= sum(f for _, f, _ in rows) / len(rows) <= 0.06
    for bad in (-0.1, 1.0, "0.3", True):
        with pytest.raises(ValueError, match="terminal_share"):
            TransactionGenerator(n_cards=50, n_merchants=20, terminal_share=bad)  # type: ignore[arg-type]


def test_some_cards_are_much_more_active(fraud_heavy) -> None:
    _, rows = fraud_heavy
    counts = sorted(Counter(r["card_id"] for r, f, _ in rows if not f).values(), reverse=True)
    top = counts[: max(1, len(counts) // 10)]
    assert sum(top) / sum(counts) > 0.25


def test_drift_switches_the_fraud_mix_and_patterns(fraud_heavy, drifted) -> None:
    gen, rows = drifted
    assert gen.phase == 1
    before = Counter(p for _, f, p in rows[:30_000] if f)
    after = Counter(p for _, f, p in rows[30_000:] if f)

    def share(c: Counter, p: str) -> float:
        return c[p] / sum(c.values())

    assert share(after, "compromised_card") > share(before, "compromised_card") + 0.15
    assert share(after, "card_testing") < share(before, "card_testing") - 0.15
    # Takeovers after the drift stay in the holder's country; testing uses larger amounts.
    cards = {c.card_id: c for c in gen.cards}
    late_ato = [r for r, _, p in rows[31_000:] if p == "account_takeover"]
    assert late_ato
    home = sum(r["country"] == cards[r["card_id"]].home_country for r in late_ato)
    assert home / len(late_ato) > 0.9
    late_testing = [r["amount"] for r, _, p in rows[31_000:] if p == "card_testing"]
    assert late_testing and median(late_testing) > 5.0


def test_drift_at_a_time_and_set_phase() -> None:
    at = T0 + timedelta(seconds=100)
    gen = TransactionGenerator(seed=9, n_cards=100, n_merchants=30, drift_at=at)
    gen.next(T0)
    assert gen.phase == 0
    gen.next(at)
    assert gen.phase == 1
    other = TransactionGenerator(seed=9, n_cards=100, n_merchants=30)
    other.set_phase(1)
    assert other.phase == 1
    with pytest.raises(ValueError, match="phase"):
        other.set_phase(2)
