"""replay-labels engine: row parsing (pure) and replay onto a real embedded broker."""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError
from confluent_kafka.admin import AdminClient, NewTopic

import producer.replay as replay
from core.codec import encode
from core.contracts import Label
from infra.broker import EmbeddedBroker
from infra.config import Settings, load_settings
from producer.replay import ReplayError, ReplayReport, count_lines, read_label_rows, replay_labels


@pytest.fixture(autouse=True)
def _isolated_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Settings come only from the test: no FRAUDSTREAM_* environment, no ./params.yaml."""
    for key in list(os.environ):
        if key.startswith("FRAUDSTREAM_") and not key.startswith("FRAUDSTREAM_TEST_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def errors(path: Path) -> list[tuple[int, str]]:
    return [(n, e) for n, label, e in read_label_rows(path) if label is None and e is not None]


def good_ids(path: Path) -> list[tuple[int, str]]:
    return [(n, label.transaction_id) for n, label, _ in read_label_rows(path) if label]


# --- read_label_rows: JSON lines -------------------------------------------------------------

JSONL = "\n".join(
    [
        '{"transaction_id": "t1", "is_fraud": true}',  # 1
        "",  # 2 blank
        "{nope",  # 3 not JSON
        '{"transaction_id": "t2"}',  # 4 missing is_fraud
        '{"transaction_id": "t3", "is_fraud": "maybe"}',  # 5 wrong type
        "   ",  # 6 whitespace only
        "[1, 2]",  # 7 not an object
        '{"transaction_id": "t4", "is_fraud": false,'
        ' "labeled_at": "2024-05-01T12:00:00Z", "source": "chargeback"}',  # 8
        '{"transaction_id": "t5", "is_fraud": true, "labeled_at": "2024-05-01T12:00:00"}',  # 9
        '{"is_fraud": true}',  # 10 missing transaction_id
        '{"transaction_id": "t6", "is_fraud": false}',  # 11, no trailing newline
    ]
)


def test_jsonl_rows_good_and_bad_with_exact_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "labels.jsonl", JSONL)
    rows = list(read_label_rows(path))

    assert [n for n, _, _ in rows] == [1, 3, 4, 5, 7, 8, 9, 10, 11]  # blank lines 2, 6 skipped
    for _, label, error in rows:
        assert (label is None) != (error is None)
    assert good_ids(path) == [(1, "t1"), (8, "t4"), (11, "t6")]
    assert errors(path) == [
        (3, "line 3: not_json: Invalid JSON: key must be a string at line 1 column 2"),
        (4, "line 4: is_fraud: Field required"),
        (5, "line 5: is_fraud: Input should be a valid boolean"),
        (7, "line 7: not_object: JSON value is not an object"),
        (9, "line 9: labeled_at: Input should have timezone info"),
        (10, "line 10: transaction_id: Field required"),
    ]
    t4 = next(label for n, label, _ in rows if n == 8)
    assert t4 is not None and t4.source == "chargeback" and not t4.is_fraud
    assert t4.labeled_at is not None and t4.labeled_at.utcoffset() is not None


@pytest.mark.parametrize("suffix", [".jsonl", ".ndjson", ".json", ".JSONL"])
def test_json_line_suffixes(tmp_path: Path, suffix: str) -> None:
    path = write(tmp_path, f"labels{suffix}", '\n{"transaction_id": "a", "is_fraud": false}\n')
    assert good_ids(path) == [(2, "a")]


def test_jsonl_invalid_utf8_is_a_row_error(tmp_path: Path) -> None:
    path = tmp_path / "labels.jsonl"
    path.write_bytes(b'{"transaction_id": "a", "is_fraud": true}\n\xff\xfe\n')
    rows = list(read_label_rows(path))
    assert [(n, e is None) for n, _, e in rows] == [(1, True), (2, False)]
    assert rows[1][2] is not None and rows[1][2].startswith("line 2: not_json: ")


# --- read_label_rows: CSV ---------------------------------------------------------------------

CSV = (
    "transaction_id,is_fraud,labeled_at,source\n"  # 1
    "c1,true,,\n"  # 2
    "c2,FALSE,2024-05-01T12:00:00+02:00,manual\n"  # 3
    "\n"  # 4 blank
    "c3,maybe,,\n"  # 5 bad boolean
    ",yes,,\n"  # 6 missing transaction_id
    "c4,,,\n"  # 7 missing is_fraud
    "c5,1,2024-05-01,\n"  # 8 date without a zone
    'c6,No,,"two\nlines"\n'  # 9-10 quoted field spanning lines
    "c7,0\n"  # 11 short row
    "c8,Yes,,\n"  # 12
    "c9,oui,,\n"  # 13 not one of the accepted spellings
)


BAD_BOOL = "is_fraud: Input should be a valid boolean (true/false/yes/no/1/0), got"


def test_csv_rows_good_and_bad_with_exact_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, "labels.csv", CSV)

    assert good_ids(path) == [(2, "c1"), (3, "c2"), (9, "c6"), (12, "c8")]
    assert errors(path) == [
        (5, f"line 5: {BAD_BOOL} 'maybe'"),
        (6, "line 6: transaction_id: Field required"),
        (7, "line 7: is_fraud: Field required"),
        (8, "line 8: labeled_at: Input should have timezone info"),
        (11, "line 11: has 2 fields, header has 4"),
        (13, f"line 13: {BAD_BOOL} 'oui'"),
    ]
    labels = {label.transaction_id: label for _, label, _ in read_label_rows(path) if label}
    assert labels["c1"] == Label(transaction_id="c1", is_fraud=True)
    assert labels["c2"].source == "manual" and labels["c2"].labeled_at is not None
    assert labels["c6"] == Label(transaction_id="c6", is_fraud=False, source="two\nlines")
    assert labels["c8"].is_fraud is True


@pytest.mark.parametrize(
    ("cell", "expected"),
    [("true", True), ("TRUE", True), ("1", True), ("yes", True), (" Yes ", True)]
    + [("false", False), ("False", False), ("0", False), ("no", False), ("NO", False)],
)
def test_csv_boolean_spellings(tmp_path: Path, cell: str, expected: bool) -> None:
    path = write(tmp_path, "b.csv", f"transaction_id,is_fraud\nx,{cell}\n")
    [(line, label, error)] = list(read_label_rows(path))
    assert (line, error) == (2, None)
    assert label == Label(transaction_id="x", is_fraud=expected)


def test_csv_header_is_case_insensitive_and_bom_and_extra_columns_ok(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "\ufeffnotes, Is_Fraud ,TRANSACTION_ID\nhello,no,z1\n")
    assert [(n, lab) for n, lab, _ in read_label_rows(path)] == [
        (2, Label(transaction_id="z1", is_fraud=False))
    ]


def test_csv_invalid_utf8_row_is_blamed_on_its_own_line(tmp_path: Path) -> None:
    path = tmp_path / "labels.csv"
    path.write_bytes(b"transaction_id,is_fraud\nok1,true\nbad\xff,true\nok2,no\n")
    assert good_ids(path) == [(2, "ok1"), (4, "ok2")]
    assert errors(path) == [(3, "line 3: not_utf8: row is not valid UTF-8")]


def test_csv_header_missing_column_fails_up_front(tmp_path: Path) -> None:
    path = write(tmp_path, "h.csv", "transaction_id,fraud\nx,true\n")
    with pytest.raises(ReplayError, match=r"CSV header lacks is_fraud"):
        read_label_rows(path)  # eager: no iteration needed


def test_empty_files_yield_nothing(tmp_path: Path) -> None:
    assert list(read_label_rows(write(tmp_path, "e.csv", ""))) == []
    assert list(read_label_rows(write(tmp_path, "e.jsonl", "\n\n"))) == []


def test_missing_file_and_unknown_suffix(tmp_path: Path) -> None:
    missing = tmp_path / "nope.csv"
    with pytest.raises(ReplayError, match=r"^label file .*nope\.csv does not exist$"):
        read_label_rows(missing)
    with pytest.raises(ReplayError, match=r"unknown format '\.txt'") as exc:
        read_label_rows(write(tmp_path, "labels.txt", "x\n"))
    assert "\n" not in str(exc.value)


def test_count_lines(tmp_path: Path) -> None:
    assert count_lines(write(tmp_path, "a.jsonl", "")) == 0
    assert count_lines(write(tmp_path, "b.jsonl", "a\nb\n")) == 2
    assert count_lines(write(tmp_path, "c.jsonl", "a\n\nb")) == 3


def test_report_ok() -> None:
    assert ReplayReport(sent=3, rejected=[]).ok
    assert not ReplayReport(sent=3, rejected=[(2, "line 2: x")]).ok


# --- replay_labels with a stand-in producer (no broker) --------------------------------------


class FakeProducer:
    """Acknowledges (or fails) each message on the next poll(); poll(t) really waits t."""

    def __init__(self, fail_ids: frozenset[str] = frozenset(), queue_limit: int = 10**9) -> None:
        self.fail_ids = fail_ids
        self.queue_limit = queue_limit
        self.pending: list[tuple[bytes, Any]] = []
        self.sent: list[tuple[str, bytes, bytes, float]] = []

    def produce(self, topic: str, value: bytes, key: bytes, on_delivery: Any) -> None:
        if len(self.pending) >= self.queue_limit:
            raise BufferError("queue full")
        self.sent.append((topic, key, value, time.monotonic()))
        self.pending.append((key, on_delivery))

    def poll(self, timeout: float = 0) -> int:
        if timeout:
            time.sleep(timeout)
        pending, self.pending = self.pending, []
        for key, cb in pending:
            err = KafkaError(KafkaError._MSG_TIMED_OUT) if key.decode() in self.fail_ids else None
            cb(err, None)
        return len(pending)

    def flush(self, timeout: float = -1) -> int:
        self.poll(0)
        return 0


class FakeFactory:
    """Stands in for infra.kafka.make_producer; `kwargs` configure the next FakeProducer."""

    def __init__(self) -> None:
        self.kwargs: dict[str, Any] = {}
        self.producer: FakeProducer | None = None

    def __call__(self, _settings: Settings, _name: str, **_overrides: Any) -> FakeProducer:
        self.producer = FakeProducer(**self.kwargs)
        return self.producer

    @property
    def sent(self) -> list[tuple[str, bytes, bytes, float]]:
        assert self.producer is not None
        return self.producer.sent


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch) -> FakeFactory:
    factory = FakeFactory()
    monkeypatch.setattr(replay, "make_producer", factory)
    monkeypatch.setattr(replay, "check_reachable", lambda *_a, **_k: None)
    return factory


def jsonl_file(tmp_path: Path, ids: list[str], bad_lines: dict[int, str] | None = None) -> Path:
    lines = [
        f'{{"transaction_id": "{i}", "is_fraud": {str(n % 3 == 0).lower()}}}'
        for n, i in enumerate(ids)
    ]
    for lineno, text in sorted((bad_lines or {}).items()):
        lines.insert(lineno - 1, text)
    return write(tmp_path, "labels.jsonl", "\n".join(lines) + "\n")


def test_replay_sends_good_rows_and_reports_bad(tmp_path: Path, fake: FakeFactory) -> None:
    path = jsonl_file(tmp_path, ["a", "b", "c"], {2: "{oops", 4: '{"transaction_id": "x"}'})
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    report = replay_labels(path, settings, progress=False)

    assert report.sent == 3 and not report.ok
    assert [n for n, _ in report.rejected] == [2, 4]
    sent = fake.sent
    assert [(t, k) for t, k, _, _ in sent] == [("labels", b"a"), ("labels", b"b"), ("labels", b"c")]
    assert sent[0][2] == encode(Label(transaction_id="a", is_fraud=True))


def test_replay_topic_override_and_progress_bar(
    tmp_path: Path, fake: FakeFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    path = jsonl_file(tmp_path, ["a", "b"])
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    report = replay_labels(path, settings, progress=True, topic="other")
    assert report == ReplayReport(sent=2, rejected=[])
    assert {t for t, _, _, _ in fake.sent} == {"other"}
    assert capsys.readouterr().out == ""  # the bar goes to stderr, never stdout


def test_replay_raises_when_a_delivery_fails(tmp_path: Path, fake: FakeFactory) -> None:
    fake.kwargs = {"fail_ids": frozenset({"b"})}
    path = jsonl_file(tmp_path, ["a", "b", "c"])
    settings = load_settings(bootstrap_servers="127.0.0.1:1")
    with pytest.raises(
        ReplayError, match=r"1 of 3 labels were not delivered to labels \(first: line 2"
    ):
        replay_labels(path, settings, progress=False)


def test_replay_retries_when_the_local_queue_is_full(tmp_path: Path, fake: FakeFactory) -> None:
    fake.kwargs = {"queue_limit": 1}
    ids = [f"id{i}" for i in range(5)]
    report = replay_labels(
        jsonl_file(tmp_path, ids), load_settings(bootstrap_servers="x:1"), progress=False
    )
    assert report.sent == 5
    assert [k for _, k, _, _ in fake.sent] == [i.encode() for i in ids]


def test_replay_paces_steadily(tmp_path: Path, fake: FakeFactory) -> None:
    path = jsonl_file(tmp_path, [f"id{i}" for i in range(21)])
    start = time.monotonic()
    replay_labels(path, load_settings(bootstrap_servers="x:1"), rate=50.0, progress=False)
    times = [t - start for _, _, _, t in fake.sent]
    # Message n is not sent before its slot at n/rate: no bursts, and 21 labels take >= 0.4 s.
    for n, t in enumerate(times):
        assert t >= n / 50.0 - 0.005
    assert times[-1] >= 0.4 - 0.005


@pytest.mark.parametrize("rate", [0, -1.0, float("nan"), float("inf")])
def test_replay_rejects_bad_rate(tmp_path: Path, rate: float) -> None:
    path = jsonl_file(tmp_path, ["a"])
    with pytest.raises(ReplayError, match="rate must be a positive number"):
        replay_labels(path, load_settings(bootstrap_servers="x:1"), rate=rate, progress=False)


def test_replay_bad_file_fails_before_kafka(tmp_path: Path) -> None:
    settings = load_settings(bootstrap_servers="127.0.0.1:1")  # nothing listens there
    with pytest.raises(ReplayError, match="does not exist"):
        replay_labels(tmp_path / "missing.jsonl", settings, progress=False)
    with pytest.raises(ReplayError, match="CSV header lacks"):
        replay_labels(write(tmp_path, "h.csv", "id,is_fraud\n"), settings, progress=False)


# --- integration: real embedded broker --------------------------------------------------------


@pytest.fixture(scope="module")
def broker() -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker() as b:
        yield b


def labels_settings(broker: EmbeddedBroker) -> Settings:
    """Settings pointing at the broker with a fresh, pre-created 2-partition labels topic."""
    name = f"labels-{uuid.uuid4().hex[:12]}"
    settings = load_settings(bootstrap_servers=broker.bootstrap)
    settings = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"labels": name})}
    )
    admin = AdminClient({"bootstrap.servers": broker.bootstrap})
    for fut in admin.create_topics([NewTopic(name, 2, 1)], operation_timeout=15).values():
        fut.result(timeout=30)
    return settings


def consume(settings: Settings, topic: str, expected: int, deadline_s: float = 60.0) -> list[Any]:
    consumer = Consumer(
        {
            "bootstrap.servers": settings.bootstrap,
            "group.id": f"test-replay-{uuid.uuid4().hex}",
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6000,
        }
    )
    consumer.subscribe([topic])
    got: list[Any] = []
    try:
        deadline = time.monotonic() + deadline_s
        while len(got) < expected and time.monotonic() < deadline:
            got.extend(m for m in consumer.consume(100, timeout=0.5) if not m.error())
        # A little longer, so a duplicate would show up as an extra message.
        drain_until = time.monotonic() + 1.0
        while time.monotonic() < drain_until:
            got.extend(m for m in consumer.consume(100, timeout=0.2) if not m.error())
    finally:
        consumer.close()
    return got


@pytest.mark.integration
@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_replay_onto_real_broker(tmp_path: Path, broker: EmbeddedBroker, fmt: str) -> None:
    settings = labels_settings(broker)
    good = [
        Label(transaction_id=f"tx-{i:03d}", is_fraud=i % 4 == 0, source="manual" if i % 2 else None)
        for i in range(30)
    ]
    if fmt == "jsonl":
        lines = [encode(label).decode() for label in good]
        bad = {3: "{not json", 10: '{"transaction_id": "nofraud"}', 17: '{"is_fraud": true}'}
    else:
        lines = [
            f"{lab.transaction_id},{'yes' if lab.is_fraud else 'no'},,{lab.source or ''}"
            for lab in good
        ]
        bad = {4: "tx-bad-1,maybe,,", 11: ",true,,", 18: "tx-bad-2,1,2024-01-01T00:00:00,"}
    offset = 1 if fmt == "csv" else 0  # line numbers below count the CSV header as line 1
    for lineno, text in sorted(bad.items()):
        lines.insert(lineno - 1 - offset, text)
    if fmt == "csv":
        lines.insert(0, "transaction_id,is_fraud,labeled_at,source")
    path = write(tmp_path, f"labels.{fmt}", "\n".join(lines) + "\n")

    report = replay_labels(path, settings, progress=True)

    assert report.sent == len(good)
    assert [n for n, _ in report.rejected] == sorted(bad)
    assert all(msg.startswith(f"line {n}: ") for n, msg in report.rejected)

    messages = consume(settings, settings.topics.labels, expected=len(good))
    keys = [m.key().decode() for m in messages]
    assert sorted(keys) == sorted(lab.transaction_id for lab in good)  # each exactly once
    by_key = {m.key().decode(): m.value() for m in messages}
    for lab in good:
        assert by_key[lab.transaction_id] == encode(lab)
    assert {m.partition() for m in messages} <= {0, 1}


@pytest.mark.integration
def test_replay_rate_limit_on_real_broker(tmp_path: Path, broker: EmbeddedBroker) -> None:
    settings = labels_settings(broker)
    path = write(
        tmp_path,
        "labels.jsonl",
        "".join(f'{{"transaction_id": "r{i}", "is_fraud": false}}\n' for i in range(50)),
    )
    start = time.monotonic()
    report = replay_labels(path, settings, rate=100.0, progress=False)
    elapsed = time.monotonic() - start
    assert report == ReplayReport(sent=50, rejected=[])
    assert elapsed >= 0.4  # 50 labels at 100/s: the last one is due 0.49 s after the first
