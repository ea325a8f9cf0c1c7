"""Hypothesis strategies shared by the decoder property tests: JSON values and transactions
that are almost valid."""

from __future__ import annotations

import orjson
from hypothesis import strategies as st

json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=10,
)


def near_valid_transactions(stamps: st.SearchStrategy[str]) -> st.SearchStrategy[dict[str, object]]:
    """Transaction objects whose every field may be of the wrong type, timestamps from `stamps`."""
    return st.fixed_dictionaries(
        {
            "transaction_id": st.text(max_size=10) | json_scalars,
            "card_id": st.sampled_from(["c1", "c2", "c3"]) | json_scalars,
            "amount": st.floats(allow_nan=True, allow_infinity=True) | st.integers() | json_scalars,
            "merchant_category": st.sampled_from(["grocery", "travel"]) | json_scalars,
            "timestamp": stamps | json_scalars,
        },
        optional={"country": json_scalars, "channel": json_scalars, "extra": json_values},
    )


def json_bytes(obj: object) -> bytes:
    """JSON bytes of `obj`, or its repr where JSON cannot hold it (not JSON at all, then)."""
    try:
        return orjson.dumps(obj)
    except (TypeError, orjson.JSONEncodeError):
        return repr(obj).encode()
