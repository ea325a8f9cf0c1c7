"""Deterministic synthetic card transactions, with labelled fraud, for demos and tests.

Pure code, no Kafka: the producer publishes what `TransactionGenerator.next` returns.

Faker is slow, so it is only used once, in `__init__`, to build a pool of card holders and
merchants; every transaction is then drawn with one seeded `random.Random`. The caller owns
the clock (wall time for live runs, a simulated clock for backfills), so apart from the
`timestamp` field every record is a function of the seed and the number of calls made:
replaying a seed with different event times yields the same cards, amounts and labels.

Fraud comes in episodes, each leaving a different trace for the scorer to learn:

- card testing: a burst of 3-8 tiny online amounts on one card, mostly gaming/online retail;
- account takeover: one or two online purchases 5-20x the card's usual spend, in a country
  that is not the card's home, at electronics/jewelry/travel merchants;
- compromised card: a spending spree of 2-5 purchases 4-12x the card's usual spend.

An episode's later transactions wait in a small queue and are emitted over the next calls,
interleaved with legitimate traffic, so bursts are close together in event time.
"""

from __future__ import annotations

import math
import random
import uuid
from bisect import bisect
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
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

# Card holders' home countries: (country, currency, share of card holders and merchants).
_HOME_COUNTRIES: tuple[tuple[str, str, float], ...] = (
    ("US", "USD", 0.40),
    ("GB", "GBP", 0.10),
    ("DE", "EUR", 0.08),
    ("FR", "EUR", 0.07),
    ("CA", "CAD", 0.06),
    ("ES", "EUR", 0.04),
    ("IT", "EUR", 0.04),
    ("NL", "EUR", 0.03),
    ("AU", "AUD", 0.03),
    ("BR", "BRL", 0.03),
    ("IN", "INR", 0.03),
    ("JP", "JPY", 0.03),
    ("MX", "MXN", 0.02),
    ("SE", "SEK", 0.02),
    ("PL", "PLN", 0.02),
)
# Where taken-over accounts are mostly used from; no card holder lives there, so the
# country itself is a (learnable) signal, not only the change of country.
_FRAUD_COUNTRIES: tuple[tuple[str, str], ...] = (
    ("NG", "NGN"),
    ("RO", "RON"),
    ("RU", "RUB"),
    ("ID", "IDR"),
    ("VN", "VND"),
    ("UA", "UAH"),
    ("PH", "PHP"),
)
_CURRENCY: dict[str, str] = {c: cur for c, cur, _ in _HOME_COUNTRIES} | dict(_FRAUD_COUNTRIES)
_HOME_CODES: tuple[str, ...] = tuple(c for c, _, _ in _HOME_COUNTRIES)
_HOME_WEIGHTS: tuple[float, ...] = tuple(w for _, _, w in _HOME_COUNTRIES)

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

# Legit behaviour.
_USUAL_CATEGORY_P = 0.9  # share of a card's spending at its usual categories
_TRAVEL_P = 0.02  # share of legit transactions made abroad
_PREFERRED_CHANNEL_P = 0.8  # share of a card's transactions on its preferred channel
_AMOUNT_SIGMA = 0.6  # per-transaction spread around the card's level (lognormal)
_AMOUNT_MU = -0.5 * _AMOUNT_SIGMA**2  # so the mean multiplier is 1
_MIN_AMOUNT = 0.01

# Fraud patterns: (name, share of episodes, min length, max length) of an episode.
_CARD_TESTING = "card_testing"
_ACCOUNT_TAKEOVER = "account_takeover"
_COMPROMISED_CARD = "compromised_card"
_PATTERNS: tuple[tuple[str, float, int, int], ...] = (
    (_CARD_TESTING, 0.4, 3, 8),
    (_ACCOUNT_TAKEOVER, 0.3, 1, 2),
    (_COMPROMISED_CARD, 0.3, 2, 5),
)
FRAUD_PATTERNS: tuple[str, ...] = tuple(p[0] for p in _PATTERNS)
_PATTERN_CUM: tuple[float, ...] = tuple(accumulate(p[1] for p in _PATTERNS))
# Expected transactions per episode: turns the wanted fraud share into an episode rate.
_MEAN_EPISODE_LEN: float = sum(w * (lo + hi) / 2 for _, w, lo, hi in _PATTERNS) / _PATTERN_CUM[-1]
_TESTING_CATEGORIES = ("gaming", "online_retail")
_TAKEOVER_CATEGORIES = ("electronics", "jewelry", "travel")
_SPREE_CATEGORIES = ("electronics", "jewelry", "clothing", "online_retail")

