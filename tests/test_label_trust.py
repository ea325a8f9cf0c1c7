"""Label trust as pure logic: which sources are learned and at what rank (LabelGate), and how
ranks meet in the join (overrides, replaced pending labels, one buffer per rank)."""

from __future__ import annotations

import pytest

from infra.config import ConfigError, LabelSettings, load_settings
from trainer.join import Joiner
from trainer.label_trust import (
    AUTHORITATIVE,
    LOW,
    NO_SOURCE,
    OTHER_SOURCES,
    TRUSTED,
    LabelGate,
)

S = 1_000_000  # microseconds per second
NOW = 1_800_000_000 * S


def gate(**cfg: object) -> LabelGate:
    return LabelGate(LabelSettings(**cfg), wall_clock=lambda: NOW)


def test_configured_sources_are_ranked_and_unconfigured_ones_refused() -> None:
    g = gate()
    assert g.admit("investigation", NOW).rank == AUTHORITATIVE
    assert g.admit("chargeback", NOW).rank == AUTHORITATIVE
    assert g.admit("customer", NOW).rank == LOW
    refused = g.admit("unknown-app", NOW)
    assert (refused.rank, refused.reason, refused.source) == (0, "untrusted_source", "unknown-app")


def test_a_label_without_a_source_is_learned_as_trusted_or_refused_if_configured() -> None:
    assert gate().admit(None, NOW).rank == TRUSTED
    v = gate(missing_source="refuse").admit(None, NOW)
    assert (v.rank, v.reason, v.source) == (0, "missing_source", NO_SOURCE)
    assert gate(missing_source="low").admit(None, NOW).rank == LOW


def test_rate_limit_runs_on_label_time_and_forged_times_do_not_refill() -> None:
    g = gate(sources={"app": {"trust": "trusted", "rate_per_s": 2.0}}, burst_s=5.0)
    t = NOW - 3600 * S  # a backlog an hour old: label time, not the wall clock
    admitted = [g.admit("app", t).reason is None for _ in range(12)]
    assert admitted == [True] * 10 + [False] * 2  # a burst of 2/s x 5 s
    assert g.admit("app", t).reason == "rate_limited"
    # Two seconds of label time later: four tokens back (replay speed does not matter).
    later = t + 2 * S
    assert [g.admit("app", later).reason for _ in range(5)] == [None] * 4 + ["rate_limited"]
    # A forged timestamp far in the future refills only up to the wall clock ...
    g2 = gate(sources={"app": {"trust": "trusted", "rate_per_s": 1.0}}, burst_s=1.0)
    assert g2.admit("app", NOW).reason is None
    assert g2.admit("app", NOW + 3600 * S).reason == "rate_limited"
    # ... and one in the past does not move the clock back (no refill on the way forward).
    assert g2.admit("app", NOW - 3600 * S).reason == "rate_limited"


def test_trust_levels_have_their_own_default_rates() -> None:
    g = gate(rate_per_s={"low": 1.0, "authoritative": 0.0, "trusted": 0.0}, burst_s=3.0)
    assert [g.admit("customer", NOW).reason for _ in range(4)] == [None] * 3 + ["rate_limited"]
    assert all(g.admit("investigation", NOW).reason is None for _ in range(10_000))


def test_refused_source_names_are_capped_against_a_flood_of_invented_names() -> None:
    g = gate(max_tracked_sources=3)
    names = {g.admit(f"app-{i}", NOW).source for i in range(10_000)}
    assert names == {"app-0", "app-1", "app-2", OTHER_SOURCES}
    assert g.admit("app-1", NOW).source == "app-1"
    assert g.admit("x" * 256, NOW).source == OTHER_SOURCES


def test_a_bad_trust_level_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError, match=r"labels\.sources\.customer"):
        load_settings(labels={"sources": {"customer": "sort-of"}})
    with pytest.raises(ConfigError, match=r"labels\.missing_source"):
        load_settings(labels={"missing_source": "maybe"})


# -- the join --------------------------------------------------------------------------------


