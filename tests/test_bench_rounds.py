"""Paired bench rounds: which rounds the medians use when the hypervisor steals CPU."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from fraudstream.benchmark.run import PairedRounds
from fraudstream.benchmark.steal import StealMeter


class FixedSteal(StealMeter):
    def __init__(self, fraction: float | None) -> None:
        super().__init__()
        self._fixed = fraction

    def __exit__(self, *_: object) -> None:
        self.fraction = self._fixed


def meters(*fractions: float | None) -> Iterator[StealMeter]:
    return iter(FixedSteal(f) for f in fractions)


def counting(values: list[tuple[float, float]]) -> Callable[[], tuple[float, float]]:
    it = iter(values)
    return lambda: next(it)


def test_a_round_with_too_much_steal_is_repeated_and_left_out_of_the_medians() -> None:
    steal = meters(0.30, 0.0, 0.02)
    pairs = PairedRounds(max_steal=0.05)
    pairs.run(counting([(100.0, 10.0), (140.0, 100.0), (150.0, 110.0)]), 2, 6, lambda: next(steal))
    assert pairs.kept == [False, True, True]
    assert pairs.steal == [0.30, 0.0, 0.02]
    assert pairs.medians() == (145.0, 105.0)


def test_tries_bound_the_repeats_and_all_rounds_count_when_none_is_clean() -> None:
    steal = meters(0.5, 0.4, 0.3)
    pairs = PairedRounds(max_steal=0.05)
    pairs.run(counting([(1.0, 2.0), (3.0, 4.0), (5.0, 6.0), (7.0, 8.0)]), 2, 3, lambda: next(steal))
    assert pairs.kept == [False, False, False]
    assert pairs.medians() == (3.0, 4.0)


def test_unknown_steal_keeps_the_round() -> None:
    steal = meters(None)
    pairs = PairedRounds(max_steal=0.0)
    pairs.run(counting([(1.0, 2.0)]), 1, 3, lambda: next(steal))
    assert pairs.kept == [True]


def test_steal_meter_reports_a_share_of_the_cpu() -> None:
    with StealMeter() as meter:
        sum(range(100_000))
    assert meter.fraction is None or 0.0 <= meter.fraction <= 1.0
