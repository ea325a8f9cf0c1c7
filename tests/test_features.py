from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta

from schemas import Transaction
from scorer.features import DENSE_FEATURES, FIRST_SEEN_GAP_S, MAX_CATEGORY_VALUES, FeatureBuilder

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
    assert "c1" not in builder.store.cards and "c0" in builder.store.cards


def test_category_vocabulary_is_bounded() -> None:
    builder = FeatureBuilder()
    txs = [tx(i, card=f"c{i}", merchant_category=f"cat{i}") for i in range(MAX_CATEGORY_VALUES + 5)]
    keys = {k for row in builder.build(txs).sparse for k in row}
    assert len(keys) == MAX_CATEGORY_VALUES + 1
    assert "merchant_category=other" in keys
