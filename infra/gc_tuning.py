"""Garbage-collector settings for the hot loops (scorer, trainer)."""

from __future__ import annotations

import gc


def quiet_gc() -> None:
    """Keep the cyclic garbage collector out of the hot path.

    Profiles showed a quarter of the scorer's time (a tenth of the trainer's) in collections:
    every batch allocates tens of thousands of short-lived containers (messages, rows, joined
    pairs), so the default gen-0 threshold of 700 triggered many collections per batch, and
    each older-generation pass walked everything the imports left behind (MLflow, River,
    pandas). Objects alive now are frozen out of collection and collections run once per ~50k
    new containers; the hot paths create no reference cycles, so reference counting frees
    nearly everything anyway.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
