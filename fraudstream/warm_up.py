"""`fraudstream warm-up`: compile every Numba kernel into its on-disk cache before first use.

The kernels are compiled with `cache=True`: the machine code goes to `__pycache__` next to
their sources (or to `NUMBA_CACHE_DIR`), and a later process loads it instead of compiling.
Compiling them all takes tens of seconds on 2 cores; loading them, about a second. `make
install` and the Docker image build run this once, so a scorer or trainer starts by loading.

The kernels are reached the way the processes reach them (a batch of generated records
decoded, featurised, scored and written as Scores; a learner built), so every type
signature the processes use is compiled, not only the ones a hand-written call would hit.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

# Every module with a `@numba.njit(cache=True)` kernel (tests/test_warm_up.py checks the list
# against the sources).
KERNEL_MODULES = (
    "core.codec_compiled",
    "core.byte_hash",
    "core.card_table",
    "core.features_compiled",
    "core.score_encode_compiled",
    "core.learner_compiled",
)


@dataclass(frozen=True)
class Kernel:
    """One compiled kernel after the warm-up: how many signatures were loaded or compiled."""

    name: str
    signatures: int
    loaded: int
    compiled: int


def kernels() -> Iterator[tuple[str, Any]]:
    """(module.name, dispatcher) of every cached kernel that is compiled on its own (kernels
    inlined into their callers have no code of their own to cache)."""
    from numba.core.registry import CPUDispatcher

    for module_name in KERNEL_MODULES:
        module = importlib.import_module(module_name)
        for name, obj in sorted(vars(module).items()):
            if not isinstance(obj, CPUDispatcher) or obj.__module__ != module_name:
                continue
            if obj.targetoptions.get("inline") == "always":
                continue
            yield f"{module_name}.{name}", obj


def _generated_messages(n: int) -> list[Any]:
    """Records as the producer writes them, plus the rarer forms the per-record path takes."""
    from confluent_kafka import Message

    from fraudstream.benchmark.common import records

    values = [orjson.dumps(r) for r in records(n, seed=1)]
    values[1] = values[1].replace(b'"transaction_id":"', b'"transaction_id":"\\u0074')
    values[2] = b"not json"
    return [
        Message(topic="transactions", partition=0, offset=i, key=b"k", value=v)
        for i, v in enumerate(values)
    ]


def _score_a_batch() -> None:
    """The scorer's path over one batch: decode, per-card features, model, Score records."""
    from core.codec_compiled import CARD, TX_ID
    from core.features import FeatureBuilder
    from core.model import build_pipeline
    from core.model_compiled import CompiledModel
    from core.score_encode_compiled import ScoreWriter, round_features
    from core.vocabulary import Vocabulary
    from scorer.decoded import DecodedRecords, build_features

    records = DecodedRecords(_generated_messages(64))
    builder = FeatureBuilder(1000, Vocabulary("merchant_category"), Vocabulary("channel"))
    batch = build_features(builder, records)
    round_features(batch.dense)
    model = CompiledModel.from_pipeline(build_pipeline(), 0)
    probs = model.predict_proba(batch)
    contrib = ((batch.dense - model.mean) * model.inv_std) * model.weight
    onehot = batch.onehot if batch.onehot is not None else batch.sparse
    spans = records.spans
    ScoreWriter().write_spans(
        records.arena, spans[:, TX_ID, :], spans[:, CARD, :], records.time_text,
        records.time_len, probs, 0.5, 0, datetime.now(UTC), batch.dense, onehot, contrib,
        model.sparse, {"challenger": probs},
    )  # fmt: skip


def _fill_a_card_table() -> None:
    """The card table's growth, eviction and lookups (a batch reaches them only when the
    table outgrows its first size or `scorer.max_cards`)."""
    import numpy as np

    from core.card_table import CardSlots

    slots = CardSlots(max_cards=4, _index_size=2)
    slots.assign(np.arange(1, 33, dtype=np.uint64))
    slots.trim()
    slots.recency()
    _ = 1 in slots


def warm_up() -> tuple[list[Kernel], float]:
    """Compile (or load) every kernel; returns each kernel's figures and the seconds taken."""
    from core.codec_compiled import configure_numba
    from core.codec_compiled import warm_up as warm_up_parser
    from core.features_compiled import warm_up as warm_up_card_kernel
    from core.learner_compiled import FastLearner
    from core.model import build_pipeline
    from core.score_encode_compiled import ScoreWriter

    configure_numba()
    start = time.perf_counter()
    warm_up_parser()
    warm_up_card_kernel()
    ScoreWriter().warm_up()
    _score_a_batch()
    _fill_a_card_table()
    FastLearner(build_pipeline())
    elapsed = time.perf_counter() - start
    report = [
        Kernel(
            name,
            len(dispatcher.signatures),
            sum(dispatcher.stats.cache_hits.values()),
            sum(dispatcher.stats.cache_misses.values()),
        )
        for name, dispatcher in kernels()
    ]
    return report, elapsed
