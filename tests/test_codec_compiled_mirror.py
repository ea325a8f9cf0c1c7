"""The compiled record parser (`core.codec_compiled`) against msgspec: a row is ok only when
msgspec accepts the record, and then every column equals msgspec's decode."""

from __future__ import annotations

import struct
from datetime import UTC, date, datetime, timedelta, timezone

import msgspec
import numpy as np
import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.codec import MAX_RECORD_BYTES
from core.codec_compiled import (
    CARD,
    CATEGORY,
    CHANNEL,
    COUNTRY,
    CURRENCY,
    MERCHANT,
    N_STRINGS,
    TIME_WIDTH,
    TX_ID,
    WireColumns,
    parse_into,
    parse_transactions,
    warm_up,
)
from core.codec_msgspec import TRANSACTION_DECODER, FastTransaction
from producer.generator import TransactionGenerator
from tests.strategies import json_bytes, json_values, near_valid_transactions

COLUMNS = {
    TX_ID: "transaction_id",
    CARD: "card_id",
    CATEGORY: "merchant_category",
    CURRENCY: "currency",
    MERCHANT: "merchant_id",
    COUNTRY: "country",
    CHANNEL: "channel",
}
REQUIRED = ("transaction_id", "card_id", "amount", "merchant_category", "timestamp")
OPTIONAL = ("currency", "merchant_id", "country", "channel")


def _decode(raw: bytes) -> FastTransaction | None:
    try:
        return TRANSACTION_DECODER.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None


def _parse(raws: list[bytes], max_record_bytes: int = MAX_RECORD_BYTES) -> WireColumns:
    """Parse the records concatenated, and check every ok row against msgspec."""
    joined = b"".join(raws)
    buf = np.frombuffer(joined, dtype=np.uint8)
    ends = np.cumsum([len(r) for r in raws], dtype=np.int64)
    cols = parse_transactions(buf, ends, max_record_bytes)
    assert cols.ok.shape == (len(raws),)
    assert cols.spans.shape == (len(raws), N_STRINGS, 2)
    assert cols.time_text.shape == (len(raws), TIME_WIDTH)
    for i, raw in enumerate(raws):
        if not cols.ok[i]:
            continue
        assert 0 < len(raw) <= max_record_bytes
        tx = _decode(raw)
        assert tx is not None, raw
        assert struct.pack("<d", cols.amount[i]) == struct.pack("<d", tx.amount), raw
        assert cols.ts[i] == tx.timestamp.timestamp(), raw
        text = bytes(cols.time_text[i, : cols.time_len[i]])
        assert text == orjson.dumps(tx.timestamp, option=orjson.OPT_UTC_Z)[1:-1], raw
        for column, name in COLUMNS.items():
            start, end = (int(x) for x in cols.spans[i, column])
            value = getattr(tx, name)
            if value is None:
                assert (start, end) == (-1, -1), (raw, name)
            else:
                assert joined[start:end].decode() == value, (raw, name)
    return cols


def producer_records(n: int, seed: int = 7) -> list[bytes]:
    """What the producer writes (as `fraudstream.benchmark.common.records`)."""
    generator = TransactionGenerator(seed=seed, fraud_rate=0.01)
    t0 = datetime.now(UTC)
    return [orjson.dumps(generator.next(t0 + timedelta(milliseconds=i))[0]) for i in range(n)]


def _record(**fields: object) -> bytes:
    base: dict[str, object] = {
        "transaction_id": "t1",
        "card_id": "c1",
        "amount": 12.5,
        "merchant_category": "grocery",
        "timestamp": "2026-11-22T12:00:00.123456Z",
    }
    base.update(fields)
    return orjson.dumps({k: v for k, v in base.items() if v is not ...})


def _with(text: str, **fields: str) -> bytes:
    """A record with raw JSON fragments substituted for some fields' values."""
    parts = {
        "transaction_id": '"t1"',
        "card_id": '"c1"',
        "amount": "12.5",
        "merchant_category": '"grocery"',
        "timestamp": '"2026-11-22T12:00:00Z"',
    }
    parts.update(fields)
    return ("{" + ",".join(f'"{k}":{v}' for k, v in parts.items()) + "}" + text).encode()


# -- what the producer writes -------------------------------------------------------------------


def test_warm_up_runs() -> None:
    """Warm-up leaves the parser compiled for exactly what a batch of records needs: the
    scorer's first batch compiles nothing."""
    warm_up()
    compiled = list(parse_into.signatures)
    assert len(compiled) == 1
    cols = _parse(producer_records(200))
    assert cols.ok.all()
    assert parse_into.signatures == compiled


