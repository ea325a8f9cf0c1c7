"""A partition's run of consumed records, decoded to columns.

The compiled parser (`core.codec_compiled`) reads the records of the common form straight
from their bytes into arrays: no Python object per record or field. A record it does not
take (escapes, non-ASCII, an unknown key, a rarer number or time form, or an invalid record)
goes the per-record way (`core.codec_msgspec.decode_transaction_fast`): accepted, its columns are
filled from the decoded object; rejected, it becomes a dead letter with the codec's reason.
Either way a record gets the same columns, hashes and text, so features and Scores do not
depend on which path read it (`tests/test_decoded.py`).
"""

from __future__ import annotations

from typing import cast

import numpy as np
from confluent_kafka import Message

from core.byte_hash import SEED, hash_column, hash_strings
from core.codec import MAX_RECORD_BYTES, DecodeError
from core.codec_compiled import (
    CARD,
    CATEGORY,
    CHANNEL,
    COUNTRY,
    MERCHANT,
    TX_ID,
    parse_transactions,
)
from core.codec_msgspec import FastTransaction, decode_transaction_fast
from core.features import FeatureBatch, FeatureBuilder
from core.score_encode_compiled import StringArena, event_time_text
from infra.envelope import envelope_errors

_SEED = np.uint64(SEED)  # (a plain int would compile a second variant)
_VALUE = Message.value
_KEY = Message.key


