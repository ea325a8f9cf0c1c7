"""The live terminal view of `fraudstream up`, fed by the processes' own /metrics endpoints."""

from __future__ import annotations

import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console
from rich.live import Live
from rich.table import Table

from infra.config import Settings


@dataclass
class Scrape:
    """Metric samples per process: name -> list of (labels, value)."""

    at: float
    samples: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = field(default_factory=dict)

    def total(self, process: str, name: str, **match: str) -> float:
        rows = self.samples.get(process, {}).get(name, [])
        return sum(v for labels, v in rows if all(labels.get(k) == x for k, x in match.items()))

    def has(self, process: str) -> bool:
        return process in self.samples

    def state(self, process: str) -> str | None:
        """The process's `fraudstream_process_state`, None before its endpoint answers."""
        for labels, value in self.samples.get(process, {}).get("fraudstream_process_state", []):
            if value:
                return labels["fraudstream_process_state"]
        return None

    def lag(self, process: str) -> float:
        return self.total(process, "fraudstream_consumer_lag")

    def caught_up(self) -> bool:
        produced = self.total("producer", "fraudstream_transactions_produced_total")
        handled = self.total("scorer", "fraudstream_transactions_scored_total") + self.total(
            "scorer", "fraudstream_dlq_total"
        )
        return self.has("scorer") and handled >= produced

    def trainer_caught_up(self) -> bool:
        return self.has("trainer") and self.lag("trainer") == 0


class Scraper:
    def __init__(self, ports: dict[str, int]) -> None:
        self.ports = ports
        # Last samples of each process, kept after it exits so the summary can use them.
        self.latest: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {}

    def scrape(self) -> Scrape:
        result = Scrape(time.monotonic())
        for name, port in self.ports.items():
            try:
                with urllib.request.urlopen(  # noqa: S310  loopback, our own children
                    f"http://127.0.0.1:{port}/metrics", timeout=1.0
                ) as resp:
                    text = resp.read().decode()
            except OSError:
                if name in self.latest:
                    result.samples[name] = self.latest[name]
                continue
            per: dict[str, list[tuple[dict[str, str], float]]] = {}
            for family in text_string_to_metric_families(text):
                for sample in family.samples:
                    per.setdefault(sample.name, []).append((sample.labels, sample.value))
            result.samples[name] = per
            self.latest[name] = per
        return result


def _rate(now: Scrape, before: Scrape | None, process: str, name: str) -> float:
    if before is None or now.at <= before.at:
        return 0.0
    return (now.total(process, name) - before.total(process, name)) / (now.at - before.at)


def _auc(s: Scrape) -> str:
    auc = s.total("trainer", "fraudstream_model_roc_auc")
    return f"{auc:.3f}" if auc else "n/a"


class LiveView:
    def __init__(
        self, scraper: Scraper, plain: bool, bootstrap: str, processes: tuple[str, ...] = ()
    ) -> None:
        self.scraper = scraper
        # Shown by state until each runs; one not yet in `scraper.ports` is not started yet.
        self.processes = processes
        self.plain = plain
        self.bootstrap = bootstrap
        self.console = Console(stderr=False)
        self._live: Live | None = None
        self._prev: Scrape | None = None
        self._last_plain = 0.0
        self._status = "running (Ctrl-C to stop)"

    def __enter__(self) -> LiveView:
        if not self.plain:
            self._live = Live(console=self.console, refresh_per_second=2, transient=False)
            self._live.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._live is not None:
            self._live.__exit__(exc_type, exc, tb)

    def note(self, status: str) -> None:
        self._status = status
        if self.plain:
            print(f"[fraudstream] {status}", flush=True)
        elif self._live is not None and self._prev is not None:
            self._live.update(self._table(self._prev, 0.0))

    def refresh(self, elapsed_s: float) -> None:
        now = self.scraper.scrape()
        if self.plain:
            if now.at - self._last_plain >= 5.0:
                self._last_plain = now.at
                print(self._line(now, elapsed_s), flush=True)
        elif self._live is not None:
            self._live.update(self._table(now, elapsed_s))
        # Rates are taken over at least a second, from the previous kept scrape.
        if self._prev is None or now.at - self._prev.at >= 1.0:
            self._prev = now

    def states(self, s: Scrape) -> dict[str, str]:
        """Each process's state: its own, or `starting` before its endpoint answers, or
        `waiting` before it is started."""
        return {
            name: s.state(name) or ("starting" if name in self.scraper.ports else "waiting")
            for name in self.processes
        }

    def _line(self, s: Scrape, elapsed_s: float) -> str:
        states = self.states(s)
        if any(state != "running" for state in states.values()):
            return f"[fraudstream] t={elapsed_s:5.0f}s " + " ".join(
                f"{name}={state}" for name, state in states.items()
            )
        return (
            f"[fraudstream] t={elapsed_s:5.0f}s "
            f"produced={s.total('producer', 'fraudstream_transactions_produced_total'):.0f} "
            f"scored={s.total('scorer', 'fraudstream_transactions_scored_total'):.0f} "
            f"rate={_rate(s, self._prev, 'scorer', 'fraudstream_transactions_scored_total'):.0f}/s "
            f"lag={s.lag('scorer'):.0f} "
            f"fraud_rate={s.total('scorer', 'fraudstream_fraud_rate'):.2%} "
            f"dlq={s.total('scorer', 'fraudstream_dlq_total'):.0f} "
            f"labels={s.total('trainer', 'fraudstream_labels_learned_total'):.0f} "
            f"model=v{s.total('scorer', 'fraudstream_model_version'):.0f} "
            f"auc={_auc(s)}"
        )

    def _table(self, s: Scrape, elapsed_s: float) -> Table:
        t = Table(
            title=f"fraudstream on {self.bootstrap}  t={elapsed_s:.0f}s",
            caption=self._status,
            show_header=True,
            width=78,
        )
        t.add_column("", style="bold")
        t.add_column("now", justify="right")
        t.add_column("total", justify="right")
        scored = "fraudstream_transactions_scored_total"
        produced = "fraudstream_transactions_produced_total"
        states = self.states(s)
        if any(state != "running" for state in states.values()):
            for name, state in states.items():
                t.add_row(name, state.replace("_", " "), "")
            return t
        rows = [
            (
                "produced",
                f"{_rate(s, self._prev, 'producer', produced):.0f}/s",
                f"{s.total('producer', produced):.0f}",
            ),
            (
                "scored",
                f"{_rate(s, self._prev, 'scorer', scored):.0f}/s",
                f"{s.total('scorer', scored):.0f}",
            ),
            ("scorer lag", f"{s.lag('scorer'):.0f}", ""),
            (
                "flagged",
                f"{s.total('scorer', 'fraudstream_fraud_rate'):.2%}",
                f"{s.total('scorer', 'fraudstream_transactions_flagged_total'):.0f}",
            ),
            ("dead letters", "", f"{s.total('scorer', 'fraudstream_dlq_total'):.0f}"),
            (
                "labels learned",
                f"{_rate(s, self._prev, 'trainer', 'fraudstream_labels_learned_total'):.0f}/s",
                f"{s.total('trainer', 'fraudstream_labels_learned_total'):.0f}",
            ),
            ("trainer lag", f"{s.lag('trainer'):.0f}", ""),
            (
                "model (serving / trained)",
                f"v{s.total('scorer', 'fraudstream_model_version'):.0f}",
                f"v{s.total('trainer', 'fraudstream_model_version'):.0f}",
            ),
            (
                "rolling AUC / precision / recall",
                _auc(s),
                f"{s.total('trainer', 'fraudstream_model_precision'):.2f} / "
                f"{s.total('trainer', 'fraudstream_model_recall'):.2f}",
            ),
        ]
        for row in rows:
            t.add_row(*row)
        return t


