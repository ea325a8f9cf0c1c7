"""`fraudstream evaluate --live`: a generated stream played through real `score` and `train`
processes on a real broker, the served scores graded beside the offline replay.

The command runs as a user runs it, in a subprocess: it starts its own embedded broker (or
uses `FRAUDSTREAM_TEST_BOOTSTRAP_SERVERS` when set) and its own processes.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from core.model_settings import ModelSettings
from evaluation.durations import parse_duration
from evaluation.live_records import stream_records
from evaluation.live_run import child_env
from evaluation.streams import generate_stream
from infra.config import load_settings

COUNT = 20_000


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FRAUDSTREAM_")}
    # Snapshots 4x a second: what the scorer serves then trails the labels by ~500 records.
    env["FRAUDSTREAM_TRAINER__SNAPSHOT_EVERY_S"] = "0.25"
    return env


def _command(*args: str) -> list[str]:
    """`fraudstream evaluate --live ARGS`, on the external test cluster when one is set."""
    cmd = [sys.executable, "-m", "fraudstream.cli", "evaluate", "--live", *args]
    external = os.environ.get("FRAUDSTREAM_TEST_BOOTSTRAP_SERVERS")
    if external:
        cmd += ["--bootstrap-servers", external]
    return cmd


def _evaluate_live(cwd: Path, *args: str, timeout: float) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        _command(*args), env=_env(), cwd=cwd, capture_output=True, text=True, timeout=timeout
    )


def _pids(log: str) -> list[int]:
    """The scorer's, trainer's and embedded broker's process ids, as the command logs them."""
    return [int(p) for p in re.findall(r"\(pid (\d+)\)", log)]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return Path(f"/proc/{pid}/stat").read_text().split()[2] == "Z"  # exited, not yet reaped


@dataclass
class LiveRun:
    returncode: int
    stdout: str
    stderr: str
    report: dict[str, Any]
    out: Path


@pytest.fixture(scope="module")
def live_run(tmp_path_factory: pytest.TempPathFactory) -> LiveRun:
    """20,000 generated transactions over 5 days (compromised terminals included, 2% fraud),
    labels 0.5-1.5 days late, a drift half-way, played at 1,000 records/s."""
    out = tmp_path_factory.mktemp("live")
    json_path = out / "report" / "live.json"
    # 4,000 transactions a day played at 1,000 records/s: the system's label-to-serving delay
    # (under a second, a few hours of this stream's event time) stays small beside the labels'
    # own delay (about a day).
    # 2% fraud: ~300 graded frauds. With the default 0.5% (~80) the ROC AUC of either side
    # moved by up to 0.04 with the timing of a run alone.
    args = ["--count", str(COUNT), "--days", "5", "--drift-at", "0.5", "--rate", "1000"]
    args += ["--fraud-rate", "0.02", "--burn-in", "1d", "--json", str(json_path)]
    proc = _evaluate_live(out, "--out", str(out / "files"), *args, timeout=600)
    report = orjson.loads(json_path.read_bytes()) if json_path.exists() else {}
    return LiveRun(proc.returncode, proc.stdout, proc.stderr, report, out)


@pytest.mark.integration
def test_every_transaction_is_scored_once_and_both_sides_are_reported(live_run: LiveRun) -> None:
    assert live_run.returncode == 0, live_run.stderr[-3000:]
    served = live_run.report["served"]
    assert served["transactions_scored"] == COUNT
    assert served["unscored"] == 0
    assert served["unknown_transactions"] == 0
    assert served["scores_read"] == COUNT + served["duplicates_dropped"]
    # The trainer learned from the labels and the scorer served its snapshots.
    versions = served["model_versions"]
    assert versions["count"] >= 3 and versions["first_trained"] >= 1

    segments = live_run.report["segments"]
    assert set(segments) == {"graded", "pre-drift", "post-drift"}
    for seg in segments.values():
        for side in ("offline", "live"):
            q = seg[side]
            assert 0.0 < q["roc_auc"] <= 1.0
            assert 0.0 < q["average_precision"] <= 1.0
            assert 0.0 <= q["recall_at_fpr"] <= 1.0
            # Per scenario, the compromised terminals included, before and after the drift.
            assert "compromised_terminal" in q["roc_auc_by_pattern"]
        assert 0.0 <= seg["live"]["untrained_share"] < 0.5
    graded = segments["graded"]
    assert graded["live"]["transactions"] == graded["offline"]["transactions"] < COUNT  # burn-in
    assert live_run.report["stream"]["burn_in_s"] == 86400

    live = live_run.report["live"]
    assert live["published"]["transactions"] == COUNT
    assert live["published"]["labels"] == live_run.report["stream"]["labels"] > 0
    assert live["scoring_delay_s"]["p50"] is not None
    # The side-by-side table on stdout and the files.
    assert "| graded |" in live_run.stdout and "| compromised_terminal |" in live_run.stdout
    assert (live_run.out / "files" / "evaluation-live.md").read_text() in live_run.stdout


@pytest.mark.integration
def test_live_run_leaves_no_process_behind(live_run: LiveRun) -> None:
    pids = _pids(live_run.stderr)
    assert len(pids) >= 2, live_run.stderr[-3000:]  # scorer and trainer (and the broker)
    assert all(_gone(pid) for pid in pids)


@pytest.mark.integration
def test_live_roc_auc_is_within_0_02_of_offline(live_run: LiveRun) -> None:
    graded = live_run.report["segments"]["graded"]
    offline, live = graded["offline"]["roc_auc"], graded["live"]["roc_auc"]
    assert abs(live - offline) <= 0.02, f"ROC AUC offline {offline:.3f}, live {live:.3f}"