def test_producer_records_are_all_ok_and_equal() -> None:
    raws = producer_records(5000)
    cols = _parse(raws)
    assert cols.ok.all()


def test_producer_records_with_nulls_absent_fields_and_integer_amounts() -> None:
    raws = []
    for i, raw in enumerate(producer_records(300, seed=11)):
        record = orjson.loads(raw)
        for j, name in enumerate(OPTIONAL):
            mode = (i >> (2 * j)) % 3
            if mode == 1:
                record[name] = None
            elif mode == 2:
                del record[name]
        if i % 2:
            record["amount"] = int(record["amount"])
        items = list(record.items())
        items = items[i % len(items) :] + items[: i % len(items)]  # another key order
        raws.append(orjson.dumps(dict(items), option=orjson.OPT_INDENT_2 if i % 3 else 0))
    cols = _parse(raws)
    assert cols.ok.all()


def test_spans_point_into_the_batch_buffer() -> None:
    raws = [_record(currency="EUR"), _record(transaction_id="x" * 256, currency=None)]
    cols = _parse(raws)
    assert cols.ok.all()
    first = len(raws[0])
    assert cols.spans[1, TX_ID, 0] > first
    assert cols.spans[1, TX_ID, 1] - cols.spans[1, TX_ID, 0] == 256
    assert tuple(cols.spans[1, CURRENCY]) == (-1, -1)
    assert tuple(cols.spans[0, MERCHANT]) == (-1, -1)


# -- rarer valid forms fall back, invalid records are never ok -------------------------------------

FALLBACK = [
    _with("", extra="1"),  # unknown key: msgspec ignores it
    b'{"transaction_id":"a","transaction_id":"b","card_id":"c","amount":1,'
    b'"merchant_category":"m","timestamp":"2026-11-22T12:00:00Z"}',  # duplicate: last wins
    _with("", transaction_id='"\\u0041"'),
    _with("", transaction_id='"a\\"b"'),
    _with("", transaction_id='"a\\\\b"'),
    _record(transaction_id="é"),
    _record(transaction_id="\x7f"),
    b'{"transaction_\\u0069d":"t","card_id":"c","amount":1,"merchant_category":"m",'
    b'"timestamp":"2026-11-22T12:00:00Z"}',
    _with("", amount="1e5"),
    _with("", amount="1E2"),
    _with("", amount="0.1e1"),
    _with("", amount="-0"),
    _with("", amount="1.0000000000000002"),
    _with("", amount="1.000000000000001"),  # 16 digits: too many for the exact division
    _with("", amount="0." + "0" * 22 + "1"),
    _with("", amount="1e9"),
    _with("", timestamp='"2026-11-22T12:00:00z"'),
    _with("", timestamp='"2026-11-22t12:00:00Z"'),
    _with("", timestamp='"2026-11-22 12:00:00Z"'),
    _with("", timestamp='"2026-11-22T12:00:00.1234567Z"'),
    _with("", timestamp='"2026-11-22T12:00:00.9999999Z"'),  # rounds up to the next second
    _with("", timestamp='"2026-11-22T12:00:00+0200"'),
    _with("", timestamp='"1969-12-31T23:59:59Z"'),
    _with("", timestamp='"2200-01-01T00:00:00Z"'),
    _with("", timestamp='"0001-01-01T00:00:00Z"'),
    _with("", timestamp='"9999-12-31T23:59:59-01:00"'),
]


@pytest.mark.parametrize("raw", FALLBACK)
def test_rarer_valid_forms_fall_back(raw: bytes) -> None:
    assert _decode(raw) is not None, raw
    assert not _parse([raw]).ok[0]


