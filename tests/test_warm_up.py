"""`fraudstream warm-up` (run by `make install` and the Docker build) compiles every kernel the
scorer and the trainer use, so that processes started afterwards compile nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from fraudstream.live import Scraper
from fraudstream.warm_up import KERNEL_MODULES
from infra.broker import free_port
from tests.conftest import SettingsFactory, settings_env
from tests.kafka_helpers import fraudstream_process, read_topic, wait_for

ROOT = Path(__file__).resolve().parent.parent
KERNEL = re.compile(r"^@numba\.njit\(", re.MULTILINE)


def test_kernel_modules_lists_every_module_with_a_cached_kernel() -> None:
    found = set()
    for path in ROOT.rglob("*.py"):
        relative = path.relative_to(ROOT)
        if relative.parts[0] in {".venv", "tests"} or not KERNEL.search(path.read_text()):
            continue
        found.add(".".join(relative.with_suffix("").parts))
    assert found == set(KERNEL_MODULES)


def _cache_files(cache: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in cache.rglob("*.nb*")}


@pytest.mark.integration
def test_processes_started_after_warm_up_compile_nothing(
    make_settings: SettingsFactory, tmp_path: Path
) -> None:
    settings = make_settings()
    env = {**settings_env(settings), "NUMBA_CACHE_DIR": str(tmp_path / "numba")}
    warm = subprocess.run(
        [sys.executable, "-m", "fraudstream.cli", "warm-up"],
        env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert warm.returncode == 0, warm.stdout + warm.stderr
    figures = re.search(r"(\d+) kernels ready .*: (\d+) signatures compiled", warm.stdout)
    assert figures and int(figures.group(2)) >= int(figures.group(1)) > 0, warm.stdout
    cache = _cache_files(tmp_path / "numba")
    assert len(cache) >= int(figures.group(2))

    ports = {"scorer": free_port(), "trainer": free_port()}
    scraper = Scraper(ports)
    with (
        fraudstream_process(
            ["score", "--metrics-port", str(ports["scorer"])], env, tmp_path / "score.log"
        ),
        fraudstream_process(
            ["train", "--no-mlflow", "--metrics-port", str(ports["trainer"])],
            env,
            tmp_path / "train.log",
        ),
    ):
        wait_for(
            "every process running",
            lambda: all(scraper.scrape().state(p) == "running" for p in ports),
            180,
        )
        produce = subprocess.run(
            [sys.executable, "-m", "fraudstream.cli", "produce", "--count", "500",
             "--rate", "1000", "--label-delay", "0"],
            env=env, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert produce.returncode == 0, produce.stderr
        scores = read_topic(settings, settings.topics.scores, lambda m: len(m) >= 500, 120)
        assert len(scores) >= 500
        wait_for(
            "the trainer to learn the labels",
            lambda: scraper.scrape().total("trainer", "fraudstream_labels_learned_total") >= 500,
            120,
        )
    assert _cache_files(tmp_path / "numba") == cache
