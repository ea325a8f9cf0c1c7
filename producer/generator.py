"""Deterministic synthetic card transactions, with labelled fraud, for demos, tests and evaluation.

Pure code, no Kafka: the producer publishes what `TransactionGenerator.next` returns, and
`fraudstream evaluate` replays `TransactionGenerator.simulate` on a simulated clock.

Faker is slow, so it is only used once, in `__init__`, to build a pool of card holders and
merchants; every transaction is then drawn with one seeded `random.Random`. The caller owns
the clock (wall time for live runs, a simulated clock for backfills and evaluation): the same
seed and the same sequence of event times give the same stream, record for record.

Card holders have a home country (with its time zone), a spending level, usual categories and
a few usual merchants, a preferred channel, an activity level and active hours (local time):
the card making a legit purchase is drawn by activity weighted by whether the current event
time falls in its active hours, so legit spending follows each holder's day. Now and then a
holder travels abroad for a few days.

Fraud comes in episodes, each leaving a different trace:

- card testing: a burst of small online amounts on one card at one merchant, minutes apart;
- account takeover: a few large online purchases from a country that is not the holder's,
  at the holder's odd hours;
- compromised card: a spending spree over a few hours, several times the holder's usual spend;
- compromised merchant: a fraudster charges many different cards at one merchant over days;
- compromised terminal: a merchant's terminal is compromised (skimmed, or its card data
  stolen) at some moment, and every transaction made there for the next days is fraud: the
  merchant's own customers pay as they always do, and each of those payments is labelled
  fraud (the card is defrauded later). Nothing in the transaction itself looks odd; only the
  merchant's recent fraud history gives it away. Compromises start at random moments of the
  event clock (a Poisson process, drawn from a stream of their own), last 3-10 days, and are
  as frequent before and after the drift. This is the "compromised terminals" scenario of
  public card-fraud simulators (e.g. the Fraud Detection Handbook's).

An episode's first transaction is emitted when it starts; the others are queued with the
event time they are due at and emitted, one per call, once the clock reaches it (or when the
queue is full), interleaved with legit traffic.

Drift: `drift_at` (a call count or an event time) or `set_phase(1)` switches the generator to
phase 1, where fraudsters have adapted to what gave them away: the mix moves from card testing
to compromised cards; takeovers come through proxies in the holder's own country at ordinary
hours, with several purchases of a few times the usual size; cloned cards are spent in modest
amounts spaced an hour apart instead of in a burst; testing uses larger amounts further
apart. Legit holders travel more (a travel season). A model that never updates keeps looking
for the old traces.

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
from bisect import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from itertools import accumulate
from typing import Any

from faker import Faker

__all__ = [
    "CATEGORIES",
    "FRAUD_PATTERNS",
    "CardProfile",
    "Merchant",
    "TransactionGenerator",
]

# Home countries: (country, currency, share of card holders and merchants, UTC offset in hours).
_HOME_COUNTRIES: tuple[tuple[str, str, float, int], ...] = (
    ("US", "USD", 0.40, -5),
    ("GB", "GBP", 0.10, 0),
    ("DE", "EUR", 0.08, 1),
    ("FR", "EUR", 0.07, 1),
    ("CA", "CAD", 0.06, -5),
    ("ES", "EUR", 0.04, 1),
    ("IT", "EUR", 0.04, 1),
    ("NL", "EUR", 0.03, 1),
    ("AU", "AUD", 0.03, 10),
    ("BR", "BRL", 0.03, -3),
    ("IN", "INR", 0.03, 5),
    ("JP", "JPY", 0.03, 9),
    ("MX", "MXN", 0.02, -6),
    ("SE", "SEK", 0.02, 1),
    ("PL", "PLN", 0.02, 1),
)
# Where taken-over accounts are mostly used from; no card holder lives there.
_FRAUD_COUNTRIES: tuple[tuple[str, str], ...] = (
    ("NG", "NGN"),
    ("RO", "RON"),
    ("RU", "RUB"),
    ("ID", "IDR"),
    ("VN", "VND"),
    ("UA", "UAH"),
    ("PH", "PHP"),
)
_CURRENCY: dict[str, str] = {c: cur for c, cur, _, _ in _HOME_COUNTRIES} | dict(_FRAUD_COUNTRIES)
_UTC_OFFSET: dict[str, int] = {c: off for c, _, _, off in _HOME_COUNTRIES}
_HOME_CODES: tuple[str, ...] = tuple(c for c, _, _, _ in _HOME_COUNTRIES)
_HOME_WEIGHTS: tuple[float, ...] = tuple(w for _, _, w, _ in _HOME_COUNTRIES)

# Merchant category -> (share of all spending events, typical amount relative to the card's level).
_CATEGORY_PROFILE: dict[str, tuple[float, float]] = {
    "grocery": (0.22, 1.0),
    "restaurant": (0.16, 0.8),
    "fuel": (0.12, 1.0),
    "online_retail": (0.12, 1.2),
    "clothing": (0.07, 1.5),
    "pharmacy": (0.06, 0.6),
    "entertainment": (0.06, 0.7),
    "utilities": (0.05, 2.0),
    "electronics": (0.04, 3.0),
    "travel": (0.04, 4.0),
    "gaming": (0.04, 0.5),
    "jewelry": (0.02, 4.0),
}
CATEGORIES: tuple[str, ...] = tuple(_CATEGORY_PROFILE)
_CATEGORY_WEIGHTS: tuple[float, ...] = tuple(w for w, _ in _CATEGORY_PROFILE.values())
_CATEGORY_CUM: tuple[float, ...] = tuple(accumulate(_CATEGORY_WEIGHTS))
_CATEGORY_MULT: dict[str, float] = {c: m for c, (_, m) in _CATEGORY_PROFILE.items()}
_ONLINE_CATEGORIES = frozenset({"online_retail", "gaming", "utilities", "travel"})

# Legit behaviour.
_USUAL_CATEGORY_P = 0.85  # share of a card's spending at its usual categories
_USUAL_MERCHANT_P = 0.8  # within a usual category, share at one of the card's usual merchants
_TRIP_DAYS = (1.0, 10.0)
_TRIP_LOCAL_P = 0.85  # share of purchases during a trip made in the visited country
_PREFERRED_CHANNEL_P = 0.8  # share of a card's transactions on its preferred channel
_OFF_HOURS_WEIGHT = 0.04  # activity outside a card's active hours, relative to inside
_AMOUNT_SIGMA = 0.6  # per-transaction spread around the card's level (lognormal)
_AMOUNT_MU = -0.5 * _AMOUNT_SIGMA**2  # so the mean multiplier is 1
_MIN_AMOUNT = 0.01

# Fraud scenarios.
_CARD_TESTING = "card_testing"
_ACCOUNT_TAKEOVER = "account_takeover"
_COMPROMISED_CARD = "compromised_card"
_COMPROMISED_MERCHANT = "compromised_merchant"
_COMPROMISED_TERMINAL = "compromised_terminal"
FRAUD_PATTERNS: tuple[str, ...] = (
    _CARD_TESTING,
    _ACCOUNT_TAKEOVER,
    _COMPROMISED_CARD,
    _COMPROMISED_MERCHANT,
    _COMPROMISED_TERMINAL,
)
# Per phase: episode scenario -> (share of episode fraud, min, max transactions per episode).
_PHASES: tuple[dict[str, tuple[float, int, int]], ...] = (
    {
        _CARD_TESTING: (0.40, 3, 8),
        _ACCOUNT_TAKEOVER: (0.25, 1, 3),
        _COMPROMISED_CARD: (0.10, 2, 6),
        _COMPROMISED_MERCHANT: (0.25, 8, 24),
    },
    {
        _CARD_TESTING: (0.15, 3, 8),
        _ACCOUNT_TAKEOVER: (0.25, 2, 5),
        _COMPROMISED_CARD: (0.40, 6, 14),
        _COMPROMISED_MERCHANT: (0.20, 8, 24),
    },
)
# Legit behaviour that changes with the drift too: travel season.
_TRIP_START_P_BY_PHASE = (0.003, 0.009)
_TESTING_CATEGORIES = ("gaming", "online_retail")
_TAKEOVER_CATEGORIES = ("electronics", "jewelry", "travel")
_SPREE_CATEGORIES = ("electronics", "jewelry", "clothing", "online_retail")
_TERMINAL_CATEGORIES = ("grocery", "fuel", "restaurant", "pharmacy", "clothing")
# Compromised terminals: their default share of all fraud, and how long one stays compromised.
# A uniformly drawn merchant carries 1/n_merchants of the traffic on average, so holding a
# share q of the legit traffic compromised takes q * n_merchants terminals at a time.
TERMINAL_SHARE = 0.3
_TERMINAL_DAYS = (3.0, 10.0)

# Queued fraud is emitted once due; a full queue emits its earliest entry at once, so the
# queue stays bounded whatever the clock (and at fraud_rate=1).
_MAX_PENDING = 256
_DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    name: str
    category: str
    country: str


@dataclass(frozen=True, slots=True)
class CardProfile:
    """One card holder's habits; legit transactions are drawn around them."""

    card_id: str
    home_country: str
    currency: str
    spend_level: float  # mean amount of a purchase at a 1.0-multiplier category
    usual_categories: tuple[str, ...]
    usual_cum: tuple[float, ...]  # cumulative weights over usual_categories, for bisect
    usual_merchants: tuple[tuple[Merchant, ...], ...]  # per usual category
    active_hours: tuple[int, int]  # [start, end) local hour; end may pass midnight (e.g. 26)
    utc_offset: int  # hours, of the home country
    preferred_channel: str  # "pos" or "online"
    activity: float  # relative transaction rate; heavy-tailed across cards

    def is_active(self, utc_hour: int) -> bool:
        start, end = self.active_hours
        return (utc_hour + self.utc_offset - start) % 24 < end - start


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
        fake = Faker()
        fake.seed_instance(seed)
        self._merchants = self._build_merchants(fake, n_merchants)
        self._by_category: dict[str, list[Merchant]] = {c: [] for c in CATEGORIES}
        self._by_category_country: dict[tuple[str, str], list[Merchant]] = {}
        for m in self._merchants:
            self._by_category[m.category].append(m)
            self._by_category_country.setdefault((m.category, m.country), []).append(m)
        self._cards = self._build_cards(fake, n_cards)
        # Cumulative activity per UTC hour (built on first use): legit card choice.
        self._hour_cum: list[list[float] | None] = [None] * 24

        # Salted so it is not the very stream Faker built the pools from (Faker seeds a plain
        # random.Random with `seed`); str seeds are hashed with SHA-512, stable across runs.
        self._rng = random.Random(f"fraudstream-generator:{seed}")
        self._pending: list[tuple[float, int, dict[str, Any], str]] = []  # heap by due time
        self._seq = 0
        self._trips: dict[int, tuple[str, float]] = {}  # card index -> (country, until)
        # Compromised terminals: their own seeded stream, so when they start and which
        # merchant they hit depend only on the seed and the event clock.
        self._terminal_rng = random.Random(f"fraudstream-terminals:{seed}")
        self._terminal_pool = tuple(
            m for m in self._merchants if m.category in _TERMINAL_CATEGORIES
        )
        self._compromised: dict[str, tuple[float, float]] = {}  # merchant_id -> (since, until)
        self._terminal_ends: list[tuple[float, str]] = []  # heap of (until, merchant_id)
        self._next_compromise: float | None = None  # event time of the next one
        self.compromises = 0  # terminal compromises that were active during the stream
        self.calls = 0
        self.phase = 0
        self._set_mix(0)
        self.last_pattern: str | None = None  # fraud pattern of the last record, None if legit
        self._last_time: datetime | None = None
        self._last_ts = ""
        self._now = 0.0

    # ---------------------------------------------------------------- construction (Faker)

    @staticmethod
    def _build_merchants(fake: Faker, n: int) -> tuple[Merchant, ...]:
        r = fake.random
        ids: set[str] = set()
        merchants = []
        for i in range(n):
            # The first ones cover every category so no category pool is ever empty.
            cat = CATEGORIES[i] if i < len(CATEGORIES) else _pick(r.random(), _CATEGORY_CUM)
            mid = _unique(lambda: "m_" + fake.hexify("^" * 10), ids)
            country = r.choices(_HOME_CODES, _HOME_WEIGHTS)[0]
            merchants.append(Merchant(mid, fake.company(), cat, country))
        return tuple(merchants)

    def _build_cards(self, fake: Faker, n: int) -> tuple[CardProfile, ...]:
        r = fake.random
        ids: set[str] = set()
        cards = []
        for _ in range(n):
            cid = _unique(lambda: "card_" + fake.hexify("^" * 12), ids)
            home = r.choices(_HOME_CODES, _HOME_WEIGHTS)[0]
            # Spend levels are lognormal around ~45 (median): most people, a few big spenders.
            level = min(max(r.lognormvariate(math.log(45.0), 0.75), 5.0), 2000.0)
            k = r.randint(3, 5)
            usual: list[str] = []
            while len(usual) < k:
                c = _pick(r.random(), _CATEGORY_CUM)
                if c not in usual:
                    usual.append(c)
            usual_cum = tuple(accumulate(_CATEGORY_PROFILE[c][0] for c in usual))
            favourites = []
            for c in usual:
                pool = self._by_category_country.get((c, home)) or self._by_category[c]
                favourites.append(tuple(r.choice(pool) for _ in range(r.randint(1, 3))))
            if r.random() < 0.1:  # night owls
                start = r.randint(12, 16)
                hours = (start, start + r.randint(10, 13))
            else:
                hours = (r.randint(6, 10), r.randint(18, 24))
            channel = "online" if r.random() < 0.3 else "pos"
            activity = r.lognormvariate(0.0, 1.0)  # heavy tail: some cards are much busier
            cards.append(
                CardProfile(
                    card_id=cid,
                    home_country=home,
                    currency=_CURRENCY[home],
                    spend_level=level,
                    usual_categories=tuple(usual),
                    usual_cum=usual_cum,
                    usual_merchants=tuple(favourites),
                    active_hours=hours,
                    utc_offset=_UTC_OFFSET[home],
                    preferred_channel=channel,
                    activity=activity,
                )
            )
        return tuple(cards)

    @property
    def cards(self) -> tuple[CardProfile, ...]:
        return self._cards

    @property
    def merchants(self) -> tuple[Merchant, ...]:
        return self._merchants

    @property
    def pending(self) -> int:
        """Fraud transactions queued for later calls."""
        return len(self._pending)

    def set_phase(self, phase: int) -> None:
        """Switch the fraud mix and patterns: 0 (initial) or 1 (after the drift)."""
        if phase not in (0, 1):
            raise ValueError(f"phase must be 0 or 1, got {phase!r}")
        self.phase = phase
        self._set_mix(phase)

    def _set_mix(self, phase: int) -> None:
        mix = _PHASES[phase]
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
        mean_days = sum(_TERMINAL_DAYS) / 2
        self._compromise_rate = q * len(self._merchants) / (mean_days * _DAY_S)

    def hourly_intensity(self) -> list[float]:
        """Relative legit transaction rate per UTC hour (0-23), from the cards' habits."""
        return [self._cum_for_hour(h)[-1] for h in range(24)]

    def _cum_for_hour(self, hour: int) -> list[float]:
        cum = self._hour_cum[hour]
        if cum is None:
            cum = list(
                accumulate(
                    c.activity * (1.0 if c.is_active(hour) else _OFF_HOURS_WEIGHT)
                    for c in self._cards
                )
            )
            self._hour_cum[hour] = cum
        return cum

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
        span = days * _DAY_S
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
            self._compromise_terminals(now)
        pattern: str | None
        if pending and (pending[0][0] <= now or len(pending) >= _MAX_PENDING):
            _, _, body, pattern = heapq.heappop(pending)
        elif self._p_episode and rng.random() < self._p_episode:
            body, pattern = self._start_episode()
        else:
            # A holder paying as usual; at a compromised terminal, that payment is fraud.
            body = self._legit()
            pattern = _COMPROMISED_TERMINAL if body["merchant_id"] in self._compromised else None
        self.last_pattern = pattern
        record = {"transaction_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        record.update(body)
        record["timestamp"] = self._last_ts
        return record, pattern is not None

    def _hour(self) -> int:
        return int(self._now // 3600) % 24

    @property
    def compromised_terminals(self) -> dict[str, tuple[float, float]]:
        """Terminals compromised now or until lately: merchant_id -> (since, until), epoch s."""
        return dict(self._compromised)

    def _compromise_terminals(self, now: float) -> None:
        """Start the compromises due by `now` and forget the ended ones.

        The first call starts the process as if it had been running for the longest
        compromise already, so the stream opens with its usual share of compromised terminals.
        """
        rng = self._terminal_rng
        rate = self._compromise_rate
        at = self._next_compromise
        if at is None:
            at = now - _TERMINAL_DAYS[1] * _DAY_S + rng.expovariate(rate)
        compromised = self._compromised
        while at <= now:
            until = at + rng.uniform(*_TERMINAL_DAYS) * _DAY_S
            mid = self._terminal_pool[int(rng.random() * len(self._terminal_pool))].merchant_id
            if until > now:
                since = at
                previous = compromised.get(mid)
                if previous is not None:  # compromised again meanwhile: one longer window
                    since, until = previous[0], max(until, previous[1])
                compromised[mid] = (since, until)
                heapq.heappush(self._terminal_ends, (until, mid))
                self.compromises += 1
            at += rng.expovariate(rate)
        self._next_compromise = at
        ends = self._terminal_ends
        while ends and ends[0][0] <= now:
            until, mid = heapq.heappop(ends)
            window = compromised.get(mid)
            if window is not None and window[1] == until:
                del compromised[mid]

    def _legit(self) -> dict[str, Any]:
        rng = self._rng
        cum = self._cum_for_hour(self._hour())
        idx = bisect(cum, rng.random() * cum[-1])
        card = self._cards[idx]
        country = card.home_country
        trip = self._trips.get(idx)
        if trip is not None:
            if trip[1] < self._now:
                del self._trips[idx]
            elif rng.random() < _TRIP_LOCAL_P:
                country = trip[0]
        elif rng.random() < _TRIP_START_P_BY_PHASE[self.phase]:
            country = _other_home_country(rng.random(), card.home_country)
            self._trips[idx] = (country, self._now + rng.uniform(*_TRIP_DAYS) * _DAY_S)
        if rng.random() < _USUAL_CATEGORY_P:
            k = _index(rng.random(), card.usual_cum)
            cat = card.usual_categories[k]
            favourites = card.usual_merchants[k]
            if country == card.home_country and rng.random() < _USUAL_MERCHANT_P:
                merchant = favourites[int(rng.random() * len(favourites))]
            else:
                merchant = self._merchant(cat, country)
        else:
            cat = _pick(rng.random(), _CATEGORY_CUM)
            merchant = self._merchant(cat, country)
        amount = (
            card.spend_level * _CATEGORY_MULT[cat] * rng.lognormvariate(_AMOUNT_MU, _AMOUNT_SIGMA)
        )
        if rng.random() < _PREFERRED_CHANNEL_P:
            channel = card.preferred_channel
        else:
            channel = "online" if card.preferred_channel == "pos" else "pos"
        return _body(card, amount, _CURRENCY[country], merchant, country, channel)

    def _merchant(self, category: str, country: str) -> Merchant:
        # A local merchant when the country has one in this category, else a cross-border one.
        pool = self._by_category_country.get((category, country)) or self._by_category[category]
        return pool[int(self._rng.random() * len(pool))]

    def _random_card(self) -> CardProfile:
        # Fraudsters get cards from breaches and skimmers, not in proportion to activity.
        return self._cards[int(self._rng.random() * len(self._cards))]

    def _start_episode(self) -> tuple[dict[str, Any], str]:
        rng = self._rng
        name = self._mix_names[_index(rng.random(), self._mix_cum)]
        _, lo, hi = _PHASES[self.phase][name]
        n = rng.randint(lo, hi)
        build: Callable[[int], list[tuple[float, dict[str, Any]]]] = getattr(
            self, f"_{name}_{self.phase}"
        )
        steps = build(n)
        for delay, body in steps[1:]:
            self._seq += 1
            heapq.heappush(self._pending, (self._now + delay, self._seq, body, name))
        return steps[0][1], name

    # Each scenario builder returns [(delay in seconds from now, body)], first delay 0.

    def _card_testing_0(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # Tiny online charges at one merchant, minutes apart, to learn whether the card works.
        return self._card_testing(n, 0.5, 5.0)

    def _card_testing_1(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # Adapted to small-amount and burst rules: larger "test" amounts, further apart.
        return self._card_testing(n, 4.0, 25.0, 300.0, 1800.0)

    def _card_testing(
        self, n: int, lo: float, hi: float, gap_lo: float = 20.0, gap_hi: float = 300.0
    ) -> list[tuple[float, dict[str, Any]]]:
        rng = self._rng
        card = self._random_card()
        if rng.random() < 0.8:
            cat = _TESTING_CATEGORIES[int(rng.random() * len(_TESTING_CATEGORIES))]
        else:
            cat = "entertainment"
        pool = self._by_category[cat]
        merchant = pool[int(rng.random() * len(pool))]
        country = merchant.country
        currency = _CURRENCY[country]
        out, t = [], 0.0
        for _ in range(n):
            out.append((t, _body(card, rng.uniform(lo, hi), currency, merchant, country, "online")))
            t += rng.uniform(gap_lo, gap_hi)
        return out

    def _account_takeover_0(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # Big online purchases of resellable goods from abroad, at the holder's odd hours.
        rng = self._rng
        hour = self._hour()
        card = self._random_card()
        for _ in range(50):
            if not card.is_active(hour):
                break
            card = self._random_card()
        if rng.random() < 0.6:
            country = _FRAUD_COUNTRIES[int(rng.random() * len(_FRAUD_COUNTRIES))][0]
        else:
            country = _other_home_country(rng.random(), card.home_country)
        out, t = [], 0.0
        for _ in range(n):
            cat = _TAKEOVER_CATEGORIES[int(rng.random() * len(_TAKEOVER_CATEGORIES))]
            amount = card.spend_level * rng.uniform(5.0, 20.0)
            merchant = self._merchant(cat, country)
            out.append((t, _body(card, amount, _CURRENCY[country], merchant, country, "online")))
            t += rng.uniform(120.0, 1800.0)
        return out

    def _account_takeover_1(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # Through residential proxies in the holder's own country, at ordinary hours: several
        # purchases of a few times the usual size, spread over an hour or two.
        rng = self._rng
        card = self._random_card()
        country = card.home_country
        out, t = [], 0.0
        for _ in range(n):
            cat = ("online_retail", "gaming", "electronics")[int(rng.random() * 3)]
            amount = card.spend_level * _CATEGORY_MULT[cat] * rng.uniform(1.5, 4.0)
            merchant = self._merchant(cat, country)
            out.append((t, _body(card, amount, card.currency, merchant, country, "online")))
            t += rng.uniform(1200.0, 5400.0)
        return out

    def _compromised_card_0(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # A cloned or stolen card spent fast at home: the trace is the jump in amounts.
        return self._spree(n, 3.0, 10.0, 600.0, 5400.0)

    def _compromised_card_1(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # Cloned cards spent at home, modest amounts spaced out to stay under velocity rules.
        return self._spree(n, 1.5, 3.0, 900.0, 4500.0)

    def _spree(
        self, n: int, lo: float, hi: float, gap_lo: float, gap_hi: float
    ) -> list[tuple[float, dict[str, Any]]]:
        rng = self._rng
        card = self._random_card()
        country = card.home_country
        out, t = [], 0.0
        for _ in range(n):
            if rng.random() < 0.5:
                cat = card.usual_categories[int(rng.random() * len(card.usual_categories))]
            else:
                cat = _SPREE_CATEGORIES[int(rng.random() * len(_SPREE_CATEGORIES))]
            amount = card.spend_level * _CATEGORY_MULT[cat] * rng.uniform(lo, hi)
            channel = "pos" if rng.random() < 0.6 else "online"
            merchant = self._merchant(cat, country)
            out.append((t, _body(card, amount, card.currency, merchant, country, channel)))
            t += rng.uniform(gap_lo, gap_hi)
        return out

    def _compromised_merchant_0(self, n: int) -> list[tuple[float, dict[str, Any]]]:
        # A skimmed terminal or a colluding merchant: many cards charged there over days.
        rng = self._rng
        cat = _TERMINAL_CATEGORIES[int(rng.random() * len(_TERMINAL_CATEGORIES))]
        pool = self._by_category[cat]
        merchant = pool[int(rng.random() * len(pool))]
        country = merchant.country
        span = rng.uniform(1.0, 5.0) * _DAY_S
        delays = sorted([0.0] + [rng.random() * span for _ in range(n - 1)])
        out = []
        for delay in delays:
            card = self._random_card()
            amount = card.spend_level * _CATEGORY_MULT[cat] * rng.uniform(0.8, 2.0)
            out.append((delay, _body(card, amount, _CURRENCY[country], merchant, country, "pos")))
        return out

    _compromised_merchant_1 = _compromised_merchant_0


def _body(
    card: CardProfile, amount: float, currency: str, merchant: Merchant, country: str, channel: str
) -> dict[str, Any]:
    return {
        "card_id": card.card_id,
        "amount": max(round(amount, 2), _MIN_AMOUNT),
        "currency": currency,
        "merchant_id": merchant.merchant_id,
        "merchant_category": merchant.category,
        "country": country,
        "channel": channel,
    }


def _index(u: float, cum: tuple[float, ...]) -> int:
    """Index drawn by weight, given uniform u in [0, 1) and cumulative weights."""
    return bisect(cum, u * cum[-1])


def _pick(u: float, cum: tuple[float, ...]) -> str:
    return CATEGORIES[_index(u, cum)]


# Travel is uniform over the other home countries, not only to the most populous ones.
_ABROAD: dict[str, tuple[str, ...]] = {
    h: tuple(c for c in _HOME_CODES if c != h) for h in _HOME_CODES
}


def _other_home_country(u: float, home: str) -> str:
    others = _ABROAD[home]
    return others[int(u * len(others))]


def _unique(make: Callable[[], str], seen: set[str]) -> str:
    while (value := make()) in seen:
        pass
    seen.add(value)
    return value