INVALID = [
    b"",
    b"null",
    b"[]",
    b"{}",
    b"{",
    b'"x"',
    _with(" x"),
    _with("}"),
    _with("\x0b"),
    _with("\x00"),
    _with(",{}"),
    _with("", currency='"EUR",'),
    _record(transaction_id=...),
    _record(timestamp=...),
    _record(amount=...),
    _record(card_id=None),
    _record(timestamp=None),
    _record(amount=None),
    _record(transaction_id=""),
    _record(merchant_category="m" * 257),
    _record(currency="c" * 257),
    _record(card_id=5),
    _record(currency=5),
    _record(currency=True),
    _record(currency=["EUR"]),
    _record(transaction_id={"a": 1}),
    _record(amount="12.5"),
    _record(amount=True),
    _record(amount=-1),
    _with("", amount="1000000000.0000001"),
    _with("", amount="1000000001"),
    _with("", amount="123456789012345678"),
    _with("", amount="00.5"),
    _with("", amount="01"),
    _with("", amount="1."),
    _with("", amount=".5"),
    _with("", amount="+1"),
    _with("", amount="1.5.3"),
    _with("", amount="NaN"),
    _with("", amount="Infinity"),
    _with("", currency="nul"),
    _with("", currency="nulll"),
    _with("", currency="None"),
    _with("", timestamp='"2023-02-29T00:00:00Z"'),
    _with("", timestamp='"2026-04-31T00:00:00Z"'),
    _with("", timestamp='"2100-02-29T00:00:00Z"'),
    _with("", timestamp='"2026-13-01T00:00:00Z"'),
    _with("", timestamp='"2026-00-01T00:00:00Z"'),
    _with("", timestamp='"2026-01-00T00:00:00Z"'),
    _with("", timestamp='"2026-11-22T24:00:00Z"'),
    _with("", timestamp='"2026-11-22T12:60:00Z"'),
    _with("", timestamp='"2026-11-22T23:59:60Z"'),
    _with("", timestamp='"2026-11-22T12:00:00+24:00"'),
    _with("", timestamp='"2026-11-22T12:00:00+23:60"'),
    _with("", timestamp='"2026-11-22T12:00:00+00"'),
    _with("", timestamp='"2026-11-22T12:00:00"'),
    _with("", timestamp='"2026-11-22T12:00Z"'),
    _with("", timestamp='"2026-11-22T12:00:00.Z"'),
    _with("", timestamp='"2026-11-22T12:00:00.+02:00"'),
    _with("", timestamp='"2026-11-22T12:00:00Z "'),
    _with("", timestamp='"2026-1-22T12:00:00Z"'),
    _with("", timestamp='"2026-11-22"'),
    _with("", timestamp="1795348800"),
    _record(transaction_id="Q").replace(b'"Q"', b'"\xff"'),  # invalid UTF-8
    _record(currency="aQb").replace(b"aQb", b"a\x01b"),  # raw control character
]


@pytest.mark.parametrize("raw", INVALID)
def test_invalid_records_are_never_ok(raw: bytes) -> None:
    assert _decode(raw) is None, raw
    assert not _parse([raw]).ok[0]


def test_record_length_limit() -> None:
    raw = _record()
    assert _parse([raw], max_record_bytes=len(raw)).ok[0]
    assert not _parse([raw], max_record_bytes=len(raw) - 1).ok[0]


def test_bad_offsets_are_not_ok_and_do_not_crash() -> None:
    raw = _record()
    buf = np.frombuffer(raw * 2, dtype=np.uint8)
    n = len(raw)
    ends = np.array([n, n, 2 * n + 5, n, 2 * n], dtype=np.int64)
    cols = parse_transactions(buf, ends, MAX_RECORD_BYTES)
    # Empty, past the buffer, going backwards; then the second copy, buf[n:2n], is fine.
    assert cols.ok.tolist() == [True, False, False, False, True]
    assert parse_transactions(buf, np.zeros(0, dtype=np.int64), MAX_RECORD_BYTES).ok.size == 0


