"""The synthetic card holders and merchants, and how the holders spend when nothing is wrong.

Faker is slow, so it is only used here, once, to build the pools of card holders and
merchants; every draw over them is then made with the caller's seeded `random.Random`.

Card holders have a home country (with its time zone), a spending level, usual categories and
a few usual merchants, a preferred channel, an activity level and active hours (local time):
the card making a legit purchase is drawn by activity weighted by whether the current event
time falls in its active hours, so legit spending follows each holder's day. Now and then a
holder travels abroad for a few days.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

from faker import Faker

__all__ = [
    "CATEGORIES",
    "CATEGORY_MULT",
    "CURRENCY",
    "DAY_S",
    "FRAUD_COUNTRIES",
    "CardProfile",
    "Merchant",
    "Population",
    "other_home_country",
    "transaction_body",
    "weighted_index",
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
FRAUD_COUNTRIES: tuple[tuple[str, str], ...] = (
    ("NG", "NGN"),
    ("RO", "RON"),
    ("RU", "RUB"),
    ("ID", "IDR"),
    ("VN", "VND"),
    ("UA", "UAH"),
    ("PH", "PHP"),
)
CURRENCY: dict[str, str] = {c: cur for c, cur, _, _ in _HOME_COUNTRIES} | dict(FRAUD_COUNTRIES)
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
CATEGORY_MULT: dict[str, float] = {c: m for c, (_, m) in _CATEGORY_PROFILE.items()}

# Legit behaviour.
_USUAL_CATEGORY_P = 0.85  # share of a card's spending at its usual categories
_USUAL_MERCHANT_P = 0.8  # within a usual category, share at one of the card's usual merchants
_TRIP_DAYS = (1.0, 10.0)
_TRIP_LOCAL_P = 0.85  # share of purchases during a trip made in the visited country
# Per phase of the generator: legit behaviour changes with the drift too (a travel season).
_TRIP_START_P_BY_PHASE = (0.003, 0.009)
_PREFERRED_CHANNEL_P = 0.8  # share of a card's transactions on its preferred channel
_OFF_HOURS_WEIGHT = 0.04  # activity outside a card's active hours, relative to inside
_AMOUNT_SIGMA = 0.6  # per-transaction spread around the card's level (lognormal)
_AMOUNT_MU = -0.5 * _AMOUNT_SIGMA**2  # so the mean multiplier is 1
_MIN_AMOUNT = 0.01

DAY_S = 86400.0


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


class Population:
    """The card holders and merchants built from `seed`, and the draws made over them.

    Holds the trips abroad under way, so legit spending is drawn from one instance per stream.
    """

    def __init__(self, seed: int, n_cards: int, n_merchants: int) -> None:
        fake = Faker()
        fake.seed_instance(seed)
        self.merchants = self._build_merchants(fake, n_merchants)
        self._by_category: dict[str, list[Merchant]] = {c: [] for c in CATEGORIES}
        self._by_category_country: dict[tuple[str, str], list[Merchant]] = {}
        for m in self.merchants:
            self._by_category[m.category].append(m)
            self._by_category_country.setdefault((m.category, m.country), []).append(m)
        self.cards = self._build_cards(fake, n_cards)
        # Cumulative activity per UTC hour (built on first use): legit card choice.
        self._hour_cum: list[list[float] | None] = [None] * 24
        self._trips: dict[int, tuple[str, float]] = {}  # card index -> (country, until)

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
                    currency=CURRENCY[home],
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

    # ---------------------------------------------------------------- draws

    def hourly_intensity(self) -> list[float]:
        """Relative legit transaction rate per UTC hour (0-23), from the cards' habits."""
        return [self._cum_for_hour(h)[-1] for h in range(24)]

    def _cum_for_hour(self, hour: int) -> list[float]:
        cum = self._hour_cum[hour]
        if cum is None:
            cum = list(
                accumulate(
                    c.activity * (1.0 if c.is_active(hour) else _OFF_HOURS_WEIGHT)
                    for c in self.cards
                )
            )
            self._hour_cum[hour] = cum
        return cum

    def legit(self, rng: random.Random, now: float, phase: int) -> dict[str, Any]:
        """A holder paying as usual at event time `now` (epoch s): a transaction body."""
        cum = self._cum_for_hour(int(now // 3600) % 24)
        idx = bisect(cum, rng.random() * cum[-1])
        card = self.cards[idx]
        country = card.home_country
        trip = self._trips.get(idx)
        if trip is not None:
            if trip[1] < now:
                del self._trips[idx]
            elif rng.random() < _TRIP_LOCAL_P:
                country = trip[0]
        elif rng.random() < _TRIP_START_P_BY_PHASE[phase]:
            country = other_home_country(rng.random(), card.home_country)
            self._trips[idx] = (country, now + rng.uniform(*_TRIP_DAYS) * DAY_S)
        if rng.random() < _USUAL_CATEGORY_P:
            k = weighted_index(rng.random(), card.usual_cum)
            cat = card.usual_categories[k]
            favourites = card.usual_merchants[k]
            if country == card.home_country and rng.random() < _USUAL_MERCHANT_P:
                merchant = favourites[int(rng.random() * len(favourites))]
            else:
                merchant = self.merchant(rng, cat, country)
        else:
            cat = _pick(rng.random(), _CATEGORY_CUM)
            merchant = self.merchant(rng, cat, country)
        amount = (
            card.spend_level * CATEGORY_MULT[cat] * rng.lognormvariate(_AMOUNT_MU, _AMOUNT_SIGMA)
        )
        if rng.random() < _PREFERRED_CHANNEL_P:
            channel = card.preferred_channel
        else:
            channel = "online" if card.preferred_channel == "pos" else "pos"
        return transaction_body(card, amount, CURRENCY[country], merchant, country, channel)

    def merchant(self, rng: random.Random, category: str, country: str) -> Merchant:
        # A local merchant when the country has one in this category, else a cross-border one.
        pool = self._by_category_country.get((category, country)) or self._by_category[category]
        return pool[int(rng.random() * len(pool))]

    def in_category(self, rng: random.Random, category: str) -> Merchant:
        """Any merchant of `category`, wherever it is."""
        pool = self._by_category[category]
        return pool[int(rng.random() * len(pool))]

    def random_card(self, rng: random.Random) -> CardProfile:
        # Fraudsters get cards from breaches and skimmers, not in proportion to activity.
        return self.cards[int(rng.random() * len(self.cards))]


def transaction_body(
    card: CardProfile, amount: float, currency: str, merchant: Merchant, country: str, channel: str
) -> dict[str, Any]:
    """The wire fields of one transaction, but its id and timestamp."""
    return {
        "card_id": card.card_id,
        "amount": max(round(amount, 2), _MIN_AMOUNT),
        "currency": currency,
        "merchant_id": merchant.merchant_id,
        "merchant_category": merchant.category,
        "country": country,
        "channel": channel,
    }


def weighted_index(u: float, cum: tuple[float, ...]) -> int:
    """Index drawn by weight, given uniform u in [0, 1) and cumulative weights."""
    return bisect(cum, u * cum[-1])


def _pick(u: float, cum: tuple[float, ...]) -> str:
    return CATEGORIES[weighted_index(u, cum)]


# Travel is uniform over the other home countries, not only to the most populous ones.
_ABROAD: dict[str, tuple[str, ...]] = {
    h: tuple(c for c in _HOME_CODES if c != h) for h in _HOME_CODES
}


def other_home_country(u: float, home: str) -> str:
    """A home country other than `home`, given uniform u in [0, 1)."""
    others = _ABROAD[home]
    return others[int(u * len(others))]


def _unique(make: Callable[[], str], seen: set[str]) -> str:
    while (value := make()) in seen:
        pass
    seen.add(value)
    return value
