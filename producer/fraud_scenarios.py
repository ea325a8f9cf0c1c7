"""The fraud the generator injects: episode scenarios, per phase, and compromised terminals.

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

In phase 1 (after the drift) fraudsters have adapted to what gave them away: the mix moves
from card testing to compromised cards; takeovers come through proxies in the holder's own
country at ordinary hours, with several purchases of a few times the usual size; cloned cards
are spent in modest amounts spaced an hour apart instead of in a burst; testing uses larger
amounts further apart.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import Any

from producer.population import (
    CATEGORY_MULT,
    CURRENCY,
    DAY_S,
    FRAUD_COUNTRIES,
    Merchant,
    Population,
    other_home_country,
    transaction_body,
)

__all__ = [
    "COMPROMISED_TERMINAL",
    "FRAUD_PATTERNS",
    "PHASES",
    "TERMINAL_DAYS",
    "TERMINAL_SHARE",
    "EpisodeBuilder",
    "TerminalCompromises",
]

_CARD_TESTING = "card_testing"
_ACCOUNT_TAKEOVER = "account_takeover"
_COMPROMISED_CARD = "compromised_card"
_COMPROMISED_MERCHANT = "compromised_merchant"
COMPROMISED_TERMINAL = "compromised_terminal"
FRAUD_PATTERNS: tuple[str, ...] = (
    _CARD_TESTING,
    _ACCOUNT_TAKEOVER,
    _COMPROMISED_CARD,
    _COMPROMISED_MERCHANT,
    COMPROMISED_TERMINAL,
)
# Per phase: episode scenario -> (share of episode fraud, min, max transactions per episode).
PHASES: tuple[dict[str, tuple[float, int, int]], ...] = (
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
_TESTING_CATEGORIES = ("gaming", "online_retail")
_TAKEOVER_CATEGORIES = ("electronics", "jewelry", "travel")
_SPREE_CATEGORIES = ("electronics", "jewelry", "clothing", "online_retail")
_TERMINAL_CATEGORIES = ("grocery", "fuel", "restaurant", "pharmacy", "clothing")
# Compromised terminals: their default share of all fraud, and how long one stays compromised.
# A uniformly drawn merchant carries 1/n_merchants of the traffic on average, so holding a
# share q of the legit traffic compromised takes q * n_merchants terminals at a time.
TERMINAL_SHARE = 0.3
TERMINAL_DAYS = (3.0, 10.0)

# An episode: [(delay in seconds from its start, transaction body)], first delay 0.
Steps = list[tuple[float, dict[str, Any]]]


class EpisodeBuilder:
    """Draws the transactions of one fraud episode from the population, with `rng`."""

    def __init__(self, rng: random.Random, population: Population) -> None:
        self._rng = rng
        self._population = population

    def build(self, pattern: str, phase: int, n: int, hour: int) -> Steps:
        """The `n` transactions of a `pattern` episode starting at UTC `hour`, in `phase`."""
        if pattern == _ACCOUNT_TAKEOVER and phase == 0:
            return self._account_takeover_0(n, hour)
        build: Callable[[int], Steps] = getattr(self, f"_{pattern}_{phase}")
        return build(n)

    def _merchant(self, category: str, country: str) -> Merchant:
        return self._population.merchant(self._rng, category, country)

    def _card_testing_0(self, n: int) -> Steps:
        # Tiny online charges at one merchant, minutes apart, to learn whether the card works.
        return self._card_testing(n, 0.5, 5.0)

    def _card_testing_1(self, n: int) -> Steps:
        # Adapted to small-amount and burst rules: larger "test" amounts, further apart.
        return self._card_testing(n, 4.0, 25.0, 300.0, 1800.0)

    def _card_testing(
        self, n: int, lo: float, hi: float, gap_lo: float = 20.0, gap_hi: float = 300.0
    ) -> Steps:
        rng = self._rng
        card = self._population.random_card(rng)
        if rng.random() < 0.8:
            cat = _TESTING_CATEGORIES[int(rng.random() * len(_TESTING_CATEGORIES))]
        else:
            cat = "entertainment"
        merchant = self._population.in_category(rng, cat)
        country = merchant.country
        currency = CURRENCY[country]
        out, t = [], 0.0
        for _ in range(n):
            amount = rng.uniform(lo, hi)
            out.append((t, transaction_body(card, amount, currency, merchant, country, "online")))
            t += rng.uniform(gap_lo, gap_hi)
        return out

    def _account_takeover_0(self, n: int, hour: int) -> Steps:
        # Big online purchases of resellable goods from abroad, at the holder's odd hours.
        rng = self._rng
        card = self._population.random_card(rng)
        for _ in range(50):
            if not card.is_active(hour):
                break
            card = self._population.random_card(rng)
        if rng.random() < 0.6:
            country = FRAUD_COUNTRIES[int(rng.random() * len(FRAUD_COUNTRIES))][0]
        else:
            country = other_home_country(rng.random(), card.home_country)
        out, t = [], 0.0
        for _ in range(n):
            cat = _TAKEOVER_CATEGORIES[int(rng.random() * len(_TAKEOVER_CATEGORIES))]
            amount = card.spend_level * rng.uniform(5.0, 20.0)
            merchant = self._merchant(cat, country)
            body = transaction_body(card, amount, CURRENCY[country], merchant, country, "online")
            out.append((t, body))
            t += rng.uniform(120.0, 1800.0)
        return out

    def _account_takeover_1(self, n: int) -> Steps:
        # Through residential proxies in the holder's own country, at ordinary hours: several
        # purchases of a few times the usual size, spread over an hour or two.
        rng = self._rng
        card = self._population.random_card(rng)
        country = card.home_country
        out, t = [], 0.0
        for _ in range(n):
            cat = ("online_retail", "gaming", "electronics")[int(rng.random() * 3)]
            amount = card.spend_level * CATEGORY_MULT[cat] * rng.uniform(1.5, 4.0)
            merchant = self._merchant(cat, country)
            body = transaction_body(card, amount, card.currency, merchant, country, "online")
            out.append((t, body))
            t += rng.uniform(1200.0, 5400.0)
        return out

    def _compromised_card_0(self, n: int) -> Steps:
        # A cloned or stolen card spent fast at home: the trace is the jump in amounts.
        return self._spree(n, 3.0, 10.0, 600.0, 5400.0)

    def _compromised_card_1(self, n: int) -> Steps:
        # Cloned cards spent at home, modest amounts spaced out to stay under velocity rules.
        return self._spree(n, 1.5, 3.0, 900.0, 4500.0)

    def _spree(self, n: int, lo: float, hi: float, gap_lo: float, gap_hi: float) -> Steps:
        rng = self._rng
        card = self._population.random_card(rng)
        country = card.home_country
        out, t = [], 0.0
        for _ in range(n):
            if rng.random() < 0.5:
                cat = card.usual_categories[int(rng.random() * len(card.usual_categories))]
            else:
                cat = _SPREE_CATEGORIES[int(rng.random() * len(_SPREE_CATEGORIES))]
            amount = card.spend_level * CATEGORY_MULT[cat] * rng.uniform(lo, hi)
            channel = "pos" if rng.random() < 0.6 else "online"
            merchant = self._merchant(cat, country)
            out.append(
                (t, transaction_body(card, amount, card.currency, merchant, country, channel))
            )
            t += rng.uniform(gap_lo, gap_hi)
        return out

    def _compromised_merchant_0(self, n: int) -> Steps:
        # A skimmed terminal or a colluding merchant: many cards charged there over days.
        rng = self._rng
        cat = _TERMINAL_CATEGORIES[int(rng.random() * len(_TERMINAL_CATEGORIES))]
        merchant = self._population.in_category(rng, cat)
        country = merchant.country
        span = rng.uniform(1.0, 5.0) * DAY_S
        delays = sorted([0.0] + [rng.random() * span for _ in range(n - 1)])
        out = []
        for delay in delays:
            card = self._population.random_card(rng)
            amount = card.spend_level * CATEGORY_MULT[cat] * rng.uniform(0.8, 2.0)
            body = transaction_body(card, amount, CURRENCY[country], merchant, country, "pos")
            out.append((delay, body))
        return out

    _compromised_merchant_1 = _compromised_merchant_0


class TerminalCompromises:
    """Terminals compromised at random moments of the event clock, and for how long.

    Drawn from a seeded stream of their own, so when they start and which merchant they hit
    depend only on the seed and the event clock.
    """

    def __init__(self, seed: int, merchants: tuple[Merchant, ...]) -> None:
        self._rng = random.Random(f"fraudstream-terminals:{seed}")
        self._pool = tuple(m for m in merchants if m.category in _TERMINAL_CATEGORIES)
        self.active: dict[str, tuple[float, float]] = {}  # merchant_id -> (since, until)
        self._ends: list[tuple[float, str]] = []  # heap of (until, merchant_id)
        self._next_compromise: float | None = None  # event time of the next one
        self.count = 0  # compromises that were active during the stream

    def advance(self, now: float, rate: float) -> None:
        """Start the compromises due by `now` (`rate` per second) and forget the ended ones.

        The first call starts the process as if it had been running for the longest
        compromise already, so the stream opens with its usual share of compromised terminals.
        """
        rng = self._rng
        at = self._next_compromise
        if at is None:
            at = now - TERMINAL_DAYS[1] * DAY_S + rng.expovariate(rate)
        compromised = self.active
        while at <= now:
            until = at + rng.uniform(*TERMINAL_DAYS) * DAY_S
            mid = self._pool[int(rng.random() * len(self._pool))].merchant_id
            if until > now:
                since = at
                previous = compromised.get(mid)
                if previous is not None:  # compromised again meanwhile: one longer window
                    since, until = previous[0], max(until, previous[1])
                compromised[mid] = (since, until)
                heapq.heappush(self._ends, (until, mid))
                self.count += 1
            at += rng.expovariate(rate)
        self._next_compromise = at
        ends = self._ends
        while ends and ends[0][0] <= now:
            until, mid = heapq.heappop(ends)
            window = compromised.get(mid)
            if window is not None and window[1] == until:
                del compromised[mid]
