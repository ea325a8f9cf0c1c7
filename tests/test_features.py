from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

import pytest

from core.contracts import Transaction
from core.features import DENSE_FEATURES, FIRST_SEEN_GAP_S, FeatureBuilder
from core.label_state import FEATURES as LABEL_FEATURES
from core.label_state import LabelState
from core.vocabulary import MAX_CATEGORY_VALUES, ONE_HOT

T0 = datetime(2026, 11, 22, 3, 0, tzinfo=UTC)  # a Sunday, 03:00 UTC


def tx(
    i: int, card: str = "c1", amount: float = 10.0, dt_s: float = 0.0, **kw: object
) -> Transaction:
    return Transaction(
        transaction_id=f"t{i}",
        card_id=card,
        amount=amount,
        merchant_category=str(kw.pop("merchant_category", "grocery")),
        timestamp=T0 + timedelta(seconds=dt_s),
        **kw,  # type: ignore[arg-type]
    )


def test_first_transaction_of_a_card() -> None:
    x = FeatureBuilder().build([tx(0, country="FR", channel="pos")]).row_dict(0)
    assert x["amount"] == 10.0
    assert x["log_amount"] == math.log1p(10.0)
    assert (x["hour"], x["day_of_week"], x["is_night"]) == (3.0, 6.0, 1.0)
    assert x["first_seen"] == 1.0
    assert x["log_seconds_since_last"] == math.log1p(FIRST_SEEN_GAP_S)
    assert x["log_amount_ratio"] == 0.0
    assert x["merchant_category=grocery"] == 1.0 and x["channel=pos"] == 1.0
    assert set(DENSE_FEATURES) <= x.keys()


def test_per_card_history_drives_the_next_features() -> None:
    builder = FeatureBuilder()
    builder.build([tx(0, amount=10.0, country="FR")])
    x = builder.build([tx(1, amount=1000.0, dt_s=60.0, country="US")]).row_dict(0)
    assert x["first_seen"] == 0.0
    assert x["log_seconds_since_last"] == math.log1p(60.0)
    assert x["log_amount_ratio"] == math.log1p(1000.0) - math.log1p(10.0)
    assert x["country_changed"] == 1.0
    assert 1.9 < x["velocity_1h"] <= 2.0
    # Another card is unaffected.
    other = builder.build([tx(2, card="c2", dt_s=61.0)]).row_dict(0)
    assert other["first_seen"] == 1.0


def test_out_of_order_event_counts_as_simultaneous() -> None:
    builder = FeatureBuilder()
    builder.build([tx(0, dt_s=100.0)])
    x = builder.build([tx(1, dt_s=50.0)]).row_dict(0)
    assert x["log_seconds_since_last"] == 0.0


def test_card_state_is_bounded_and_evicts_least_recent() -> None:
    builder = FeatureBuilder(max_cards=3)
    builder.build([tx(i, card=f"c{i}") for i in range(3)])
    builder.build([tx(9, card="c0")])  # c0 becomes most recent
    builder.build([tx(10, card="c3")])  # evicts c1
    assert len(builder.store) == 3 and builder.store.evicted == 1
    assert "c1" not in builder.store and "c0" in builder.store


def test_category_vocabulary_is_bounded() -> None:
    builder = FeatureBuilder()
    txs = [tx(i, card=f"c{i}", merchant_category=f"cat{i}") for i in range(MAX_CATEGORY_VALUES + 5)]
    keys = {k for row in builder.build(txs).sparse for k in row}
    assert len(keys) == MAX_CATEGORY_VALUES + 1
    assert "merchant_category=other" in keys


def test_history_features_are_neutral_on_first_sight() -> None:
    x = FeatureBuilder().build([tx(0, country="FR", merchant_id="m1")]).row_dict(0)
    for name in (
        "country_changed",
        "country_new",
        "merchant_new",
        "amount_zscore",
        "log_gap_vs_usual",
        "hour_unusual",
    ):
        assert x[name] == 0.0, name
    assert x["velocity_24h"] == 1.0
    assert x["log_spend_24h"] == math.log1p(10.0)


def test_card_habits_drive_the_new_features() -> None:
    builder = FeatureBuilder()
    # A daily routine: 12 purchases of ~20 at the same two merchants, at 03:00 UTC, in FR.
    routine = [
        tx(i, amount=20.0 + i % 3, dt_s=i * 86400.0, country="FR", merchant_id=f"m{i % 2}")
        for i in range(12)
    ]
    builder.build(routine)
    usual = builder.build(
        [tx(20, amount=21.0, dt_s=12 * 86400.0, country="FR", merchant_id="m0")]
    ).row_dict(0)
    assert usual["merchant_new"] == 0.0 and usual["country_new"] == 0.0
    assert abs(usual["amount_zscore"]) < 1.0
    assert usual["amount_excess"] == max(usual["amount_zscore"], 0.0)
    assert usual["amount_excess_sq"] == usual["amount_excess"] ** 2
    assert usual["hour_unusual"] < 0.1
    assert abs(usual["log_gap_vs_usual"]) < 0.5
    # Twelve hours later, ten times the amount, abroad, at a new merchant.
    odd = builder.build(
        [tx(21, amount=210.0, dt_s=12.5 * 86400.0, country="BR", merchant_id="m9")]
    ).row_dict(0)
    assert odd["merchant_new"] == 1.0 and odd["country_new"] == 1.0
    assert odd["country_changed"] == 1.0
    assert odd["amount_zscore"] > 3.0
    assert odd["amount_excess"] == odd["amount_zscore"]
    assert odd["amount_excess_sq"] == pytest.approx(odd["amount_zscore"] ** 2)
    assert odd["hour_unusual"] > 1.5
    assert odd["log_gap_vs_usual"] < -0.5
    assert odd["velocity_24h"] > usual["velocity_24h"]
    assert odd["log_spend_24h"] > math.log1p(210.0)
    # Back home: the country changed but is not new to the card.
    home = builder.build([tx(22, dt_s=12.6 * 86400.0, country="FR")]).row_dict(0)
    assert home["country_changed"] == 1.0 and home["country_new"] == 0.0