@pytest.mark.integration
def test_ctrl_c_stops_the_processes_it_started(tmp_path: Path) -> None:
    args = ["--count", "2000", "--days", "2", "--rate", "100"]
    proc = subprocess.Popen(
        _command("--out", str(tmp_path / "out"), *args),
        env=_env(),
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    try:
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if "publishing" in line:
                break
        pids = _pids("".join(lines))
        assert len(pids) >= 2, "".join(lines)
        assert not any(_gone(pid) for pid in pids)
        proc.send_signal(signal.SIGINT)
        rest = proc.communicate(timeout=120)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130
    assert "Traceback" not in rest
    deadline = time.monotonic() + 10
    while not all(_gone(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert all(_gone(pid) for pid in pids)


# ------------------------------------------------------------------------------- pure parts


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86400),
        ("90d", 90 * 86400),
        ("168h", 168 * 3600),
        ("30m", 1800),
        ("45s", 45),
        ("3600", 3600),
        ("1.5h", 5400),
        ("0", 0),
    ],
)
def test_durations_in_days_hours_minutes_seconds(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", ["", "d", "30x", "-1d", "inf", "nan"])
def test_bad_durations_are_refused_naming_the_text(bad: str) -> None:
    with pytest.raises(ValueError, match=re.escape(repr(bad))):
        parse_duration(bad)


def test_cli_rejects_a_bad_burn_in_in_one_line(tmp_path: Path) -> None:
    proc = _evaluate_live(tmp_path, "--burn-in", "30x", timeout=60)
    assert proc.returncode == 2
    assert "--burn-in" in proc.stderr and "'30x'" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_the_processes_run_the_model_the_offline_replay_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`evaluate --live --learning-rate/--fraud-weight/--average-labels` reach `score` and
    `train` through their environment, not only the offline replay."""
    monkeypatch.chdir(tmp_path)
    model = ModelSettings(learning_rate=0.0125, fraud_weight=3.0, average_labels=7)
    settings = load_settings().model_copy(update={"model": model})
    for name, value in child_env(settings, embedded=True, mlflow=False).items():
        if name.startswith("FRAUDSTREAM_MODEL__"):
            monkeypatch.setenv(name, value)
    assert load_settings().model == model


def test_cli_rejects_a_bad_average_horizon_in_one_line(tmp_path: Path) -> None:
    proc = _evaluate_live(tmp_path, "--average-labels", "0", timeout=60)
    assert proc.returncode == 2
    assert "--average-labels: must be > 0, got 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_records_merge_transactions_and_labels_in_event_time_order() -> None:
    stream = generate_stream(n=3000, days=2.0, seed=3, label_delay_s=3600.0)
    records = stream_records(stream)
    labelled = stream.known & np.isfinite(stream.label_time)
    assert records.transactions == len(stream)
    assert records.labels == int(labelled.sum())
    times, position = [], {}
    for k, (topic, value) in enumerate(zip(records.topics, records.values, strict=True)):
        record = orjson.loads(value)
        i = int(records.rows[k])
        tid = stream.transactions[i].transaction_id
        assert record["transaction_id"] == tid
        if topic == 0:
            times.append(float(stream.ts[i]))
            position[tid] = k
            assert records.keys[k] == stream.transactions[i].card_id.encode()
        else:
            at = float(stream.label_time[i])
            times.append(at)
            assert record["is_fraud"] == bool(stream.y[i])
            assert record["labeled_at"].endswith("Z")
            assert abs(_epoch(record["labeled_at"]) - at) < 1e-5
            assert position[tid] < k  # a label never goes before its transaction
    assert times == sorted(times)
    sent = records.transaction_times(np.arange(len(records), dtype=float), len(stream))
    assert [records.topics[int(k)] for k in sent] == [0] * len(stream)
    assert all(records.rows[int(k)] == i for i, k in enumerate(sent))


def _epoch(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_grading_counts_unscored_and_untrained_on_the_graded_rows_only() -> None:
    from evaluation.live_report import Served, grade
    from evaluation.report import ReportOptions

    stream = generate_stream(n=4000, days=4.0, seed=5, fraud_rate=0.05, drift_at=None)
    n = len(stream)
    rng = np.random.default_rng(0)
    scores = np.where(stream.y, 0.6, 0.4) + rng.uniform(-0.15, 0.15, n)  # informative
    versions = np.full(n, 2, dtype=np.int64)
    versions[:100] = 0  # untrained, all within the burn-in
    graded = stream.ts >= stream.ts[0] + 86400
    late = np.nonzero(graded)[0]
    versions[late[:50]] = 0  # untrained after the burn-in
    versions[late[-30:]] = -1  # never scored
    served = Served(np.where(versions >= 0, scores, np.nan), versions, n + 7, 7, 0, np.full(n, 0.0))
    report = grade(stream, scores, served, 86400.0, ReportOptions(), {})

    seg = report["segments"]["graded"]
    assert set(report["segments"]) == {"graded"}  # no drift
    assert seg["offline"]["transactions"] == int(graded.sum())
    assert seg["live"]["transactions"] == int(graded.sum()) - 30
    assert seg["live"]["unscored"] == 30
    assert seg["live"]["untrained_share"] == pytest.approx(50 / (graded.sum() - 30))
    assert seg["offline"]["roc_auc"] > 0.9 and seg["live"]["roc_auc"] > 0.9
    assert set(seg["live"]["roc_auc_by_pattern"]) <= set(seg["offline"]["roc_auc_by_pattern"])
    assert report["served"]["unscored"] == 30
    assert report["served"]["duplicates_dropped"] == 7
    assert report["served"]["model_versions"] == {"count": 2, "first_trained": 2, "last": 2}