@dataclass
class Summary:
    elapsed_s: float
    produced: float
    scored: float
    flagged: float
    dead_letters: float
    labels_learned: float
    model_version: int
    metrics: dict[str, float]
    mlflow_run: str | None
    mlflow_uri: str
    run_dir: Path

    @classmethod
    def from_scrape(cls, s: Scrape, elapsed_s: float, run_dir: Path, settings: Settings) -> Summary:
        from infra.model_updates import read_latest_snapshot

        snapshot = read_latest_snapshot(settings, timeout_s=10)
        return cls(
            elapsed_s=elapsed_s,
            produced=s.total("producer", "fraudstream_transactions_produced_total"),
            scored=s.total("scorer", "fraudstream_transactions_scored_total"),
            flagged=s.total("scorer", "fraudstream_transactions_flagged_total"),
            dead_letters=s.total("scorer", "fraudstream_dlq_total"),
            labels_learned=snapshot.labels_learned if snapshot else 0,
            model_version=snapshot.version if snapshot else 0,
            metrics=snapshot.metrics if snapshot else {},
            mlflow_run=_latest_run(settings),
            mlflow_uri=settings.mlflow_uri(),
            run_dir=run_dir,
        )

    def render(self) -> str:
        m = self.metrics
        quality = ", ".join(f"{k}={v:.3f}" for k, v in sorted(m.items())) or "n/a"
        lines = [
            "",
            f"fraudstream summary ({self.elapsed_s:.0f} s)",
            f"  transactions produced  {self.produced:.0f}",
            f"  scored                 {self.scored:.0f}"
            f"  ({self.flagged:.0f} flagged, {self.dead_letters:.0f} dead letters)",
            f"  labels learned         {self.labels_learned:.0f}",
            f"  final model            v{self.model_version}  ({quality})",
            f"  logs                   {self.run_dir}/",
        ]
        if self.mlflow_run:
            lines += [
                f"  mlflow run             {self.mlflow_run}  ({self.mlflow_uri})",
                "  load the model:        "
                f"mlflow.pyfunc.load_model('runs:/{self.mlflow_run}/model')",
            ]
            keys = self.run_dir / "keys" / "snapshot-verify.pem"
            if keys.exists():
                lines.append(f"    with FRAUDSTREAM_SNAPSHOT_VERIFY_KEY_FILE={keys}")
        return "\n".join(lines)


def _latest_run(settings: Settings) -> str | None:
    try:
        import mlflow

        mlflow.set_tracking_uri(settings.mlflow_uri())
        runs = mlflow.search_runs(
            experiment_names=[settings.mlflow_experiment],
            order_by=["attributes.start_time DESC"],
            max_results=1,
            output_format="list",
        )
    except Exception:  # noqa: BLE001  the summary must print even when tracking is down
        return None
    return runs[0].info.run_id if runs else None
