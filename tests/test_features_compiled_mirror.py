"""The compiled card kernel (`core.features_compiled`) against the numpy reference path of
`core.features` (`FeatureBuilder(jit=False)`)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np

from core.contracts import Transaction
from core.features import FeatureBuilder
from fraudstream.benchmark.common import records


def test_compiled_kernel_matches_the_numpy_rounds() -> None:
    """The compiled sequential kernel and the numpy path (rounds of distinct cards) agree on a
    generated stream with card-testing bursts, many records per card in one batch, out-of-order
    events, missing countries/merchants, and evictions that reuse slots."""
    raw = records(6000, seed=11)
    txs = [Transaction.model_validate(r) for r in raw]
    rng = np.random.default_rng(5)
    for i in rng.choice(len(txs), 300, replace=False):
        update: dict[str, object] = {"country": None} if i % 2 else {"merchant_id": None}
        if i % 3 == 0:
            update["timestamp"] = txs[i].timestamp - timedelta(hours=5)
        txs[i] = txs[i].model_copy(update=update)
    fast, reference = FeatureBuilder(400), FeatureBuilder(400, jit=False)
    for start, size in ((0, 1), (1, 999), (1000, 3000), (4000, 2000)):
        part = txs[start : start + size]
        a, b = fast.build(part), reference.build(part)
        assert np.allclose(a.dense, b.dense, rtol=1e-12, atol=1e-12)
        assert a.sparse == b.sparse
    assert fast.store.evicted == reference.store.evicted > 0
    n = fast.store.rows
    assert np.allclose(fast.store.numeric[:n], reference.store.numeric[:n], rtol=1e-12)
    assert (fast.store.keys[:n] == reference.store.keys[:n]).all()
