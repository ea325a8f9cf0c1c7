"""One-hot vocabularies: categorical values (a merchant category, a channel) to their one-hot
feature keys (`channel=pos`), bounded so that junk input cannot grow the model.

The keys have process-wide integer ids (`ONE_HOT`): a feature batch carries its keys as small
integers, and the model and the Score writer index arrays with them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import repeat

import numpy as np

# Distinct categorical values turned into their own feature; later ones share "other",
# so hostile input cannot grow the model without bound.
MAX_CATEGORY_VALUES = 100


class OneHotKeys:
    """Ids of one-hot key names (`channel=pos`), shared by the whole process: a batch carries
    its keys as small integers, so the model and the Score writer index arrays instead of
    hashing a tuple of strings per record. Bounded, as every vocabulary is."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.ids: dict[str, int] = {}

    def id_of(self, key: str) -> int:
        i = self.ids.get(key)
        if i is None:
            i = self.ids[key] = len(self.names)
            self.names.append(key)
        return i


ONE_HOT = OneHotKeys()


_UNSEEN = -2  # key_ids: a value without an id yet


@dataclass
class Vocabulary:
    """Bounded map from categorical value to its one-hot key."""

    prefix: str
    limit: int = MAX_CATEGORY_VALUES
    keys: dict[str, str] = field(default_factory=dict)
    # value -> ONE_HOT id of its key (None: no key); only for values that have their own key.
    ids: dict[str | None, int] = field(default_factory=lambda: {None: -1})
    # The same ids by the value's byte hash (0: None), for the scorer's compiled decoding.
    by_hash: dict[int, int] = field(default_factory=lambda: {0: -1})
    # `by_hash` as sorted arrays, rebuilt when it grows (it only grows).
    _table_size: int = field(default=0, init=False, repr=False)
    _table_hashes: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.uint64), init=False, repr=False
    )
    _table_ids: np.ndarray = field(
        default_factory=lambda: np.zeros(0, np.int64), init=False, repr=False
    )

    def key(self, value: str) -> str:
        k = self.keys.get(value)
        if k is None:
            k = f"{self.prefix}={value}" if len(self.keys) < self.limit else f"{self.prefix}=other"
            if len(self.keys) < self.limit:
                self.keys[value] = k
        return k

    def key_ids(self, values: list[str | None]) -> np.ndarray:
        """The `ONE_HOT` id of each value's key, -1 for None: one C-level lookup per value."""
        ids = np.fromiter(map(self.ids.get, values, repeat(_UNSEEN)), np.int64, len(values))
        for i in np.flatnonzero(ids == _UNSEEN).tolist():
            value = values[i]
            assert value is not None  # None is always in `ids`
            key_id = ids[i] = ONE_HOT.id_of(self.key(value))
            if value in self.keys:  # a value past the limit shares "other" and is not kept
                self.ids[value] = key_id
        return ids

    def ids_of_hashes(
        self, hashes: np.ndarray, value_of: Callable[[int], str | None]
    ) -> np.ndarray:
        """As `key_ids`, for values known by their byte hash (`core.byte_hash`; 0: None):
        `value_of(i)` gives record i's value, asked only for a hash not met before."""
        by_hash = self.by_hash
        if self._table_size != len(by_hash):
            known = np.fromiter(by_hash, np.uint64, len(by_hash))
            order = np.argsort(known)
            self._table_hashes = known[order]
            self._table_ids = np.fromiter(by_hash.values(), np.int64, len(by_hash))[order]
            self._table_size = len(by_hash)
        # A sorted-array lookup for the batch (the vocabulary is small): no Python per record.
        table = self._table_hashes
        pos = np.minimum(np.searchsorted(table, hashes), len(table) - 1)
        ids = np.where(table[pos] == hashes, self._table_ids[pos], _UNSEEN)
        for i in np.flatnonzero(ids == _UNSEEN).tolist():
            value = value_of(i)
            ids[i] = self.key_ids([value])[0]
            if value in self.ids:  # remembered values only: the map stays bounded
                by_hash[int(hashes[i])] = int(ids[i])
        return ids
