"""Label sources and trust: which labels the trainer learns, at what trust, and how fast.

Anyone who can write `labels` can claim to be anyone, so a label is judged by the `source` it
names, against the configuration (`labels.sources`):

- an unconfigured source is refused (quarantined: counted by source name, dead-lettered with
  reason `untrusted_source`); a label with no source is learned at `labels.missing_source`
  (`trusted` by default; `refuse` refuses it as `missing_source`);
- a configured source is learned at its level, ranked low < trusted < authoritative: a later
  label from a higher level overrides an earlier contradicting one (`Joiner.add_label`);
  trusted and authoritative labels also judge candidate models (`Guardrails`);
- each admitted source has its own token bucket (`rate_limited` beyond it).

The buckets run on the labels' record timestamps, not on the wall clock: a trainer catching
up on a backlog (after an outage, a restart, a replay) reads hours of labels in seconds, and
a wall-clock bucket would refuse the real labels of a busy source then. A writer can forge
timestamps, so a bucket's clock only moves forward and never past the wall clock: forged
times refill it no faster than real time.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from infra.config import LabelSettings, LabelSourceSettings, TrustLevel
from trainer.maturation import wall_clock_us

# Trust ranks; 0 is "not admitted". Comparisons between ranks decide overrides.
LOW, TRUSTED, AUTHORITATIVE = 1, 2, 3
RANKS: dict[TrustLevel, int] = {"low": LOW, "trusted": TRUSTED, "authoritative": AUTHORITATIVE}
# Labels at or above this rank judge candidate models (trainer/guardrails.py).
JUDGING_RANK = TRUSTED

Refusal = Literal["untrusted_source", "missing_source", "rate_limited"]

# Metric label values: a label without a source, and refused names beyond the tracked cap.
NO_SOURCE = "(none)"
OTHER_SOURCES = "(other)"
# Longest source name used as a metric label value (longer names are cut).
MAX_METRIC_NAME = 64


@dataclass(slots=True)
class TokenBucket:
    """`rate` tokens per second of label time, at most `capacity`; starts full."""

    rate: float
    capacity: float
    tokens: float
    clock_us: int = 0

    def take(self, time_us: int) -> bool:
        if time_us > self.clock_us:
            if self.clock_us:
                elapsed = (time_us - self.clock_us) / 1e6
                self.tokens = min(self.capacity, self.tokens + elapsed * self.rate)
            self.clock_us = time_us
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return True
        return False


@dataclass(frozen=True, slots=True)
class Verdict:
    rank: int  # 0: refused
    reason: Refusal | None
    source: str  # the name to count it under (bounded set: see LabelGate.metric_name)


class LabelGate:
    """Decides, label by label, whether it is learned and at what rank."""

    def __init__(self, cfg: LabelSettings, wall_clock: Callable[[], int] = wall_clock_us) -> None:
        self.cfg = cfg
        self.wall_clock = wall_clock
        self.levels: dict[str, TrustLevel] = {}
        self.rates: dict[str, float] = {}
        for name, entry in cfg.sources.items():
            if isinstance(entry, LabelSourceSettings):
                level, rate = entry.trust, entry.rate_per_s
            else:
                level, rate = entry, None
            self.levels[name] = level
            self.rates[name] = rate if rate is not None else cfg.rate_per_s.get(level, 0.0)
        # Buckets exist only for admitted sources: as many as configured, plus "no source".
        self.buckets: dict[str, TokenBucket | None] = {}
        self._named: set[str] = set()  # refused names counted by name (capped)

    def admit(self, source: str | None, time_us: int) -> Verdict:
        """`time_us`: the label's record timestamp (microseconds; 0 when unknown)."""
        if source is None:
            level = self.cfg.missing_source
            if level == "refuse":
                return Verdict(0, "missing_source", NO_SOURCE)
            key, rate = NO_SOURCE, self.cfg.rate_per_s.get(level, 0.0)
        else:
            found = self.levels.get(source)
            if found is None:
                return Verdict(0, "untrusted_source", self.metric_name(source))
            level, key, rate = found, source, self.rates[source]
        if not self._take(key, rate, time_us):
            return Verdict(0, "rate_limited", key[:MAX_METRIC_NAME])
        return Verdict(RANKS[level], None, key[:MAX_METRIC_NAME])

    def _take(self, key: str, rate: float, time_us: int) -> bool:
        if rate <= 0:
            return True
        bucket = self.buckets.get(key)
        if bucket is None:
            capacity = max(1.0, rate * self.cfg.burst_s)
            bucket = self.buckets[key] = TokenBucket(rate, capacity, capacity)
        now = self.wall_clock()
        return bucket.take(min(time_us, now) if time_us > 0 else now)

    def metric_name(self, source: str) -> str:
        """A refused source's name as a metric label value: the first `max_tracked_sources`
        names by name, the rest as one: a flood of invented names cannot grow the metrics."""
        name = source[:MAX_METRIC_NAME]
        if name in self._named:
            return name
        if len(self._named) < self.cfg.max_tracked_sources:
            self._named.add(name)
            return name
        return OTHER_SOURCES
