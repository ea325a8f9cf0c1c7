"""The scorer's compiled decoding gives what the per-record path gives: the same dead letters,
columns, features and Score bytes, whichever path read each record."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import orjson
import pytest
from confluent_kafka import Message

from core.codec import MAX_RECORD_BYTES, DecodeError
from core.codec_compiled import CARD, CATEGORY, CHANNEL, COUNTRY, MERCHANT, TX_ID
from core.codec_msgspec import decode_transaction_fast
from core.features import FeatureBuilder
from core.score_encode_compiled import ScoreWriter
from fraudstream.benchmark.common import records as generated
from scorer.decoded import DecodedRecords, build_features


def _variants() -> list[bytes | None]:
    """Producer records, with rarer valid forms and invalid records mixed in."""
    base = generated(300, seed=3)
    out: list[bytes | None] = []
    for i, record in enumerate(base):
        r = dict(record)
        kind = i % 10
        if kind == 1:  # escapes and non-ASCII: the per-record path
            r["transaction_id"] = f'tx"{i}\\é'
            r["merchant_id"] = "café" if i % 20 == 1 else r["merchant_id"]
        elif kind == 2:  # a value of a field with a one-hot key, written with an escape
            raw = orjson.dumps(r).replace(b'"channel":"', b'"channel":"\\u006f')
            out.append(raw)
            continue
        elif kind == 3:
            r["country"] = None
            r.pop("channel")
        elif kind == 4:  # invalid: a dead letter
            r["amount"] = -1.0
        elif kind == 5:  # an unknown field: valid, the per-record path
            r["extra"] = [1, {"a": 2}]
        elif kind == 6:
            r["timestamp"] = "2026-11-22T12:00:00.5+02:00"
        out.append(orjson.dumps(r))
    out[7] = None
    out[17] = b"not json"
    out[27] = b"{" + b" " * MAX_RECORD_BYTES + b"}"
    out[37] = b'{"transaction_id": "t", "card_id": "c"}'
    return out


def _messages(values: list[bytes | None], keyed: bool = True) -> list[Message]:
    msgs = []
    for i, value in enumerate(values):
        key = None
        if keyed and value and i % 3:
            key = f"k{i}".encode()
        msgs.append(Message(topic="tx", partition=0, offset=i, key=key, value=value))
    return msgs


def _reference(values: list[bytes | None]) -> tuple[list, list[tuple[int, str]]]:
    txs, dead = [], []
    for i, value in enumerate(values):
        try:
            txs.append((i, decode_transaction_fast(value)))
        except DecodeError as exc:
            dead.append((i, exc.reason))
    return txs, dead


def test_dead_letters_and_columns_match_the_per_record_path() -> None:
    values = _variants()
    msgs = _messages(values)
    records = DecodedRecords(msgs)
    txs, dead = _reference(values)
    assert [(m.offset(), e.reason) for m, e in records.dead] == dead
    assert len(dead) > 30  # the mix has invalid records of several kinds
    assert len(records) == len(txs)
    assert len(records.fallback) > 60  # and valid records for the per-record path
    for row, (i, tx) in enumerate(txs):
        assert records.msgs[row].offset() == i
        assert records.amount[row] == tx.amount
        assert records.ts[row] == tx.timestamp.timestamp()
        assert records.string(row, TX_ID) == tx.transaction_id
        assert records.string(row, CARD) == tx.card_id
        assert records.string(row, CATEGORY) == tx.merchant_category
        assert records.string(row, MERCHANT) == tx.merchant_id
        assert records.string(row, COUNTRY) == tx.country
        assert records.string(row, CHANNEL) == tx.channel
        text = bytes(records.time_text[row, : records.time_len[row]])
        assert text == orjson.dumps(tx.timestamp, option=orjson.OPT_UTC_Z)[1:-1]
    keys = records.keys()
    for row, (i, tx) in enumerate(txs):
        assert keys[row] == (msgs[i].key() or tx.card_id.encode())


@pytest.mark.parametrize("batch", [1, 7, 64, 300])
def test_features_and_scores_match_the_object_path(batch: int) -> None:
    values = _variants()
    txs = [tx for _, tx in _reference(values)[0]]
    by_objects = FeatureBuilder(max_cards=50)
    by_columns = FeatureBuilder(max_cards=50)
    writer = ScoreWriter(reasons=3)
    now = datetime.now(UTC)
    done = 0
    for start in range(0, len(values), batch):
        records = DecodedRecords(_messages(values[start : start + batch]))
        got = build_features(by_columns, records)
        chunk = txs[done : done + len(records)]
        done += len(records)
        if not chunk:
            continue
        want = by_objects.build(chunk)
        assert np.array_equal(got.dense, want.dense)
        assert got.sparse == want.sparse
        probs = np.linspace(0, 1, len(chunk))
        spans = records.spans
        scores = writer.write_spans(
            records.arena, spans[:, TX_ID, :], spans[:, CARD, :], records.time_text,
            records.time_len, probs, 0.5, 3, now, got.dense, got.onehot, got.dense, {},
        )  # fmt: skip
        reference = writer.write(
            [t.transaction_id for t in chunk], [t.card_id for t in chunk],
            [t.timestamp for t in chunk], probs, 0.5, 3, now, want.dense, want.onehot,
            want.dense, {},
        )  # fmt: skip
        assert scores == reference
    assert done == len(txs)
    assert by_columns.store.evicted == by_objects.store.evicted > 0
    assert "missing" not in by_columns.store and txs[-1].card_id in by_columns.store


def test_a_run_of_only_dead_letters() -> None:
    records = DecodedRecords(_messages([None, b"", b"[]"], keyed=False))
    assert len(records) == 0 and len(records.dead) == 3
    assert len(build_features(FeatureBuilder(), records)) == 0
