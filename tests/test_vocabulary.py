"""One-hot vocabularies (`core.vocabulary`): the scorer's lookup by byte hash gives what the
lookup by value gives, and stays bounded."""

from __future__ import annotations

from core.byte_hash import hash_strings
from core.vocabulary import Vocabulary


def test_ids_of_hashes_equal_key_ids_across_batches_and_past_the_limit() -> None:
    batches = [
        [None, "a", "b", "a", None],
        ["c", "a", "d", "c", "b"],  # "c" and "d" are past the limit of 2: both "other"
        ["d", None, "b", "e", "a"],
    ]
    by_value = Vocabulary("channel", limit=2)
    by_hash = Vocabulary("channel", limit=2)
    asked: list[int] = []
    for values in batches:
        expected = by_value.key_ids(values)

        def value_of(i: int, values: list[str | None] = values) -> str | None:
            asked.append(i)
            return values[i]

        got = by_hash.ids_of_hashes(hash_strings(values), value_of)
        assert got.tolist() == expected.tolist()
    # Only the remembered values (and None) are kept by hash: the map stays bounded.
    assert len(by_hash.by_hash) == 3
    # Values known by hash before the batch are not asked for; values past the limit are
    # asked for every time they appear.
    assert asked == [1, 2, 3, 0, 2, 3, 0, 3]
