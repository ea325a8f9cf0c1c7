"""`fraudstream up` sends transactions only once the scorer and the trainer are in their
groups, and until then its view shows what each process is doing, not zeros."""

from __future__ import annotations

import re
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import orjson
import pytest

from fraudstream.live import LiveView, Scrape, Scraper
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import read_topic

pytestmark = pytest.mark.integration

_LOG_TIME = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) ")


def _assigned_at(log: Path) -> datetime:
    """When the process's consumer got its partitions (its first `assigned` log line)."""
    for line in log.read_text().splitlines():
        match = _LOG_TIME.match(line)
        if match and " assigned " in line:
            return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").astimezone()
    raise AssertionError(f"no assignment in {log}:\n{log.read_text()}")


def test_transactions_flow_only_once_scorer_and_trainer_are_in_their_groups(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    runs = tmp_path / "runs"
    result = subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", "up", "--duration", "3s", "--rate", "200",
         "--plain", "--run-dir", str(runs)],
        env=settings_env(settings), cwd=tmp_path, capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    (run_dir,) = runs.iterdir()

    produced = re.search(r"transactions produced\s+(\d+)", result.stdout)
    scored = re.search(r"scored\s+(\d+)", result.stdout)
    assert produced and scored and int(produced.group(1)) == int(scored.group(1)) > 0
    count = int(produced.group(1))

    # The first transaction's event time (the producer's clock when it sent it) is after both
    # consumers joined their groups.
    messages = read_topic(settings, settings.topics.transactions, lambda m: len(m) >= count)
    assert len(messages) == count
    first_sent = min(datetime.fromisoformat(orjson.loads(m.value())["timestamp"]) for m in messages)
    assert first_sent >= _assigned_at(run_dir / "scorer.log")
    assert first_sent >= _assigned_at(run_dir / "trainer.log")

    # Before that, the view named each process's state; then it showed the flow.
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("[fraudstream] t=")]
    assert "producer=waiting" in lines[0] and "scored=" not in lines[0], lines
    assert any("scored=" in ln for ln in lines), lines


def _scrape(states: dict[str, str]) -> Scrape:
    return Scrape(
        0.0,
        {
            name: {"fraudstream_process_state": [({"fraudstream_process_state": s}, 1.0)]}
            for name, s in states.items()
        },
    )


def test_the_view_shows_states_until_every_process_runs() -> None:
    view = LiveView(
        Scraper({"trainer": 1, "scorer": 2}),
        plain=True,
        bootstrap="b",
        processes=("trainer", "scorer", "producer"),
    )
    # The trainer's endpoint does not answer yet; the producer is not started.
    line = view._line(_scrape({"scorer": "compiling"}), 3.0)
    assert line.endswith("trainer=starting scorer=compiling producer=waiting")
    view.scraper.ports["producer"] = 3
    running = _scrape({"trainer": "running", "scorer": "running", "producer": "running"})
    assert "scored=0" in view._line(running, 4.0)
