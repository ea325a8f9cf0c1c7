"""Scorer memory per tracked card: a child process builds state for N distinct cards."""

from __future__ import annotations

import json
import resource
import subprocess
import sys


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def probe(cards: int) -> dict[str, float]:
    """Runs in the child: feature state for `cards` distinct cards, in scorer-sized batches."""
    from datetime import UTC, datetime

    from core.contracts import Transaction
    from core.features import FeatureBuilder

    builder = FeatureBuilder(max_cards=cards)
    when = datetime(2026, 11, 22, tzinfo=UTC)
    batch = 5000
    # Build one batch first so imports and buffers are counted in the baseline.
    warm = [
        Transaction(
            transaction_id="w", card_id="w", amount=1.0, merchant_category="m", timestamp=when
        )
    ]
    builder.build(warm)
    builder.forget()
    base = _rss_kib()
    for start in range(0, cards, batch):
        txs = [
            Transaction(
                transaction_id=f"t{i}",
                card_id=f"card_{i:012x}",
                amount=12.5,
                merchant_category="grocery",
                timestamp=when,
                country="FR",
            )
            for i in range(start, min(start + batch, cards))
        ]
        builder.build(txs)
    after = _rss_kib()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "cards": float(len(builder.store)),
        "rss_base_mib": base / 1024,
        "rss_after_mib": after / 1024,
        "peak_rss_mib": peak / 1024,
        "bytes_per_card": (after - base) * 1024 / max(len(builder.store), 1),
    }


def measure(cards: int) -> dict[str, float]:
    code = (
        "import json,sys; from fraudstream.benchmark.memory import probe; "
        f"print(json.dumps(probe({cards})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=600
    )
    return json.loads(out.stdout.strip().splitlines()[-1])