# A queued fraud transaction is emitted on a call with this probability, so a burst spans
# a few consecutive calls interleaved with legit traffic; the cap keeps the queue small
# (and bounded even at fraud_rate=1).
_DRAIN_P = 0.5
_MAX_PENDING = 32


@dataclass(frozen=True, slots=True)
class CardProfile:
    """One card holder's habits; legit transactions are drawn around them."""

    card_id: str
    home_country: str
    currency: str
    spend_level: float  # mean amount of a purchase at a 1.0-multiplier category
    usual_categories: tuple[str, ...]
    usual_cum: tuple[float, ...]  # cumulative weights over usual_categories, for bisect
    active_hours: tuple[int, int]  # [start, end) local hour; not applied, see the class
    preferred_channel: str  # "pos" or "online"
    activity: float  # relative transaction rate; heavy-tailed across cards


@dataclass(frozen=True, slots=True)
class Merchant:
    merchant_id: str
    name: str
    category: str
    country: str


def _validate_fraud_rate(fraud_rate: float) -> float:
    if isinstance(fraud_rate, bool) or not isinstance(fraud_rate, int | float):
        raise ValueError(f"fraud_rate must be a number, 0 or in (0, 1], got {fraud_rate!r}")
    if not (math.isfinite(fraud_rate) and 0.0 <= fraud_rate <= 1.0):
        raise ValueError(f"fraud_rate must be 0 or in (0, 1], got {fraud_rate!r}")
    return float(fraud_rate)


