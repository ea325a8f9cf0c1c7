"""Replay ground-truth labels from a CSV or JSON-lines file onto the labels topic.

The engine behind `fraudstream replay-labels FILE`: every row is validated with the same
codec the trainer uses, bad rows are skipped and reported by line number, good ones are
produced keyed by transaction_id, optionally paced to a steady rate.
"""

from __future__ import annotations

import _csv
import csv
import logging
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from confluent_kafka import KafkaError, Message
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from core.codec import DecodeError, decode_label, dumps, encode
from core.contracts import Label
from core.errors import FraudstreamError
from infra.config import Settings
from infra.kafka import check_reachable, make_producer, produce_waiting

log = logging.getLogger(__name__)

JSON_SUFFIXES = frozenset({".jsonl", ".ndjson", ".json"})
CSV_SUFFIXES = frozenset({".csv"})
CSV_REQUIRED = ("transaction_id", "is_fraud")
CSV_OPTIONAL = ("labeled_at", "source")
CSV_TRUE = frozenset({"true", "1", "yes"})
CSV_FALSE = frozenset({"false", "0", "no"})

# Longest single wait while pacing: short enough that delivery callbacks keep flowing.
PACE_STEP_S = 0.05

Row = tuple[int, Label | None, str | None]


class ReplayError(FraudstreamError, ValueError):
    """The replay cannot start or did not complete; the message is one line for the CLI."""