class DecodedRecords:
    """Columns of the valid records of a run, in offset order, and the run's dead letters."""

    __slots__ = (
        "msgs", "values", "arena", "amount", "ts", "spans", "time_text", "time_len",
        "card_h", "country_h", "merchant_h", "category_h", "channel_h", "fallback", "dead", "_keys",
    )  # fmt: skip

    def __init__(self, msgs: list[Message]) -> None:
        values: list[bytes | None] = list(map(_VALUE, msgs))
        keys: list[bytes | None] = list(map(_KEY, msgs))
        n = len(values)
        # Keys and headers over their limits: dead letters, whatever the value holds.
        refused = envelope_errors(msgs, keys)
        try:
            lengths = np.fromiter(map(len, values), np.int64, n)  # type: ignore[arg-type]
            buf = b"".join(values)  # type: ignore[arg-type]
        except TypeError:  # a record without a value: the parser sees it empty and refuses it
            safe = [b"" if v is None else v for v in values]
            lengths = np.fromiter(map(len, safe), np.int64, n)
            buf = b"".join(safe)
        raw = np.frombuffer(buf, dtype=np.uint8)
        cols = parse_transactions(raw, np.cumsum(lengths), MAX_RECORD_BYTES)
        self.amount, self.ts, self.spans = cols.amount, cols.ts, cols.spans
        self.time_text, self.time_len = cols.time_text, cols.time_len
        self.dead: list[tuple[Message, DecodeError]] = []
        ok = cols.ok
        if refused:
            ok[list(refused)] = False
        slow = np.flatnonzero(~ok).tolist()
        spans = self.spans
        spans[slow] = -1  # (unspecified where the parser refused)
        self.card_h = hash_column(raw, spans[:, CARD, :], _SEED)
        self.country_h = hash_column(raw, spans[:, COUNTRY, :], _SEED)
        self.merchant_h = hash_column(raw, spans[:, MERCHANT, :], _SEED)
        self.category_h = hash_column(raw, spans[:, CATEGORY, :], _SEED)
        self.channel_h = hash_column(raw, spans[:, CHANNEL, :], _SEED)
        # Records the parser left to the per-record path, by row.
        decoded: dict[int, FastTransaction] = {}
        for i in slow:
            refusal = refused.get(i)
            if refusal is not None:
                self.dead.append((msgs[i], refusal))
                continue
            try:
                decoded[i] = decode_transaction_fast(values[i])
            except DecodeError as exc:
                self.dead.append((msgs[i], exc))
        arena = StringArena(buf)
        for i, tx in decoded.items():
            self._fill(i, tx, arena)
        self.arena = arena.array() if decoded else raw
        self.msgs = msgs
        self.values = values
        self._keys = keys
        if self.dead:
            keep = np.ones(n, dtype=bool)
            gone = sorted(i for i in slow if i not in decoded)
            keep[gone] = False
            self._select(keep)
            rows = np.cumsum(keep) - 1  # old row -> new row
            decoded = {int(rows[i]): tx for i, tx in decoded.items()}
        self.fallback = decoded

    def _fill(self, i: int, tx: FastTransaction, arena: StringArena) -> None:
        # Hashes of the values' UTF-8 bytes, as the parser's rows have; strings the Score
        # carries as escaped text.
        hashes = hash_strings(
            [tx.card_id, tx.country, tx.merchant_id, tx.merchant_category, tx.channel]
        )
        self.card_h[i], self.country_h[i], self.merchant_h[i] = hashes[:3]
        self.category_h[i], self.channel_h[i] = hashes[3:]
        self.amount[i] = tx.amount
        self.ts[i] = tx.timestamp.timestamp()
        self.spans[i] = -1
        self.spans[i, TX_ID] = arena.add(tx.transaction_id)
        self.spans[i, CARD] = arena.add(tx.card_id)
        for field, value in ((MERCHANT, tx.merchant_id), (CATEGORY, tx.merchant_category),
                             (COUNTRY, tx.country)):  # fmt: skip
            if value is not None:
                self.spans[i, field] = arena.add(value)
        text, length = event_time_text([tx.timestamp])
        self.time_text[i] = text[0]
        self.time_len[i] = length[0]

    def _select(self, keep: np.ndarray) -> None:
        self.msgs = [m for m, k in zip(self.msgs, keep.tolist(), strict=True) if k]
        self.values = [v for v, k in zip(self.values, keep.tolist(), strict=True) if k]
        self._keys = [v for v, k in zip(self._keys, keep.tolist(), strict=True) if k]
        for name in ("amount", "ts", "spans", "time_text", "time_len", "card_h", "country_h",
                     "merchant_h", "category_h", "channel_h"):  # fmt: skip
            setattr(self, name, getattr(self, name)[keep])

    def __len__(self) -> int:
        return len(self.msgs)

    def string(self, i: int, field: int) -> str | None:
        """Record i's value of a string field (`core.codec_compiled` index)."""
        tx = self.fallback.get(i)
        if tx is not None:
            return getattr(tx, _ATTRS[field])
        start, end = self.spans[i, field].tolist()
        return None if start < 0 else bytes(self.arena[start:end]).decode()

    def strings(self, field: int) -> list[str | None]:
        return [self.string(i, field) for i in range(len(self))]

    def transactions(self) -> list[FastTransaction]:
        """The records as objects: for the rarer paths only (per record, slow)."""
        return [self.fallback.get(i) or decode_transaction_fast(v) for i, v in
                enumerate(self.values)]  # fmt: skip

    def keys(self) -> list[bytes]:
        """Each record's Kafka key, its card id where it had none."""
        keys = list(self._keys)
        if None in keys or b"" in keys:
            for i, key in enumerate(keys):
                if not key:
                    keys[i] = str(self.string(i, CARD)).encode()
        return cast("list[bytes]", keys)


_ATTRS = {
    TX_ID: "transaction_id",
    CARD: "card_id",
    CATEGORY: "merchant_category",
    MERCHANT: "merchant_id",
    COUNTRY: "country",
    CHANNEL: "channel",
}


def build_features(builder: FeatureBuilder, records: DecodedRecords) -> FeatureBatch:
    """The records' features, as `builder.build` gives for the same transactions."""
    onehot = np.empty((len(records), 2), dtype=np.int64)
    onehot[:, 0] = builder.categories.ids_of_hashes(
        records.category_h, lambda i: records.string(i, CATEGORY)
    )
    onehot[:, 1] = builder.channels.ids_of_hashes(
        records.channel_h, lambda i: records.string(i, CHANNEL)
    )

    def strings() -> tuple[list[str | None], list[str], list[str | None]]:
        # Every valid record has a category.
        category = cast("list[str]", records.strings(CATEGORY))
        return records.strings(MERCHANT), category, records.strings(COUNTRY)

    return builder.build_columns(
        records.ts, records.amount, records.card_h, records.country_h, records.merchant_h,
        records.category_h, onehot,
    )  # fmt: skip
