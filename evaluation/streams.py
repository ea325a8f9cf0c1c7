"""The streams `fraudstream evaluate` replays: generated, or read from recorded files.

A stream is transactions in event-time order, each with a ground truth (when known) and the
time its label arrives (never, for labels that do not come). A generated stream comes from
`producer.generator` on a simulated diurnal clock; a recorded one from Transaction JSON lines
and Label rows (JSONL or CSV). `write_stream` writes a stream back in the wire formats.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from core.codec import DecodeError, decode_transaction
from core.contracts import Transaction
from core.errors import FraudstreamError

log = logging.getLogger(__name__)

DAY_S = 86400.0


class StreamError(FraudstreamError, ValueError):
    """A stream cannot be read or generated; the message is one line for the CLI."""


@dataclass
class Stream:
    """Transactions in event-time order with their ground truth and label arrival times."""

    transactions: list[Transaction]
    ts: np.ndarray  # event time, epoch seconds
    y: np.ndarray  # bool ground truth (False where unknown)
    known: np.ndarray  # bool: ground truth known (only these rows are measured)
    label_time: np.ndarray  # when the label arrives, epoch seconds; inf: never
    drift_time: float | None = None
    patterns: list[str | None] | None = None
    source: str = "generated"
    info: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.transactions)


def generate_stream(
    n: int = 300_000,
    days: float = 30.0,
    seed: int = 42,
    fraud_rate: float = 0.005,
    drift_at: float | None = 0.5,
    label_delay_s: float = DAY_S,
    label_coverage: float = 0.9,
    n_cards: int = 5000,
    n_merchants: int = 800,
    start: datetime = datetime(2026, 1, 5, tzinfo=UTC),
) -> Stream:
    """A synthetic stream on a simulated diurnal clock; `drift_at` is a fraction of it.

    Labels come for a `label_coverage` share of transactions, each after a delay drawn
    uniformly in [0.5, 1.5] x `label_delay_s`.
    """
    from producer.generator import TransactionGenerator

    if drift_at is not None and not 0.0 < drift_at < 1.0:
        raise StreamError(f"--drift-at must be a fraction in (0, 1), got {drift_at}")
    drift_call = int(n * drift_at) if drift_at is not None else None
    gen = TransactionGenerator(
        seed=seed,
        fraud_rate=fraud_rate,
        n_cards=n_cards,
        n_merchants=n_merchants,
        drift_at=drift_call,
    )
    rng = random.Random(f"fraudstream-labels:{seed}")
    txs: list[Transaction] = []
    ys: list[bool] = []
    patterns: list[str | None] = []
    label_time = np.full(n, np.inf)
    ts = np.empty(n)
    for i, (record, is_fraud, pattern) in enumerate(gen.simulate(n, start, days)):
        tx = Transaction.model_validate(record)
        txs.append(tx)
        ys.append(is_fraud)
        patterns.append(pattern)
        ts[i] = tx.timestamp.timestamp()
        if rng.random() < label_coverage:
            label_time[i] = ts[i] + label_delay_s * (0.5 + rng.random())
    y = np.asarray(ys, dtype=bool)
    drift_time = float(ts[drift_call]) if drift_call is not None and drift_call < n else None
    return Stream(
        txs,
        ts,
        y,
        np.ones(n, dtype=bool),
        label_time,
        drift_time,
        patterns,
        "generated",
        {
            "seed": seed,
            "days": days,
            "fraud_rate": fraud_rate,
            "drift_at": drift_at,
            "label_delay_s": label_delay_s,
            "label_coverage": label_coverage,
            "n_cards": n_cards,
            "n_merchants": n_merchants,
        },
    )


def read_stream(
    transactions_path: Path,
    labels_path: Path,
    label_delay_s: float | None = None,
    drift_time: float | None = None,
    on_error: Callable[[str], None] | None = None,
) -> Stream:
    """A recorded stream: Transaction JSON lines and Label rows (JSONL or CSV).

    Invalid rows are skipped and reported through `on_error`. A label arrives at its
    `labeled_at`, else at its transaction's time + `label_delay_s`; a label with neither is an
    error. Transactions without a label are scored but not measured. Labels for unknown
    transactions are counted and ignored.
    """
    from producer.replay import ReplayError, read_label_rows

    report = on_error or (lambda message: log.warning("%s", message))
    for path in (transactions_path, labels_path):
        if not Path(path).is_file():
            raise StreamError(f"{path} does not exist or is not a file")
    rows: list[tuple[float, int, Transaction]] = []
    bad = 0
    with Path(transactions_path).open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if not line:
                continue
            try:
                tx = decode_transaction(line)
            except DecodeError as exc:
                bad += 1
                report(f"{transactions_path}:{lineno}: {exc.reason}: {exc.detail}")
                continue
            rows.append((tx.timestamp.timestamp(), len(rows), tx))
    if not rows:
        raise StreamError(f"{transactions_path}: no valid transaction")
    rows.sort(key=lambda r: (r[0], r[1]))  # event-time order, file order among equals
    txs = [r[2] for r in rows]
    n = len(txs)
    ts = np.fromiter((r[0] for r in rows), dtype=np.float64, count=n)
    index: dict[str, int] = {}
    for i, tx in enumerate(txs):
        index.setdefault(tx.transaction_id, i)
    y = np.zeros(n, dtype=bool)
    known = np.zeros(n, dtype=bool)
    label_time = np.full(n, np.inf)
    unmatched = bad_labels = 0
    try:
        label_rows = read_label_rows(Path(labels_path))
        for lineno, label, error in label_rows:
            if label is None:
                bad_labels += 1
                report(f"{labels_path}: {error}")
                continue
            found = index.get(label.transaction_id)
            if found is None:
                unmatched += 1
                continue
            i = found
            if label.labeled_at is not None:
                at = label.labeled_at.timestamp()
            elif label_delay_s is not None:
                at = ts[i] + label_delay_s
            else:
                raise StreamError(
                    f"{labels_path}:{lineno}: no labeled_at; give --label-delay to time labels"
                )
            y[i] = label.is_fraud
            known[i] = True
            label_time[i] = max(at, ts[i])  # a label cannot come before its transaction
    except ReplayError as exc:
        raise StreamError(str(exc)) from None
    if not known.any():
        raise StreamError(f"{labels_path}: no label matches a transaction")
    return Stream(
        txs,
        ts,
        y,
        known,
        label_time,
        drift_time,
        None,
        "files",
        {
            "transactions_file": str(transactions_path),
            "labels_file": str(labels_path),
            "invalid_transactions": bad,
            "invalid_labels": bad_labels,
            "unmatched_labels": unmatched,
            "label_delay_s": label_delay_s,
        },
    )


def write_stream(stream: Stream, transactions_path: Path, labels_path: Path) -> None:
    """Write a stream in the wire formats (labels with `labeled_at`), e.g. to try `--labels`."""
    with Path(transactions_path).open("wb") as f:
        for tx in stream.transactions:
            f.write(orjson.dumps(tx.model_dump(mode="json", exclude_none=True)) + b"\n")
    with Path(labels_path).open("wb") as f:
        for i, tx in enumerate(stream.transactions):
            if stream.known[i] and math.isfinite(stream.label_time[i]):
                at = datetime.fromtimestamp(stream.label_time[i], UTC)
                label = {
                    "transaction_id": tx.transaction_id,
                    "is_fraud": bool(stream.y[i]),
                    "labeled_at": at.isoformat().replace("+00:00", "Z"),
                }
                f.write(orjson.dumps(label) + b"\n")


def day_index(ts: np.ndarray) -> np.ndarray:
    return np.floor(ts / DAY_S).astype(np.int64)


def iso(ts: float) -> str:
    return (
        (datetime(1970, 1, 1, tzinfo=UTC) + timedelta(seconds=ts))
        .isoformat()
        .replace("+00:00", "Z")
    )