def test_bursts_raise_velocity_and_shorten_the_gap() -> None:
    builder = FeatureBuilder()
    builder.build([tx(i, dt_s=i * 86400.0) for i in range(5)])
    rows = builder.build([tx(10 + i, dt_s=5 * 86400.0 + 60.0 * i) for i in range(4)]).dicts()
    assert rows[-1]["velocity_1h"] > 3.5
    assert rows[-1]["log_gap_vs_usual"] < -5.0


def test_risk_features_use_only_labels_already_observed() -> None:
    builder = FeatureBuilder()
    prior = builder.build([tx(0, merchant_id="bad", country="FR")]).row_dict(0)
    for name in LABEL_FEATURES:
        assert prior[name] == builder.labels.prior
    victims = [tx(i, card=f"v{i}", merchant_id="bad", country="FR") for i in range(1, 11)]
    builder.build(victims)
    # Nothing learned before the labels arrive.
    before = builder.build([tx(50, card="z", merchant_id="bad")]).row_dict(0)
    assert before["merchant_risk_7d"] == prior["merchant_risk_7d"]
    for v in victims:
        builder.observe_label(v, True)
    for i in range(30):
        builder.observe_label(tx(100 + i, merchant_id="good"), False)
    after = builder.build(
        [tx(60, card="y", merchant_id="bad"), tx(61, card="w", merchant_id="good")]
    ).dicts()
    for window in ("1d", "7d", "30d"):
        name = f"merchant_risk_{window}"
        assert after[0][name] > 0.5
        assert after[1][name] < builder.labels.prior


def test_label_state_is_bounded_and_shareable() -> None:
    labels = LabelState(max_keys=5)
    a, b = FeatureBuilder(labels=labels), FeatureBuilder(labels=labels)
    for i in range(8):
        a.observe_label(tx(i, merchant_id=f"m{i}"), i % 2 == 0)
    assert len(labels.merchant) == 5 and labels.merchant.evicted == 3
    # m7 was labelled legit: below the prior in the other builder too; m0 was forgotten.
    rows = b.build([tx(20, merchant_id="m7"), tx(21, card="c2", merchant_id="m0")]).dicts()
    assert rows[0]["merchant_risk_30d"] < labels.prior
    assert rows[1]["merchant_risk_30d"] == labels.prior


def test_features_do_not_depend_on_batching_or_later_records() -> None:
    import random

    rng = random.Random(3)
    txs = [
        tx(
            i,
            card=f"c{rng.randrange(30)}",
            amount=round(rng.lognormvariate(3, 1), 2),
            dt_s=i * rng.uniform(1, 900),
            country=rng.choice(["FR", "US", None]),
            merchant_id=rng.choice(["m1", "m2", "m3", None]),
        )
        for i in range(600)
    ]
    whole = FeatureBuilder().build(txs).dense
    builder = FeatureBuilder()
    parts = [builder.build(txs[lo : lo + 37]).dense for lo in range(0, 600, 37)]
    assert (whole == __import__("numpy").concatenate(parts)).all()
    # A prefix alone gives the same rows: nothing looks ahead.
    assert (FeatureBuilder().build(txs[:250]).dense == whole[:250]).all()


def test_one_hot_ids_name_the_same_keys_and_values_past_the_limit_are_not_kept() -> None:
    builder = FeatureBuilder()
    n = MAX_CATEGORY_VALUES + 50
    txs = [
        tx(i, card=f"c{i}", merchant_category=f"cat{i}", channel=None if i % 3 else "web")
        for i in range(n)
    ]
    batch = builder.build(txs)
    assert batch.onehot is not None and batch.onehot.shape == (n, 2)
    for i, keys in enumerate(batch.sparse):
        assert [ONE_HOT.names[j] for j in batch.onehot[i] if j >= 0] == list(keys)
        assert (batch.onehot[i, 1] >= 0) == (txs[i].channel is not None)
    # Values past the limit share "other" and are not remembered (hostile input is bounded).
    assert len(builder.categories.ids) == MAX_CATEGORY_VALUES + 1  # + None
    again = builder.build([tx(n + 1, merchant_category=f"cat{n - 1}")])
    assert again.sparse == [("merchant_category=other",)]
