"""Label-fed state: what the model knows from labels beyond its weights.

Per merchant, category and country, the fraud share of the labelled transactions of the last
days, counting only labels that have arrived. One object computes it wherever features are
built: `evaluate` feeds it labels as they arrive; the trainer feeds it every label it learns
(on the same join, exactly once) and ships it inside each model snapshot, so scorers swap
weights and label state together; the MLflow model carries the same data.

Windows are exponentially decayed in the labelled transaction's event time, on the label
clock: the newest event time among the labels that have arrived. A label at event time t
counts exp(-(clock - t) / tau), so a 1-day window holds the labels of the last day the labels
reach, whatever their delay (labels that arrive a week late would otherwise all sit a week
back and a 1-day window would hold nothing). The sums do not depend on the order labels
arrive in, only on which have arrived; a value keeps, per window, its decayed fraud and label
counts at its reference time (its newest labelled event time), so it costs 1 + 2W floats.

A feature is (frauds + s * p) / (labels + s): the smoothed fraud share, with p the global
share (labels decayed over 30 days, plus the prior worth 1,000 labels that never decay) and s
the smoothing strength in labels; p for a value without labels. The share itself, not its
log: the log spreads the many near-zero shares of honest merchants as far apart as a
compromised merchant is from them, and the model learns from fewer labels on the share.
Bounded: past `max_keys` values per table the least recently labelled is forgotten (counted
in `evicted`).
"""

from __future__ import annotations

import base64
import math
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.byte_hash import hash_strings
from core.errors import FraudstreamError

DAY_S = 86400.0
FORMAT = "fraudstream-label-state/1"
PRIOR_WEIGHT = 1000.0
GLOBAL_TAU_S = 30 * DAY_S
MAX_KEY_CHARS = 256


class LabelStateError(FraudstreamError, ValueError):
    """Label state data that cannot be loaded; the message is one line."""


@dataclass(frozen=True)
class TableSpec:
    """One table: the field it is keyed by and the windows (time constants) it keeps."""

    name: str
    windows_s: tuple[float, ...]
    features: tuple[str, ...]  # one dense feature per window, in order
    strength: float = 2.0


TABLES: tuple[TableSpec, ...] = (
    TableSpec(
        "merchant",
        (DAY_S, 7 * DAY_S, 30 * DAY_S),
        ("merchant_risk_1d", "merchant_risk_7d", "merchant_risk_30d"),
    ),
    TableSpec("category", (7 * DAY_S,), ("category_risk",)),
    TableSpec("country", (7 * DAY_S,), ("country_risk",)),
)
FEATURES: tuple[str, ...] = tuple(f for spec in TABLES for f in spec.features)


def _b64(a: np.ndarray) -> str:
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f8").tobytes()).decode("ascii")


def _unb64(data: Any, count: int, what: str) -> np.ndarray:
    if not isinstance(data, str):
        raise LabelStateError(f"label state: {what} is not a base64 string")
    try:
        raw = base64.b64decode(data, validate=True)
    except ValueError:
        raise LabelStateError(f"label state: {what} is not base64") from None
    if len(raw) != 8 * count:
        raise LabelStateError(f"label state: {what} has {len(raw) // 8} values, expected {count}")
    a = np.frombuffer(raw, dtype="<f8").astype(np.float64)
    if not np.isfinite(a).all():
        raise LabelStateError(f"label state: {what} has a non-finite value")
    return a


