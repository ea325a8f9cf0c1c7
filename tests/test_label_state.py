"""The label-fed state (`core.label_state`): what it computes, that it does not depend on the
order labels arrive in, that it survives its data format, and that bad data is refused."""

from __future__ import annotations

import math
import random

import numpy as np
import orjson
import pytest

from core.byte_hash import hash_strings
from core.label_state import DAY_S, FEATURES, LabelState, LabelStateError

T0 = 1_767_225_600.0  # 2026-01-01


def _columns(state: LabelState, merchants: list[str | None]) -> np.ndarray:
    n = len(merchants)
    out = np.empty((n, len(FEATURES)))
    cats = ["food"] * n
    countries = ["FR"] * n
    state.columns(hash_strings(merchants), hash_strings(cats), hash_strings(countries), out)
    return out


def _labels(n: int, seed: int) -> list[tuple[str, str, str, bool, float]]:
    rng = random.Random(seed)
    return [
        (f"m{rng.randrange(20)}", rng.choice(["food", "travel"]), rng.choice(["FR", "DE"]),
         rng.random() < 0.2, T0 + rng.uniform(0, 40 * DAY_S))
        for _ in range(n)
    ]  # fmt: skip


def test_one_fraud_label_lifts_the_merchant_above_the_prior_and_decays_on_the_label_clock() -> None:
    state = LabelState(prior=0.01)
    state.observe("shop", "food", "FR", True, T0)
    now = _columns(state, ["shop", "other", None])
    prior = state.prior
    merchant = slice(0, 3)
    # (1 + 2p) / (1 + 2) for each window, right after the label.
    expected = (1 + 2 * prior) / 3
    assert now[0, merchant] == pytest.approx([expected] * 3)
    assert (now[1, merchant] == prior).all() and (now[2, merchant] == prior).all()
    # Time alone forgets nothing: a week without labels (a label pipeline down, or labels
    # that take a week) leaves the shares as the last labels left them.
    assert state.clock == T0
    # The label clock moves with labels for other merchants a week later: the 1-day window
    # has forgotten the fraud, the 30-day one hardly.
    state.observe("elsewhere", "food", "FR", False, T0 + 7 * DAY_S)
    later = _columns(state, ["shop"])[0, merchant]
    assert later[0] == pytest.approx(state.prior, abs=0.01)
    assert later[0] < later[1] < later[2] < expected


def test_a_week_of_label_delay_does_not_empty_the_short_window() -> None:
    """Labels arrive a week after their transactions: the 1-day window holds the last day
    they reach, so a merchant whose latest labels are all fraud reads as compromised."""
    state = LabelState(prior=0.01)
    for i in range(4):
        state.observe("terminal", "food", "FR", True, T0 + i * 3600.0)
    scored_at = T0 + 7 * DAY_S  # when these labels arrive
    assert scored_at > state.clock
    share_1d = _columns(state, ["terminal"])[0, 0]
    weight = sum(math.exp(-h * 3600.0 / DAY_S) for h in range(4))
    assert share_1d == pytest.approx((weight + 2 * state.prior) / (weight + 2))
    assert share_1d > 0.6


def test_features_do_not_depend_on_the_order_labels_arrive_in() -> None:
    labels = _labels(500, 1)
    a, b = LabelState(), LabelState()
    for label in labels:
        a.observe(*label)
    for label in sorted(labels, key=lambda x: -x[4]):
        b.observe(*label)
    merchants = [f"m{i}" for i in range(25)]
    np.testing.assert_allclose(_columns(a, merchants), _columns(b, merchants), rtol=1e-12)


def test_state_survives_its_data_format_exactly() -> None:
    state = LabelState(prior=0.02, max_keys=50)
    for label in _labels(300, 2):
        state.observe(*label)
    wire = orjson.loads(orjson.dumps(state.to_data()))
    restored = LabelState.from_data(wire)
    merchants = [f"m{i}" for i in range(25)]
    assert (_columns(restored, merchants) == _columns(state, merchants)).all()
    # And it goes on learning identically.
    for s in (state, restored):
        s.observe("m3", "food", "FR", True, T0 + 44 * DAY_S)
    assert (_columns(restored, merchants) == _columns(state, merchants)).all()
    assert restored.labels == state.labels == 301


