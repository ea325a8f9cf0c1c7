"""Deterministic synthetic card transactions, with labelled fraud, for demos, tests and evaluation.

Pure code, no Kafka: the producer publishes what `TransactionGenerator.next` returns, and
`fraudstream evaluate` replays `TransactionGenerator.simulate` on a simulated clock.

This module is the record/label stream: it interleaves legit spending (drawn from the
card holders and merchants of `producer.population`) with the fraud of
`producer.fraud_scenarios`, at the rates `fraud_rate` and `terminal_share` ask for, and owns
the phase (the drift) and the simulated event clock. Every transaction is drawn with one
seeded `random.Random`. The caller owns the clock (wall time for live runs, a simulated clock
for backfills and evaluation): the same seed and the same sequence of event times give the
same stream, record for record.

An episode's first transaction is emitted when it starts; the others are queued with the
event time they are due at and emitted, one per call, once the clock reaches it (or when the
queue is full), interleaved with legit traffic.

Drift: `drift_at` (a call count or an event time) or `set_phase(1)` switches the generator to
phase 1, where fraudsters have adapted to what gave them away (see `producer.fraud_scenarios`)
and legit holders travel more (a travel season). A model that never updates keeps looking for
the old traces.

Merchant compromises run for days, so a short live run (wall clock) emits only their first
transactions until the pending queue fills: the fraud share then starts below `fraud_rate`.
Terminal compromises too are timed in event time: a live run starts with the terminals a
process of that rate would have compromised over the previous days, and sees new ones only
every few days of wall time.
"""

from __future__ import annotations

import heapq
import math
import random
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from producer.fraud_scenarios import (
    COMPROMISED_TERMINAL,
    PHASES,
    TERMINAL_DAYS,
    TERMINAL_SHARE,
    EpisodeBuilder,
    TerminalCompromises,
)
from producer.population import (
    CATEGORIES,
    DAY_S,
    CardProfile,
    Merchant,
    Population,
    weighted_index,
)

__all__ = ["TransactionGenerator"]

# Queued fraud is emitted once due; a full queue emits its earliest entry at once, so the
# queue stays bounded whatever the clock (and at fraud_rate=1).
_MAX_PENDING = 256


def _validate_fraud_rate(fraud_rate: float) -> float:
    if isinstance(fraud_rate, bool) or not isinstance(fraud_rate, int | float):
        raise ValueError(f"fraud_rate must be a number, 0 or in (0, 1], got {fraud_rate!r}")
    if not (math.isfinite(fraud_rate) and 0.0 <= fraud_rate <= 1.0):
        raise ValueError(f"fraud_rate must be 0 or in (0, 1], got {fraud_rate!r}")
    return float(fraud_rate)