class LabelTable:
    """Decayed fraud and label counts per value of one field (see the module docstring)."""

    def __init__(self, spec: TableSpec, max_keys: int) -> None:
        self.spec = spec
        self.max_keys = max_keys
        self.taus = spec.windows_s
        # value -> [reference time, frauds_w1, labels_w1, frauds_w2, labels_w2, ...]
        self.stats: OrderedDict[str, list[float]] = OrderedDict()
        self.evicted = 0
        self._changes = 0  # bumped on every change: the lookup arrays are rebuilt lazily
        self._built = -1
        self._hashes = np.zeros(0, np.uint64)
        self._t = np.zeros(1)
        self._counts = np.zeros((1, 2 * len(self.taus)))

    def __len__(self) -> int:
        return len(self.stats)

    def observe(
        self, value: str | None, is_fraud: bool, at: float, correction: bool = False
    ) -> None:
        """One label for `value` at event time `at`; a `correction` turns an earlier label of
        the same transaction into `is_fraud` (its fraud count moves, its label count stays)."""
        # A value no transaction can have (longer than the contract allows) is not kept: the
        # state shipped must load wherever it goes.
        if value is None or len(value) > MAX_KEY_CHARS:
            return
        stats = self.stats
        s = stats.get(value)
        if s is None:
            s = stats[value] = [at] + [0.0] * (2 * len(self.taus))
            if len(stats) > self.max_keys:
                stats.popitem(last=False)
                self.evicted += 1
        else:
            stats.move_to_end(value)
        if correction:
            add(s, self.taus, 1.0 if is_fraud else -1.0, at, 0.0)
        else:
            add(s, self.taus, 1.0 if is_fraud else 0.0, at)
        self._changes += 1

    def _lookup_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Sorted value hashes, and per sorted position the reference time and counts; one
        extra last row of zeros answers for values without labels."""
        if self._built != self._changes:
            n = len(self.stats)
            hashes = hash_strings(list(self.stats))
            order = np.argsort(hashes, kind="stable")
            rows = np.array(list(self.stats.values()), dtype=np.float64).reshape(n, -1)[order]
            self._hashes = hashes[order]
            self._t = np.append(rows[:, 0], 0.0)
            self._counts = np.vstack([rows[:, 1:], np.zeros((1, rows.shape[1] - 1))])
            self._built = self._changes
        return self._hashes, self._t, self._counts

    def columns(self, hashes: np.ndarray, clock: float, prior: float, out: np.ndarray) -> None:
        """Write each record's features (one column per window) into `out` (n x W), for values
        given by their `core.byte_hash` hash (0: none), on the label clock `clock`."""
        if not self.stats:
            out[:] = prior
            return
        table, t_ref, counts = self._lookup_arrays()
        pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
        rows = np.where((table[pos] == hashes) & (hashes != 0), pos, len(table))
        age = np.maximum(clock - t_ref[rows], 0.0)
        s = self.spec.strength
        smoothed = s * prior
        for w, tau in enumerate(self.taus):
            decay = np.exp(age / -tau)
            frauds = counts[rows, 2 * w] * decay
            labels = counts[rows, 2 * w + 1] * decay
            np.divide(frauds + smoothed, labels + s, out=out[:, w])

    def to_data(self) -> dict[str, Any]:
        width = 1 + 2 * len(self.taus)
        rows = np.array(list(self.stats.values()), dtype=np.float64).reshape(len(self.stats), width)
        return {
            "windows_s": list(self.taus),
            "strength": self.spec.strength,
            "keys": list(self.stats),
            "times": _b64(rows[:, 0]),
            "counts": _b64(rows[:, 1:]),
            "evicted": self.evicted,
        }

    def load(self, data: Any) -> None:
        name = self.spec.name
        if not isinstance(data, dict):
            raise LabelStateError(f"label state: table {name!r} is not an object")
        if data.get("windows_s") != list(self.taus) or data.get("strength") != self.spec.strength:
            raise LabelStateError(
                f"label state: table {name!r} has windows {data.get('windows_s')} and strength "
                f"{data.get('strength')}, this fraudstream uses {list(self.taus)} and "
                f"{self.spec.strength}"
            )
        keys = data.get("keys")
        if not isinstance(keys, list) or not all(
            isinstance(k, str) and len(k) <= MAX_KEY_CHARS for k in keys
        ):
            raise LabelStateError(f"label state: table {name!r} keys are not short strings")
        if len(keys) > self.max_keys or len(set(keys)) != len(keys):
            raise LabelStateError(
                f"label state: table {name!r} has {len(keys)} keys (bound {self.max_keys}), "
                "or repeats one"
            )
        width = 2 * len(self.taus)
        times = _unb64(data.get("times"), len(keys), f"table {name!r} times")
        counts = _unb64(data.get("counts"), len(keys) * width, f"table {name!r} counts")
        counts = counts.reshape(len(keys), width)
        if (counts < 0).any() or (counts[:, 0::2] > counts[:, 1::2] * (1 + 1e-9)).any():
            raise LabelStateError(f"label state: table {name!r} has impossible counts")
        self.stats = OrderedDict(
            (k, [t, *c]) for k, t, c in zip(keys, times.tolist(), counts.tolist(), strict=True)
        )
        evicted = data.get("evicted", 0)
        self.evicted = evicted if isinstance(evicted, int) and evicted >= 0 else 0
        self._changes += 1


def add(s: list[float], taus: Sequence[float], fraud: float, at: float, label: float = 1.0) -> None:
    """Add `fraud` frauds among `label` labels at event time `at` to decayed counts
    [t_ref, f1, n1, f2, n2, ...]; frauds stay within [0, labels]."""
    t_ref = s[0]
    if at > t_ref:  # move the reference time forward: older counts decay
        for w, tau in enumerate(taus):
            d = math.exp((t_ref - at) / tau)
            n = s[2 + 2 * w] = s[2 + 2 * w] * d + label
            s[1 + 2 * w] = min(max(s[1 + 2 * w] * d + fraud, 0.0), n)
        s[0] = at
    else:  # a label for an earlier event counts as decayed already
        for w, tau in enumerate(taus):
            e = math.exp((at - t_ref) / tau)
            n = s[2 + 2 * w] = s[2 + 2 * w] + label * e
            s[1 + 2 * w] = min(max(s[1 + 2 * w] + fraud * e, 0.0), n)


class LabelState:
    """Every label-fed table, and the global fraud share they are smoothed towards."""

    def __init__(self, prior: float = 0.005, max_keys: int = 20_000) -> None:
        self.max_keys = max_keys
        self.tables = {spec.name: LabelTable(spec, max_keys) for spec in TABLES}
        self.merchant = self.tables["merchant"]
        self.category = self.tables["category"]
        self.country = self.tables["country"]
        self.base_prior = prior
        # Every label, decayed: [reference time, frauds, labels].
        self._global = [-math.inf, 0.0, 0.0]
        self.labels = 0  # labels observed (restored with the state)

    @property
    def prior(self) -> float:
        """The global fraud share the tables are smoothed towards."""
        _, frauds, labels = self._global
        return (frauds + self.base_prior * PRIOR_WEIGHT) / (labels + PRIOR_WEIGHT)

    @property
    def clock(self) -> float:
        """The newest event time among the labels observed (0 before the first)."""
        return self._global[0] if self._global[0] > -math.inf else 0.0

    @property
    def evicted(self) -> int:
        return sum(t.evicted for t in self.tables.values())

    def prepare(self) -> LabelState:
        """Build the lookup arrays now (a scorer does it off its scoring thread, once per
        snapshot), not at the first batch."""
        for table in self.tables.values():
            if table.stats:
                table._lookup_arrays()
        return self

    def observe(
        self,
        merchant: str | None,
        category: str | None,
        country: str | None,
        is_fraud: bool,
        at: float,
        correction: bool = False,
    ) -> None:
        """One label that has arrived, for a transaction of event time `at` (epoch s). A
        `correction` overrides the label learned earlier for the same transaction (the
        trainer's late and overriding labels): it moves fraud counts, not label counts."""
        g = self._global
        if g[0] == -math.inf:
            g[0] = at
        if correction:
            add(g, (GLOBAL_TAU_S,), 1.0 if is_fraud else -1.0, at, 0.0)
        else:
            add(g, (GLOBAL_TAU_S,), 1.0 if is_fraud else 0.0, at)
            self.labels += 1
        self.merchant.observe(merchant, is_fraud, at, correction)
        self.category.observe(category, is_fraud, at, correction)
        self.country.observe(country, is_fraud, at, correction)

    def columns(
        self,
        merchant_h: np.ndarray,
        category_h: np.ndarray,
        country_h: np.ndarray,
        out: np.ndarray,
    ) -> None:
        """Write the label-fed features (`FEATURES`, in order) of a batch into `out`
        (n x len(FEATURES)), for values given by their byte hashes (0: none)."""
        prior = self.prior
        clock = self.clock
        col = 0
        for table, hashes in ((self.merchant, merchant_h), (self.category, category_h),
                              (self.country, country_h)):  # fmt: skip
            width = len(table.taus)
            table.columns(hashes, clock, prior, out[:, col : col + width])
            col += width

    def to_data(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "global": list(self._global) if self._global[0] > -math.inf else None,
            "prior": self.base_prior,
            "labels": self.labels,
            "max_keys": self.max_keys,
            "tables": {name: t.to_data() for name, t in self.tables.items()},
        }

    @classmethod
    def from_data(cls, data: Any, max_keys: int | None = None) -> LabelState:
        """The state `to_data` wrote; LabelStateError (one line) for anything else."""
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            got = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise LabelStateError(
                f"label state has format {got!r}, this fraudstream reads {FORMAT!r}"
            )
        prior = data.get("prior")
        if not isinstance(prior, float) or not 0.0 < prior < 1.0:
            raise LabelStateError(f"label state: prior {prior!r} is not a share in (0, 1)")
        bound = max_keys if max_keys is not None else data.get("max_keys", 20_000)
        if not isinstance(bound, int) or bound < 1:
            raise LabelStateError(f"label state: max_keys {bound!r} is not a positive integer")
        state = cls(prior, bound)
        g = data.get("global")
        if g is not None:
            if (
                not isinstance(g, list)
                or len(g) != 3
                or not all(isinstance(v, float | int) and math.isfinite(v) for v in g)
                or not 0 <= g[1] <= g[2]
                or g[2] <= 0
            ):
                raise LabelStateError("label state: global counts are not [time, frauds, labels]")
            state._global = [float(v) for v in g]
        labels = data.get("labels", 0)
        state.labels = labels if isinstance(labels, int) and labels >= 0 else 0
        tables = data.get("tables")
        if not isinstance(tables, dict) or set(tables) != set(state.tables):
            raise LabelStateError(
                f"label state: tables {sorted(tables) if isinstance(tables, dict) else tables!r}"
                f", expected {sorted(state.tables)}"
            )
        for name, table in state.tables.items():
            table.load(tables[name])
        return state