def test_every_month_boundary_and_day_count() -> None:
    """The first and last day of every month of the accepted years, and the day after the last
    (never ok: msgspec rejects it), in one batch: a wrong day count or leap rule shows."""
    raws, past_end = [], []
    for year in range(1970, 2200):
        for month in range(1, 13):
            nxt = date(year + month // 12, month % 12 + 1, 1)
            last = (nxt - timedelta(days=1)).day
            for day in (1, last):
                stamp = f"{year:04d}-{month:02d}-{day:02d}T23:59:59.000001-01:30"
                raws.append(_with("", timestamp=f'"{stamp}"'))
            past_end.append(
                _with("", timestamp=f'"{year:04d}-{month:02d}-{last + 1:02d}T00:00:00Z"')
            )
    assert _parse(raws).ok.all()
    assert not _parse(past_end).ok.any()
    assert all(_decode(raw) is None for raw in past_end)


@pytest.mark.parametrize(
    ("stamp", "text"),
    [
        ("2026-11-22T12:00:00Z", "2026-11-22T12:00:00Z"),
        ("2026-11-22T12:00:00.000000Z", "2026-11-22T12:00:00Z"),
        ("2026-11-22T12:00:00.000+02:00", "2026-11-22T12:00:00+02:00"),
        ("2026-11-22T12:00:00.1Z", "2026-11-22T12:00:00.100000Z"),
        ("2026-11-22T12:00:00.000001Z", "2026-11-22T12:00:00.000001Z"),
        ("2026-11-22T12:00:00+00:00", "2026-11-22T12:00:00Z"),
        ("2026-11-22T12:00:00-00:00", "2026-11-22T12:00:00Z"),
        ("2026-11-22T12:00:00.5-05:30", "2026-11-22T12:00:00.500000-05:30"),
        ("2026-11-22T12:00:00.123456+23:59", "2026-11-22T12:00:00.123456+23:59"),
        ("1970-01-01T00:00:00+00:01", "1970-01-01T00:00:00+00:01"),
        ("2199-12-31T23:59:59.999999-23:59", "2199-12-31T23:59:59.999999-23:59"),
    ],
)
def test_time_text_is_what_orjson_writes(stamp: str, text: str) -> None:
    cols = _parse([_with("", timestamp=f'"{stamp}"')])  # also checked against orjson there
    assert cols.ok[0]
    assert bytes(cols.time_text[0, : cols.time_len[0]]) == text.encode()


@pytest.mark.parametrize(
    "amount", ["0", "0.0", "0.000", "1", "144.72", "0.1", "1000000000", "1000000000.0", "1.10"]
)
def test_amount_forms_taken(amount: str) -> None:
    raw = _with("", amount=amount)
    cols = _parse([raw])
    assert cols.ok[0]
    assert struct.pack("<d", cols.amount[0]) == struct.pack("<d", float(amount))


# -- generated records ----------------------------------------------------------------------------

VALID_WS = st.sampled_from(["", "", "", " ", "\n", "\t", "\r\n  "])
ANY_WS = VALID_WS | st.sampled_from(["\x0b", "\x0c", "\xa0", "\u3000", "\x00"])
# Printable ASCII that orjson writes unescaped (no quote, no backslash).
ascii_text = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x7E, exclude_characters='"\\'), max_size=12
)
# Offsets of whole minutes, as RFC 3339 writes them.
zones = st.integers(-1439, 1439).map(lambda m: timezone(timedelta(minutes=m)))
instants = st.datetimes(
    min_value=datetime(1969, 12, 30), max_value=datetime(2201, 1, 2), timezones=zones
)


def _stamp_forms(d: datetime, form: int) -> str:
    text = d.isoformat()
    if form == 1:
        text = text.replace("+00:00", "Z")
    elif form == 2 and d.microsecond:  # fewer fraction digits
        text = text[:20] + text[20:26].rstrip("0") + text[26:]
    elif form == 3:
        text = text.replace("T", " ")
    elif form == 4:
        text = d.replace(tzinfo=None, microsecond=0).isoformat() + f".{d.microsecond:06d}7Z"
    elif form == 5:
        text = text.replace("+00:00", "-00:00")
    return text


subset_instants = st.datetimes(
    min_value=datetime(1970, 1, 1), max_value=datetime(2199, 12, 31, 23, 59, 59), timezones=zones
)
valid_stamps = st.builds(_stamp_forms, subset_instants, st.integers(0, 2) | st.just(5))
stamps = st.builds(_stamp_forms, instants, st.integers(0, 5)) | st.text(max_size=30)
clean_amounts = (
    st.integers(0, 10**9).map(str)
    | st.decimals(0, 10**9, places=2).map(str).filter(lambda s: s.isdigit() or "." in s)
    | st.floats(0, 1e9).map(repr).filter(lambda s: "e" not in s and len(s) <= 16)
)
odd_amounts = st.sampled_from(
    [
        "1e5",
        "0.1e1",
        "-0",
        "-0.0",
        "1.0000000000000002",
        "00.5",
        "123456789012345678",
        "1e9",
        "1000000000.0000001",
        "0." + "0" * 30 + "1",
        "9" * 15,
        "9" * 16,
        "1.",
        ".5",
        "true",
        "null",
        '"1"',
        "[]",
        "-",
        "0x10",
    ]
) | st.floats().map(repr)


def _quoted(s: str) -> str:
    return orjson.dumps(s).decode()


clean_strings = ascii_text.filter(bool).map(_quoted) | st.sampled_from(['"' + "s" * 256 + '"'])
odd_strings = (
    st.text(max_size=8).map(_quoted)
    | st.sampled_from(['""', '"' + "s" * 257 + '"', '"\\u0041"', '"\\n"', "1", "true", "{}"])
    | st.just("null")
)