class TransactionGenerator:
    """Endless, reproducible stream of card transactions with a known fraud label.

    `drift_at`: an int switches to phase 1 after that many calls; a datetime at the first
    call whose event time reaches it; None keeps phase 0 unless `set_phase` is called.
    `terminal_share`: the share of fraud that comes from compromised terminals (0: none).
    """

    def __init__(
        self,
        seed: int = 42,
        fraud_rate: float = 0.005,
        n_cards: int = 5000,
        n_merchants: int = 800,
        drift_at: int | datetime | None = None,
        terminal_share: float = TERMINAL_SHARE,
    ) -> None:
        self.fraud_rate = _validate_fraud_rate(fraud_rate)
        if not (
            isinstance(terminal_share, int | float)
            and not isinstance(terminal_share, bool)
            and 0.0 <= terminal_share < 1.0
        ):
            raise ValueError(f"terminal_share must be in [0, 1), got {terminal_share!r}")
        self.terminal_share = float(terminal_share)
        if n_cards < 1:
            raise ValueError(f"n_cards must be >= 1, got {n_cards}")
        if n_merchants < len(CATEGORIES):
            raise ValueError(
                f"n_merchants must be >= {len(CATEGORIES)} (one per category), got {n_merchants}"
            )
        if isinstance(drift_at, datetime) and drift_at.utcoffset() is None:
            raise ValueError("drift_at must be timezone-aware")
        if isinstance(drift_at, int) and drift_at < 0:
            raise ValueError(f"drift_at must be >= 0, got {drift_at}")
        self.seed = seed
        self.drift_at = drift_at
        self._population = Population(seed, n_cards, n_merchants)

        # Salted so it is not the very stream Faker built the pools from (Faker seeds a plain
        # random.Random with `seed`); str seeds are hashed with SHA-512, stable across runs.
        self._rng = random.Random(f"fraudstream-generator:{seed}")
        self._episodes = EpisodeBuilder(self._rng, self._population)
        self._pending: list[tuple[float, int, dict[str, Any], str]] = []  # heap by due time
        self._seq = 0
        self._terminals = TerminalCompromises(seed, self._population.merchants)
        self.calls = 0
        self.phase = 0
        self._set_mix(0)
        self.last_pattern: str | None = None  # fraud pattern of the last record, None if legit
        self._last_time: datetime | None = None
        self._last_ts = ""
        self._now = 0.0

    @property
    def cards(self) -> tuple[CardProfile, ...]:
        return self._population.cards

    @property
    def merchants(self) -> tuple[Merchant, ...]:
        return self._population.merchants

    @property
    def pending(self) -> int:
        """Fraud transactions queued for later calls."""
        return len(self._pending)

    @property
    def compromised_terminals(self) -> dict[str, tuple[float, float]]:
        """Terminals compromised now or until lately: merchant_id -> (since, until), epoch s."""
        return dict(self._terminals.active)

    @property
    def compromises(self) -> int:
        """Terminal compromises that were active during the stream."""
        return self._terminals.count

    def set_phase(self, phase: int) -> None:
        """Switch the fraud mix and patterns: 0 (initial) or 1 (after the drift)."""
        if phase not in (0, 1):
            raise ValueError(f"phase must be 0 or 1, got {phase!r}")
        self.phase = phase
        self._set_mix(phase)

    def _set_mix(self, phase: int) -> None:
        mix = PHASES[phase]
        self._mix_names = tuple(mix)
        # Episode weights from the wanted share of transactions: share / mean episode length.
        episodes = [share / ((lo + hi) / 2) for share, lo, hi in mix.values()]
        self._mix_cum = tuple(accumulate(episodes))
        mean_len = sum(share for share, _, _ in mix.values()) / self._mix_cum[-1]
        # Compromised terminals take a share t of all calls, episodes the rest of the fraud:
        # t = share * f * (1 - f), so that at f = 1 every call is still episode fraud.
        f = self.fraud_rate
        terminal = self.terminal_share * f * (1.0 - f)
        f_episode = f - terminal
        # Chance that a call free of due fraud starts an episode. With mean episode length
        # L, a share f of all calls is fraud when p = f / (L(1 - f) + f).
        self._p_episode = f_episode / (mean_len * (1.0 - f_episode) + f_episode) if f > 0 else 0.0
        # Terminals compromised per second of event time: hold a share q of the legit draws
        # compromised, q * n_merchants terminals at a time, each for the mean duration.
        q = terminal / (1.0 - f_episode) if f_episode < 1.0 else 0.0
        mean_days = sum(TERMINAL_DAYS) / 2
        self._compromise_rate = q * len(self._population.merchants) / (mean_days * DAY_S)

    def hourly_intensity(self) -> list[float]:
        """Relative legit transaction rate per UTC hour (0-23), from the cards' habits."""
        return self._population.hourly_intensity()

    # ---------------------------------------------------------------- simulated clock

    def event_times(self, n: int, start: datetime, days: float) -> list[datetime]:
        """`n` sorted event times over `days` from `start`, denser in the busy hours.

        A Poisson process whose rate follows `hourly_intensity`; drawn from its own seeded
        stream, so it does not shift the transactions.
        """
        if start.utcoffset() is None:
            raise ValueError("start must be timezone-aware")
        if n < 0 or not days > 0:
            raise ValueError("need n >= 0 and days > 0")
        rng = random.Random(f"fraudstream-clock:{self.seed}")
        intensity = self.hourly_intensity()
        t0 = start.timestamp()
        n_bins = max(1, math.ceil(days * 24))
        span = days * DAY_S
        bins = []  # (start offset s, length s, mass)
        for b in range(n_bins):
            lo = b * 3600.0
            length = min(3600.0, span - lo)
            hour = int(((t0 + lo) // 3600) % 24)
            bins.append((lo, length, intensity[hour] * length))
        cum = list(accumulate(m for _, _, m in bins))
        total = cum[-1]
        us = sorted(rng.random() * total for _ in range(n))
        out = []
        j = 0
        for u in us:
            while cum[j] < u:
                j += 1
            lo, length, mass = bins[j]
            before = cum[j] - mass
            offset = lo + (u - before) / mass * length if mass > 0 else lo
            out.append(start + timedelta(seconds=offset))
        return out

    def simulate(
        self, n: int, start: datetime, days: float
    ) -> Iterator[tuple[dict[str, Any], bool, str | None]]:
        """`n` transactions over `days` on a simulated diurnal clock: (record, label, pattern)."""
        for t in self.event_times(n, start, days):
            record, is_fraud = self.next(t)
            yield record, is_fraud, self.last_pattern

    # ---------------------------------------------------------------- per transaction

    def next(self, event_time: datetime) -> tuple[dict[str, Any], bool]:
        """One transaction at `event_time` (timezone-aware) as a wire dict, and its label."""
        if event_time is not self._last_time:
            if event_time.utcoffset() is None:
                raise ValueError("event_time must be timezone-aware")
            self._last_ts = event_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
            self._last_time = event_time
            self._now = event_time.timestamp()
        drift = self.drift_at
        if self.phase == 0 and drift is not None:
            if drift <= self.calls if isinstance(drift, int) else drift <= event_time:
                self.set_phase(1)
        self.calls += 1
        rng = self._rng
        pending = self._pending
        now = self._now
        if self._compromise_rate:
            self._terminals.advance(now, self._compromise_rate)
        pattern: str | None
        if pending and (pending[0][0] <= now or len(pending) >= _MAX_PENDING):
            _, _, body, pattern = heapq.heappop(pending)
        elif self._p_episode and rng.random() < self._p_episode:
            body, pattern = self._start_episode()
        else:
            # A holder paying as usual; at a compromised terminal, that payment is fraud.
            body = self._population.legit(rng, now, self.phase)
            compromised = body["merchant_id"] in self._terminals.active
            pattern = COMPROMISED_TERMINAL if compromised else None
        self.last_pattern = pattern
        record = {"transaction_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        record.update(body)
        record["timestamp"] = self._last_ts
        return record, pattern is not None

    def _start_episode(self) -> tuple[dict[str, Any], str]:
        rng = self._rng
        name = self._mix_names[weighted_index(rng.random(), self._mix_cum)]
        _, lo, hi = PHASES[self.phase][name]
        n = rng.randint(lo, hi)
        steps = self._episodes.build(name, self.phase, n, int(self._now // 3600) % 24)
        for delay, body in steps[1:]:
            self._seq += 1
            heapq.heappush(self._pending, (self._now + delay, self._seq, body, name))
        return steps[0][1], name
