"""The stream of a live evaluation as wire records, in the order they are published.

Transactions go to `transactions` at their event time, labels to `labels` at their arrival
time (a transaction before a label at the same instant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import orjson

from evaluation.streams import Stream, iso


@dataclass
class Records:
    """The stream as wire records in publishing order: transactions at their event time,
    labels at their arrival time (a transaction before a label at the same instant)."""

    topics: np.ndarray  # 0: transaction, 1: label
    rows: np.ndarray  # the stream row each record is of
    keys: list[bytes]
    values: list[bytes]

    def transaction_times(self, sent_at: np.ndarray, stream_rows: int) -> np.ndarray:
        """Per stream row: when its transaction was sent, from the per-record `sent_at`."""
        out = np.full(stream_rows, np.nan)
        at = np.nonzero(self.topics == 0)[0]
        out[self.rows[at]] = sent_at[at]
        return out

    @property
    def transactions(self) -> int:
        return int((self.topics == 0).sum())

    @property
    def labels(self) -> int:
        return int((self.topics == 1).sum())

    def __len__(self) -> int:
        return len(self.keys)


def stream_records(stream: Stream, source: str = "investigation") -> Records:
    n = len(stream)
    labelled = np.nonzero(stream.known & np.isfinite(stream.label_time))[0]
    times = np.concatenate([stream.ts, stream.label_time[labelled]])
    kinds = np.concatenate([np.zeros(n, dtype=np.int8), np.ones(len(labelled), dtype=np.int8)])
    rows = np.concatenate([np.arange(n), labelled])
    order = np.lexsort((kinds, times))
    keys: list[bytes] = []
    values: list[bytes] = []
    txs = stream.transactions
    for k in order:
        i = int(rows[k])
        tx = txs[i]
        if kinds[k] == 0:
            keys.append(tx.card_id.encode())
            values.append(orjson.dumps(tx.model_dump(mode="json", exclude_none=True)))
        else:
            keys.append(tx.transaction_id.encode())
            label = {
                "transaction_id": tx.transaction_id,
                "is_fraud": bool(stream.y[i]),
                "labeled_at": iso(float(stream.label_time[i])),
                "source": source,
            }
            values.append(orjson.dumps(label))
    return Records(kinds[order], rows[order], keys, values)