def test_tables_are_bounded_and_evictions_counted() -> None:
    state = LabelState(max_keys=10)
    for i in range(25):
        state.observe(f"m{i}", "food", "FR", False, T0 + i)
    assert len(state.merchant) == 10 and state.merchant.evicted == 15
    assert state.evicted == 15
    # The most recently labelled are kept.
    assert list(state.merchant.stats) == [f"m{i}" for i in range(15, 25)]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d.update(format="pickle"), "format"),
        (lambda d: d.update(prior=2.0), "prior"),
        (lambda d: d["tables"].pop("country"), "tables"),
        (lambda d: d["tables"]["merchant"].update(keys=["a", "a"]), "keys"),
        (lambda d: d["tables"]["merchant"].update(keys=[1]), "keys"),
        (lambda d: d["tables"]["merchant"].update(times="!!"), "base64"),
        (lambda d: d["tables"]["merchant"].update(windows_s=[1.0, 2.0, 3.0]), "windows"),
        (
            lambda d: d["tables"]["merchant"].update(counts=d["tables"]["merchant"]["times"]),
            "values",
        ),
        (lambda d: d.update(global_=None, **{"global": [0, 5, 1]}), "global"),
    ],
)
def test_malformed_state_is_refused_with_one_line(change, message: str) -> None:
    state = LabelState()
    state.observe("m1", "food", "FR", True, T0)
    data = orjson.loads(orjson.dumps(state.to_data()))
    change(data)
    with pytest.raises(LabelStateError, match=message) as info:
        LabelState.from_data(data)
    assert "\n" not in str(info.value)


def test_impossible_counts_are_refused() -> None:
    state = LabelState()
    state.observe("m1", "food", "FR", True, T0)
    data = state.to_data()
    # More frauds than labels in a window.
    counts = np.frombuffer(
        __import__("base64").b64decode(data["tables"]["merchant"]["counts"]), "<f8"
    ).copy()
    counts[0] = 5.0
    data["tables"]["merchant"]["counts"] = __import__("base64").b64encode(counts.tobytes()).decode()
    with pytest.raises(LabelStateError, match="impossible"):
        LabelState.from_data(data)


def test_more_keys_than_the_bound_are_refused() -> None:
    state = LabelState(max_keys=100)
    for i in range(20):
        state.observe(f"m{i}", "food", "FR", False, T0)
    with pytest.raises(LabelStateError, match="bound"):
        LabelState.from_data(state.to_data(), max_keys=10)


def test_a_correction_turns_an_earlier_label_into_the_new_verdict() -> None:
    corrected, direct = LabelState(), LabelState()
    for state in (corrected, direct):
        state.observe("m1", "food", "FR", False, T0)
    corrected.observe("m2", "food", "FR", False, T0 + 60)
    corrected.observe("m2", "food", "FR", True, T0 + 60, correction=True)
    direct.observe("m2", "food", "FR", True, T0 + 60)
    np.testing.assert_allclose(
        _columns(corrected, ["m1", "m2"]), _columns(direct, ["m1", "m2"]), rtol=1e-12
    )
    assert corrected.labels == direct.labels == 2
    # Back to legitimate: as if it had never been a fraud; counts never go below zero.
    corrected.observe("m2", "food", "FR", False, T0 + 60, correction=True)
    corrected.observe("m2", "food", "FR", False, T0 + 60, correction=True)
    assert min(corrected.merchant.stats["m2"][1:]) >= 0.0


def test_an_empty_state_survives_its_data_format() -> None:
    state = LabelState()
    state.observe(None, None, None, True, T0)  # a label with nothing to key: global share only
    restored = LabelState.from_data(orjson.loads(orjson.dumps(state.to_data())))
    assert len(restored.merchant) == 0 and restored.prior == state.prior