class TransactionGenerator:
    """Endless, reproducible stream of card transactions with a known fraud label.

    `active_hours` is kept on each `CardProfile` but deliberately not applied: the caller
    owns the clock, and letting event time steer the draws would break reproducibility.
    """

    def __init__(
        self,
        seed: int = 42,
        fraud_rate: float = 0.01,
        n_cards: int = 5000,
        n_merchants: int = 800,
    ) -> None:
        self.fraud_rate = _validate_fraud_rate(fraud_rate)
        if n_cards < 1:
            raise ValueError(f"n_cards must be >= 1, got {n_cards}")
        if n_merchants < len(CATEGORIES):
            raise ValueError(
                f"n_merchants must be >= {len(CATEGORIES)} (one per category), got {n_merchants}"
            )
        self.seed = seed
        fake = Faker()
        fake.seed_instance(seed)
        self._merchants = self._build_merchants(fake, n_merchants)
        self._cards = self._build_cards(fake, n_cards)

        # Lookup tables for the hot path.
        self._by_category: dict[str, list[Merchant]] = {c: [] for c in CATEGORIES}
        self._by_category_country: dict[tuple[str, str], list[Merchant]] = {}
        for m in self._merchants:
            self._by_category[m.category].append(m)
            self._by_category_country.setdefault((m.category, m.country), []).append(m)
        self._card_cum: list[float] = list(accumulate(c.activity for c in self._cards))

        # Chance that a call free of queued fraud starts an episode. With mean episode length
        # L, a share f of all calls is fraud when p = f / (L(1 - f) + f), whatever the drain.
        f, n = self.fraud_rate, _MEAN_EPISODE_LEN
        self._p_episode = f / (n * (1.0 - f) + f) if f > 0 else 0.0

        # Salted so it is not the very stream Faker built the pools from (Faker seeds a plain
        # random.Random with `seed`); str seeds are hashed with SHA-512, stable across runs.
        self._rng = random.Random(f"fraudstream-generator:{seed}")
        self._pending: deque[tuple[dict[str, Any], str]] = deque()
        self.last_pattern: str | None = None  # fraud pattern of the last record, None if legit
        self._last_time: datetime | None = None
        self._last_ts = ""

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

    @staticmethod
    def _build_cards(fake: Faker, n: int) -> tuple[CardProfile, ...]:
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
            hours = (r.randint(5, 11), r.randint(18, 24))
            channel = "online" if r.random() < 0.3 else "pos"
            activity = r.lognormvariate(0.0, 1.3)  # heavy tail: some cards are much busier
            cards.append(
                CardProfile(
                    card_id=cid,
                    home_country=home,
                    currency=_CURRENCY[home],
                    spend_level=level,
                    usual_categories=tuple(usual),
                    usual_cum=usual_cum,
                    active_hours=hours,
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
        """Fraud transactions queued for the next calls."""
        return len(self._pending)

    # ---------------------------------------------------------------- per transaction

    def next(self, event_time: datetime) -> tuple[dict[str, Any], bool]:
        """One transaction at `event_time` (timezone-aware) as a wire dict, and its label."""
        if event_time is not self._last_time:
            if event_time.utcoffset() is None:
                raise ValueError("event_time must be timezone-aware")
            self._last_ts = event_time.astimezone(UTC).isoformat().replace("+00:00", "Z")
            self._last_time = event_time
        rng = self._rng
        pending = self._pending
        if pending and (len(pending) >= _MAX_PENDING or rng.random() < _DRAIN_P):
            body, pattern = pending.popleft()
        elif self._p_episode and rng.random() < self._p_episode:
            body, pattern = self._start_episode()
        else:
            body, pattern = self._legit(), None
        self.last_pattern = pattern
        record = {"transaction_id": str(uuid.UUID(int=rng.getrandbits(128), version=4))}
        record.update(body)
        record["timestamp"] = self._last_ts
        return record, pattern is not None

    def _pick_card(self) -> CardProfile:
        cum = self._card_cum
        return self._cards[bisect(cum, self._rng.random() * cum[-1])]

    def _legit(self) -> dict[str, Any]:
        rng = self._rng
        card = self._pick_card()
        if rng.random() < _USUAL_CATEGORY_P:
            cat = card.usual_categories[_index(rng.random(), card.usual_cum)]
        else:
            cat = _pick(rng.random(), _CATEGORY_CUM)
        if rng.random() < _TRAVEL_P:
            country = _other_home_country(rng.random(), card.home_country)
        else:
            country = card.home_country
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

    def _start_episode(self) -> tuple[dict[str, Any], str]:
        rng = self._rng
        name, _, lo, hi = _PATTERNS[_index(rng.random(), _PATTERN_CUM)]
        n = rng.randint(lo, hi)
        # Fraudsters get cards from breaches and skimmers, not in proportion to activity.
        card = self._cards[int(rng.random() * len(self._cards))]
        if name == _CARD_TESTING:
            bodies = self._card_testing(card, n)
        elif name == _ACCOUNT_TAKEOVER:
            bodies = self._account_takeover(card, n)
        else:
            bodies = self._compromised_card(card, n)
        self._pending.extend((b, name) for b in bodies[1:])
        return bodies[0], name

    def _card_testing(self, card: CardProfile, n: int) -> list[dict[str, Any]]:
        # Tiny online charges at one merchant to learn whether the card works.
        rng = self._rng
        if rng.random() < 0.8:
            cat = _TESTING_CATEGORIES[int(rng.random() * len(_TESTING_CATEGORIES))]
        else:
            cat = "entertainment"
        pool = self._by_category[cat]
        merchant = pool[int(rng.random() * len(pool))]
        country = merchant.country
        currency = _CURRENCY[country]
        return [
            _body(card, rng.uniform(0.5, 5.0), currency, merchant, country, "online")
            for _ in range(n)
        ]

    def _account_takeover(self, card: CardProfile, n: int) -> list[dict[str, Any]]:
        # Big online purchases of resellable goods from abroad, under the holder's account.
        rng = self._rng
        if rng.random() < 0.6:
            country = _FRAUD_COUNTRIES[int(rng.random() * len(_FRAUD_COUNTRIES))][0]
        else:
            country = _other_home_country(rng.random(), card.home_country)
        out = []
        for _ in range(n):
            cat = _TAKEOVER_CATEGORIES[int(rng.random() * len(_TAKEOVER_CATEGORIES))]
            amount = card.spend_level * rng.uniform(5.0, 20.0)
            merchant = self._merchant(cat, country)
            out.append(_body(card, amount, _CURRENCY[country], merchant, country, "online"))
        return out

    def _compromised_card(self, card: CardProfile, n: int) -> list[dict[str, Any]]:
        # A cloned or stolen card spent fast at home: the trace is the jump in amounts.
        rng = self._rng
        country = card.home_country
        out = []
        for _ in range(n):
            if rng.random() < 0.5:
                cat = card.usual_categories[int(rng.random() * len(card.usual_categories))]
            else:
                cat = _SPREE_CATEGORIES[int(rng.random() * len(_SPREE_CATEGORIES))]
            amount = card.spend_level * rng.uniform(4.0, 12.0)
            channel = "pos" if rng.random() < 0.6 else "online"
            merchant = self._merchant(cat, country)
            out.append(_body(card, amount, card.currency, merchant, country, channel))
        return out


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
