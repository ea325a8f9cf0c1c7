"""Score records to JSON bytes, a whole batch at a time, floats in shortest form.

The scorer uses `core/score_encode_compiled.py` (compiled, fixed-point features); this encoder
takes the batches that one cannot (a feature non-finite or beyond 9e9) and is its reference in
tests.

A dict per record, serialised, would be the scorer's largest cost (20 float objects, a
22-key dict, an `orjson.dumps` call and three reason dicts per record). Here every column is
serialised once per batch by orjson (numbers from the numpy arrays, strings from lists),
split into tokens, and interleaved with constant pieces in a single list, which one `join`
turns into the batch's records. Python does O(1) work per batch per column, plus one
dictionary lookup per record for its one-hot keys.

The output is ordinary JSON with the same fields and values as `core.contracts.Score`;
`tests/test_score_encode_mirror.py` checks that each record parses back to exactly what the
dict-based encoder produced (floats bit for bit), including hostile strings.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import numpy as np
import orjson

from core.features import DENSE_FEATURES

_NUMPY = orjson.OPT_SERIALIZE_NUMPY
# A record separator that JSON text from orjson never contains (control characters inside
# strings are escaped).
_SEP = b"\n"


def _numbers(values: np.ndarray) -> list[bytes]:
    """Each element of a float array as JSON text (orjson's shortest round-trip form)."""
    flat = np.ascontiguousarray(values, dtype=np.float64).ravel()
    if flat.size == 0:
        return []
    text = orjson.dumps(flat, option=_NUMPY)
    return text[1:-1].split(b",")


def _strings(values: Sequence[str]) -> list[bytes]:
    """Each string as the escaped content of a JSON string (without the quotes).

    Inside an encoded string every quote is escaped, so `","` occurs only between elements.
    """
    if not values:
        return []
    return orjson.dumps(list(values))[2:-2].split(b'","')


def _datetimes(values: Sequence[datetime]) -> list[bytes]:
    """Each datetime as RFC 3339 text (UTC written as Z), without the quotes."""
    if not values:
        return []
    return orjson.dumps(list(values), option=orjson.OPT_UTC_Z)[2:-2].split(b'","')


class ScoreEncoder:
    """Encodes batches of Score records; one-hot fragments and reason names are cached."""

    def __init__(self, reasons: int = 3) -> None:
        self.top = reasons
        self._keys = [orjson.dumps(name) + b":" for name in DENSE_FEATURES]
        self._onehot: dict[tuple[str, ...], bytes] = {}
        names = [orjson.dumps(name) for name in DENSE_FEATURES]
        self._reason_first = [b'{"feature":' + n + b',"contribution":' for n in names]
        self._reason_next = [b',{"feature":' + n + b',"contribution":' for n in names]
        self._reason_key: dict[str, tuple[bytes, bytes]] = {}

    def _onehot_fragment(self, keys: tuple[str, ...]) -> bytes:
        frag = self._onehot.get(keys)
        if frag is None:
            frag = b"".join(b"," + orjson.dumps(k) + b":1.0" for k in keys)
            if len(self._onehot) < 100_000:  # bounded: vocabularies are bounded anyway
                self._onehot[keys] = frag
        return frag

    def _reason_names(self, key: str) -> tuple[bytes, bytes]:
        pair = self._reason_key.get(key)
        if pair is None:
            n = orjson.dumps(key)
            head = b'{"feature":' + n + b',"contribution":'
            pair = (head, b"," + head)
            if len(self._reason_key) < 100_000:
                self._reason_key[key] = pair
        return pair

    def reason_columns(
        self,
        dense_contrib: np.ndarray,
        sparse: Sequence[tuple[str, ...]],
        sparse_weights: dict[str, float],
    ) -> list[bytes]:
        """Per record, the JSON list body of its top reasons (contribution > 0, largest first).

        `dense_contrib` holds each dense feature's signed contribution to the logit; a one-hot
        key present contributes `sparse_weights[key]`. Ties keep the lower column first.
        """
        n, k_dense = dense_contrib.shape
        top = self.top
        if n == 0 or top == 0:
            return [b""] * n
        width = max((len(keys) for keys in sparse), default=0)
        contrib = dense_contrib
        key_cols: list[list[str | None]] = []
        if width and sparse_weights:
            extra = np.zeros((n, width))
            for j in range(width):
                col = [keys[j] if len(keys) > j else None for keys in sparse]
                key_cols.append(col)
                get = sparse_weights.get
                extra[:, j] = [get(key, 0.0) if key is not None else 0.0 for key in col]
            contrib = np.concatenate([dense_contrib, extra], axis=1)
        k = min(top, contrib.shape[1])
        # Top k per row, then ordered by contribution (descending; stable on column).
        idx = np.argpartition(-contrib, k - 1, axis=1)[:, :k]
        vals = np.take_along_axis(contrib, idx, axis=1)
        order = np.lexsort((idx, -vals), axis=1)
        idx = np.take_along_axis(idx, order, axis=1)
        vals = np.take_along_axis(vals, order, axis=1)
        positive = vals > 0.0
        tokens = np.array(_numbers(vals), dtype=object).reshape(n, k)
        first = np.empty((n, contrib.shape[1]), dtype=object)
        nxt = np.empty((n, contrib.shape[1]), dtype=object)
        first[:, :k_dense] = self._reason_first
        nxt[:, :k_dense] = self._reason_next
        for j, col in enumerate(key_cols):
            pairs = [self._reason_names(key) if key is not None else (b"", b"") for key in col]
            first[:, k_dense + j] = [p[0] for p in pairs]
            nxt[:, k_dense + j] = [p[1] for p in pairs]
        empty = np.array(b"", dtype=object)
        parts = np.empty((n, 3 * k), dtype=object)
        for r in range(k):
            names = np.take_along_axis(first if r == 0 else nxt, idx[:, r : r + 1], axis=1)[:, 0]
            keep = positive[:, r]
            parts[:, 3 * r] = np.where(keep, names, empty)
            parts[:, 3 * r + 1] = np.where(keep, tokens[:, r], empty)
            parts[:, 3 * r + 2] = np.where(keep, b"}", empty)
        flat = parts.ravel().tolist()
        stride = 3 * k
        return [b"".join(flat[i : i + stride]) for i in range(0, len(flat), stride)]

    def encode(
        self,
        transaction_ids: Sequence[str],
        card_ids: Sequence[str],
        event_times: Sequence[datetime],
        probs: np.ndarray,
        threshold: float,
        model_version: int,
        scored_at: datetime,
        dense: np.ndarray,
        sparse: Sequence[tuple[str, ...]],
        reasons: Sequence[bytes] | None = None,
        challenger_scores: dict[str, np.ndarray] | None = None,
        entities: Sequence[Sequence[str | None]] | None = None,
    ) -> list[bytes]:
        """The batch's Score records as JSON, in input order. `entities`: the merchant ids,
        categories and countries (three columns; None: all null)."""
        n = len(transaction_ids)
        if n == 0:
            return []
        k = dense.shape[1]
        shadow = list(challenger_scores.items()) if challenger_scores else []
        # Per record: 9 head pieces, 2 per dense feature, the one-hot fragment, 2 for the
        # reasons, 2 per challenger, the tail.
        stride = 9 + 2 * k + 1 + 2 + 2 * len(shadow) + 1
        parts: list[bytes] = [b""] * (n * stride)
        parts[0::stride] = [b'{"transaction_id":"'] * n
        parts[1::stride] = _strings(transaction_ids)
        parts[2::stride] = [b'","card_id":"'] * n
        parts[3::stride] = _strings(card_ids)
        columns = entities or ([None] * n, [None] * n, [None] * n)
        dumps = orjson.dumps
        parts[4::stride] = [
            b'","merchant_id":' + dumps(m) + b',"merchant_category":' + dumps(c)
            + b',"country":' + dumps(k) + b',"score":'
            for m, c, k in zip(*columns, strict=True)
        ]  # fmt: skip
        parts[5::stride] = _numbers(probs)
        parts[6::stride] = [b',"flagged":'] * n
        after_flag = (
            b',"threshold":'
            + orjson.dumps(float(threshold))
            + b',"model_version":'
            + orjson.dumps(int(model_version))
            + b',"event_time":"'
        )
        flags = (probs >= threshold).astype(np.intp)
        parts[7::stride] = np.array([b"false" + after_flag, b"true" + after_flag], dtype=object)[
            flags
        ].tolist()
        parts[8::stride] = _datetimes(event_times)
        features_open = b'","scored_at":' + orjson.dumps(scored_at) + b',"features":{'
        pos = 9
        values = _numbers(dense)
        for j in range(k):
            piece = features_open + self._keys[j] if j == 0 else b"," + self._keys[j]
            parts[pos::stride] = [piece] * n
            parts[pos + 1 :: stride] = values[j::k]
            pos += 2
        get = self._onehot.get
        parts[pos::stride] = [get(keys) or self._onehot_fragment(keys) for keys in sparse]
        parts[pos + 1 :: stride] = [b'},"reasons":['] * n
        parts[pos + 2 :: stride] = list(reasons) if reasons is not None else [b""] * n
        pos += 3
        for c, (name, column) in enumerate(shadow):
            lead = b'],"challenger_scores":{' if c == 0 else b","
            parts[pos::stride] = [lead + orjson.dumps(name) + b":"] * n
            parts[pos + 1 :: stride] = _numbers(column)
            pos += 2
        parts[pos::stride] = [b"}}\n" if shadow else b"]}\n"] * n
        return b"".join(parts).split(_SEP)[:n]