def _clean_fields(draw: st.DrawFn) -> list[tuple[str, str]]:
    """(quoted key, JSON value) pairs of a record in the fast subset, in a random order."""
    fields = {
        "transaction_id": draw(clean_strings),
        "card_id": draw(clean_strings),
        "amount": draw(clean_amounts),
        "merchant_category": draw(clean_strings),
        "timestamp": _quoted(draw(valid_stamps)),
    }
    for name in OPTIONAL:
        choice = draw(st.integers(0, 3))
        if choice:
            fields[name] = ["null", '""', draw(clean_strings)][choice - 1]
    return draw(st.permutations([(_quoted(k), v) for k, v in fields.items()]))


def _render(items: list[tuple[str, str]], ws: list[str]) -> bytes:
    """The object with ws[4i:4i+4] around the tokens of item i, ws[-2:] before and after."""
    body = ",".join(
        f"{ws[4 * i]}{k}{ws[4 * i + 1]}:{ws[4 * i + 2]}{v}{ws[4 * i + 3]}"
        for i, (k, v) in enumerate(items)
    )
    return f"{ws[-2]}{{{body}}}{ws[-1]}".encode()


@st.composite
def clean_records(draw: st.DrawFn) -> bytes:
    """Records in the fast subset: every one must be ok."""
    items = _clean_fields(draw)
    return _render(items, [draw(VALID_WS) for _ in range(4 * len(items) + 2)])


@st.composite
def hostile_records(draw: st.DrawFn) -> bytes:
    """A record of the subset with one to three changes, so that it is often just inside or
    just outside what the fast path, or msgspec, takes."""
    items = _clean_fields(draw)
    ws = [draw(VALID_WS) for _ in range(4 * len(items) + 2)]
    mutation: tuple[int, int] | None = None
    for _ in range(draw(st.integers(1, 3))):
        change = draw(
            st.sampled_from(
                ["value", "value", "stamp", "amount", "drop", "dup", "unknown", "escaped_key"]
                + ["ws", "byte"]
            )
        )
        at = draw(st.integers(0, len(items) - 1)) if items else 0
        if change == "value" and items:
            items[at] = (items[at][0], draw(odd_strings | clean_strings | odd_amounts))
        elif change == "stamp":
            items.append(('"timestamp"', _quoted(draw(stamps))))
            items = [kv for kv in items[:-1] if kv[0] != '"timestamp"'] + items[-1:]
        elif change == "amount":
            items = [kv for kv in items if kv[0] != '"amount"']
            items.append(('"amount"', draw(odd_amounts | clean_amounts)))
        elif change == "drop" and items:
            del items[at]
        elif change == "dup" and items:
            items.append((items[at][0], draw(clean_strings | odd_strings | clean_amounts)))
        elif change == "unknown":
            items.insert(at, ('"extra"', draw(clean_strings | st.just("[1, {}]"))))
        elif change == "escaped_key" and items:
            items[at] = ('"\\u00' + f"{ord(items[at][0][1]):02x}" + items[at][0][2:], items[at][1])
        elif change == "ws":
            ws[draw(st.integers(0, len(ws) - 1))] = draw(ANY_WS)
        elif change == "byte":
            mutation = (draw(st.integers(0, 10**6)), draw(st.integers(0, 3)))
    body_ws = (ws[:-2] + [""] * 4 * len(items))[: 4 * len(items)]  # items may have changed
    raw = bytearray(_render(items, body_ws + ws[-2:]))
    if mutation is not None and raw:
        at, kind = mutation[0] % len(raw), mutation[1]
        if kind == 0:
            raw[at] = draw(st.integers(0, 255))
        elif kind == 1:
            del raw[at]
        elif kind == 2:
            raw.insert(at, draw(st.sampled_from(b'",:{}[] \\0.-e\x00\xff')))
        else:
            del raw[at:]
    return bytes(raw)


near_valid = near_valid_transactions(stamps)


any_record = (
    clean_records()
    | hostile_records()
    | near_valid.map(json_bytes)
    | json_values.map(json_bytes)
    | st.binary(max_size=100)
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(clean_records(), min_size=1, max_size=8))
def test_records_in_the_subset_are_ok_and_equal(raws: list[bytes]) -> None:
    assert _parse(raws).ok.all(), raws


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(hostile_records(), min_size=1, max_size=8))
def test_near_the_boundary_ok_only_when_msgspec_agrees(raws: list[bytes]) -> None:
    _parse(raws)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(any_record, min_size=1, max_size=6),
    st.sampled_from([MAX_RECORD_BYTES, MAX_RECORD_BYTES, 150]),
)
def test_ok_only_when_msgspec_agrees(raws: list[bytes], max_record_bytes: int) -> None:
    _parse(raws, max_record_bytes)