def test_an_authoritative_label_overrides_a_learned_lower_one_once() -> None:
    j = Joiner(max_size=10, ttl_s=100)
    j.add_score("a", b"{}", 0.0, 0, 1)
    first = j.add_label("a", True, 1.0, 0, 1, trust=LOW)  # a customer says fraud
    assert first is not None and first.kind == "label" and first.trust == LOW
    over = j.add_label("a", False, 2.0, 0, 2, trust=AUTHORITATIVE)  # the investigator: no
    assert over is not None and over.kind == "override" and not over.is_fraud
    assert over.score_at == (0, 1) and over.label_at == (0, 2) and over.score_raw is None
    assert j.overriding_labels == 1
    # The overriding label now stands: a lower one contradicting it is a conflict, and an
    # equal one too (the first of a rank stands).
    assert j.add_label("a", True, 3.0, 0, 3, trust=LOW) is None
    assert j.add_label("a", True, 3.0, 0, 4, trust=AUTHORITATIVE) is None
    assert j.conflicting_labels == 2


def test_a_lower_label_never_overrides_and_an_agreeing_higher_one_raises_the_rank() -> None:
    j = Joiner(max_size=10, ttl_s=100)
    j.add_score("a", b"{}", 0.0, 0, 1)
    assert j.add_label("a", False, 1.0, 0, 1, trust=TRUSTED) is not None
    assert j.add_label("a", True, 2.0, 0, 2, trust=LOW) is None
    assert j.conflicting_labels == 1
    assert j.add_label("a", False, 3.0, 0, 3, trust=AUTHORITATIVE) is None  # agrees
    assert j.confirming_labels == 1
    # Now authoritative: a trusted contradiction is only a conflict.
    assert j.add_label("a", True, 4.0, 0, 4, trust=TRUSTED) is None
    assert j.conflicting_labels == 2 and j.overriding_labels == 0


def test_a_higher_label_replaces_a_lower_one_still_waiting_for_its_score() -> None:
    j = Joiner(max_size=10, ttl_s=100)
    assert j.add_label("a", True, 0.0, 0, 1, trust=LOW) is None
    assert j.add_label("a", False, 1.0, 0, 2, trust=AUTHORITATIVE) is None
    assert j.replaced_labels == 1 and len(j.labels) == 1
    joined = j.add_score("a", b"{}", 2.0, 0, 1)
    assert joined is not None and not joined.is_fraud and joined.trust == AUTHORITATIVE
    assert joined.label_at == (0, 2)


def test_a_low_trust_label_flood_cannot_evict_authoritative_pending_labels() -> None:
    j = Joiner(max_size=100, ttl_s=100)
    for i in range(50):
        j.add_label(f"real-{i}", i % 10 == 0, 0.0, 0, i, trust=AUTHORITATIVE)
    for i in range(10_000):  # labels for transactions nobody scored
        j.add_label(f"invented-{i}", True, 1.0, 0, 50 + i, trust=LOW)
    assert j.labels.evicted_full == 10_000 - 100
    assert len(j.labels) == 150
    for i in range(50):
        joined = j.add_score(f"real-{i}", b"{}", 2.0, 1, i)
        assert joined is not None and joined.is_fraud == (i % 10 == 0)
    # Resume offsets still cover the oldest pending label of every rank.
    assert j.labels.min_offsets() == {0: 50 + 10_000 - 100}


def test_a_low_trust_label_cannot_flip_a_matured_transaction() -> None:
    j = Joiner(max_size=10, ttl_s=100, maturation_us=10 * S)
    j.add_score("a", b"{}", 0.0, 0, 1, event_us=NOW)
    j.add_score("b", b"{}", 0.0, 0, 2, event_us=NOW)
    assert len(j.mature(NOW + 11 * S, 1.0)) == 2
    assert j.add_label("a", True, 2.0, 0, 1, trust=LOW) is None
    assert j.conflicting_labels == 1
    late = j.add_label("b", True, 2.0, 0, 2, trust=TRUSTED)
    assert late is not None and late.kind == "late" and late.trust == TRUSTED