@dataclass
class ReplayReport:
    """Outcome of a replay: labels acknowledged by the broker and rows skipped as invalid."""

    sent: int = 0
    rejected: list[tuple[int, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.rejected


def _check_file(path: Path) -> None:
    if not path.exists():
        raise ReplayError(f"label file {path} does not exist")
    if not path.is_file():
        raise ReplayError(f"label file {path} is not a regular file")
    suffix = path.suffix.lower()
    if suffix not in JSON_SUFFIXES | CSV_SUFFIXES:
        known = ", ".join(sorted(JSON_SUFFIXES | CSV_SUFFIXES))
        shown = path.suffix or "(no suffix)"
        raise ReplayError(f"label file {path}: unknown format {shown!r}, use one of {known}")


def _describe(exc: DecodeError) -> str:
    # Validation errors already name the field ("is_fraud: ..."); other codec reasons
    # (not_json, not_object, too_large) keep their stable code so they read like DLQ entries.
    return exc.detail if exc.reason == "invalid" else f"{exc.reason}: {exc.detail}"


def _read_jsonl(path: Path) -> Iterator[Row]:
    # Binary mode: the codec parses bytes, and a bad encoding becomes a per-line error.
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            line = raw.strip()
            if lineno == 1:
                line = line.removeprefix(b"\xef\xbb\xbf").strip()
            if not line:
                continue
            try:
                yield lineno, decode_label(line), None
            except DecodeError as exc:
                yield lineno, None, f"line {lineno}: {_describe(exc)}"


def _csv_bool(cell: str) -> bool | str:
    value = cell.strip().lower()
    if value in CSV_TRUE:
        return True
    if value in CSV_FALSE:
        return False
    return cell


class _Utf8Lines:
    """Decode a binary file line by line for csv, remembering which lines were not UTF-8.

    Decoding per line (not per buffer) lets a bad byte be blamed on its own line.
    """

    def __init__(self, f: BinaryIO) -> None:
        self._f = f
        self._lineno = 0
        self.bad: set[int] = set()

    def __iter__(self) -> Iterator[str]:
        for raw in self._f:
            self._lineno += 1
            if self._lineno == 1:
                raw = raw.removeprefix(b"\xef\xbb\xbf")  # the BOM spreadsheet exports add
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError:
                self.bad.add(self._lineno)
                yield raw.decode("utf-8", errors="replace")


def _read_csv(path: Path) -> Iterator[Row]:
    # The header is read eagerly so a file without the required columns fails before any row.
    f = path.open("rb")
    try:
        lines = _Utf8Lines(f)
        reader = csv.reader(iter(lines))
        header_row = next(reader, None)
        if lines.bad:
            raise ReplayError(f"label file {path}: CSV header is not valid UTF-8")
    except (csv.Error, ReplayError):
        f.close()
        raise
    if header_row is None:
        f.close()
        return iter(())
    header = [h.strip().lower() for h in header_row]
    missing = [c for c in CSV_REQUIRED if c not in header]
    if missing:
        f.close()
        raise ReplayError(
            f"label file {path}: CSV header lacks {', '.join(missing)} "
            f"(need {', '.join(CSV_REQUIRED)}; optional {', '.join(CSV_OPTIONAL)})"
        )
    columns = {name: header.index(name) for name in CSV_REQUIRED + CSV_OPTIONAL if name in header}
    return _csv_rows(f, reader, lines, len(header), columns)


def _csv_rows(
    f: BinaryIO,
    reader: _csv.Reader,
    lines: _Utf8Lines,
    width: int,
    columns: dict[str, int],
) -> Iterator[Row]:
    with f:
        while True:
            # A quoted field may span lines: report the line the record starts on.
            lineno = reader.line_num + 1
            try:
                cells = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                yield lineno, None, f"line {lineno}: not_csv: {exc}"
                return  # the reader cannot resynchronise after a broken record
            end = reader.line_num
            if any(n in lines.bad for n in range(lineno, end + 1)):
                yield lineno, None, f"line {lineno}: not_utf8: row is not valid UTF-8"
                continue
            if not any(c.strip() for c in cells):
                continue
            if len(cells) != width:
                # A short or long row means values may sit under the wrong column.
                yield lineno, None, f"line {lineno}: has {len(cells)} fields, header has {width}"
                continue
            yield _csv_row(lineno, cells, columns)


def _csv_row(lineno: int, cells: list[str], columns: dict[str, int]) -> Row:
    record: dict[str, Any] = {}
    for name, idx in columns.items():
        cell = cells[idx].strip()
        if cell:  # an empty cell means "absent", so required columns report "Field required"
            record[name] = cell
    if "is_fraud" in record:
        flag = _csv_bool(record["is_fraud"])
        if isinstance(flag, str):
            return (
                lineno,
                None,
                f"line {lineno}: is_fraud: Input should be a valid boolean "
                f"(true/false/yes/no/1/0), got {flag!r}",
            )
        record["is_fraud"] = flag
    # Through the codec, so CSV and JSONL rows are judged (and worded) identically.
    try:
        return lineno, decode_label(dumps(record)), None
    except DecodeError as exc:
        return lineno, None, f"line {lineno}: {_describe(exc)}"


def read_label_rows(path: Path) -> Iterator[tuple[int, Label | None, str | None]]:
    """Yield (line_number, label, error) per non-blank data row; exactly one of label/error is set.

    Line numbers are 1-based physical lines (a CSV header is line 1). Raises ReplayError for a
    missing file, an unknown suffix or a CSV header without the required columns.
    """
    path = Path(path)
    _check_file(path)
    if path.suffix.lower() in CSV_SUFFIXES:
        return _read_csv(path)
    return _read_jsonl(path)


def count_lines(path: Path) -> int:
    """Physical lines in the file (a last line without a newline counts), for the progress total."""
    lines = 0
    last = b"\n"
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            lines += chunk.count(b"\n")
            last = chunk[-1:]
    return lines + (last != b"\n")


def _progress(enabled: bool) -> Progress:
    return Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        disable=not enabled,
    )


def replay_labels(
    path: Path,
    settings: Settings,
    rate: float | None = None,
    progress: bool = True,
    topic: str | None = None,
) -> ReplayReport:
    """Produce every valid label in `path` to the labels topic (or `topic`), keyed by id.

    `rate` caps throughput in labels/s. Invalid rows are skipped and listed in the report.
    Raises ReplayError on a bad argument, an unreadable file or any failed delivery, and
    infra.kafka.BrokerUnreachable when no broker answers.
    """
    path = Path(path)
    if rate is not None and not (math.isfinite(rate) and rate > 0):
        raise ReplayError(f"rate must be a positive number of labels/s, got {rate}")
    _check_file(path)
    target = topic or settings.topics.labels
    total = count_lines(path)
    rows = read_label_rows(path)  # a bad CSV header fails here, before touching Kafka
    check_reachable(settings)
    producer = make_producer(settings, "replay-labels")

    report = ReplayReport()
    failures: list[tuple[int, str]] = []

    def delivered(lineno: int) -> Any:
        def callback(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                report.sent += 1
            else:
                failures.append((lineno, err.str()))

        return callback

    produced = 0
    start = time.monotonic()
    with _progress(progress) as bar:
        task = bar.add_task(f"replaying {path.name}", total=total)
        for lineno, label, error in rows:
            if label is None:
                report.rejected.append((lineno, error or f"line {lineno}: invalid"))
            else:
                if rate is not None:
                    _pace(producer, start + produced / rate)
                produce_waiting(
                    producer,
                    target,
                    encode(label),
                    label.transaction_id.encode(),
                    delivered(lineno),
                )
                produced += 1
            producer.poll(0)  # serve delivery callbacks so the local queue keeps draining
            bar.update(task, completed=lineno)
        bar.update(task, completed=total)
        producer.flush()

    if report.rejected:
        log.warning("skipped %d invalid row(s) in %s", len(report.rejected), path)
    if failures:
        lineno, reason = failures[0]
        raise ReplayError(
            f"{len(failures)} of {produced} labels were not delivered to {target} "
            f"(first: line {lineno}: {reason})"
        )
    log.info(
        "replayed %d labels from %s to %s in %.1fs",
        report.sent,
        path,
        target,
        time.monotonic() - start,
    )
    return report


def _pace(producer: Any, due: float) -> None:
    # Wait until this message's slot on a fixed schedule (start + n/rate), so the average
    # rate is exact and there is no drift or burst; poll() doubles as the sleep.
    while (wait := due - time.monotonic()) > 0:
        producer.poll(min(wait, PACE_STEP_S))
