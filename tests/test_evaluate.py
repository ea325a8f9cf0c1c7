"""`fraudstream evaluate` on tiny streams: the mechanics, not the model quality."""

from __future__ import annotations

import dataclasses
import math
import random
from pathlib import Path

import numpy as np
import orjson
import pytest

from core.features import FeatureBatch
from core.model_compiled import CompiledModel
from core.model_settings import ModelSettings
from evaluation.learners import DriftMonitor, OnlineLogistic, StaticLogistic
from evaluation.metrics import (
    alert_stats,
    average_precision,
    precision_at_budget,
    recall_at_fpr,
    roc_auc,
)
from evaluation.replay import (
    Plan,
    TopScored,
    _progressive,
    _static,
    build_features,
)
from evaluation.report import ReportOptions, calibrated_thresholds
from evaluation.run import EvaluateOptions, run_evaluation
from evaluation.streams import Stream, StreamError, generate_stream, read_stream, write_stream
from fraudstream.cli import main

HOUR = 3600.0


@pytest.fixture(scope="module")
def stream() -> Stream:
    return generate_stream(
        n=4000, days=2.0, seed=5, fraud_rate=0.03, drift_at=0.5, label_delay_s=2 * HOUR,
        label_coverage=0.8, n_cards=300, n_merchants=60,
    )  # fmt: skip


@pytest.fixture(scope="module")
def plan(stream: Stream) -> Plan:
    features = build_features(stream)
    static_until = float(stream.ts[0] + 0.25 * (stream.ts[-1] - stream.ts[0]))
    return Plan(
        stream.ts, stream.y, stream.label_time, features.batch.dicts(), features.batch,
        static_until, ModelSettings(), "none", 0, 2, 0.2, 0.002,
    )  # fmt: skip


# ---------------------------------------------------------------------------- metrics


def test_metrics_on_known_cases() -> None:
    y = np.array([False, False, True, False, True, False])
    s = np.array([0.1, 0.4, 0.35, 0.8, 0.9, 0.2])
    # Pairs (fraud, legit) ordered right: 0.35 beats 0.1, 0.2; 0.9 beats all 4 -> 6 of 8.
    assert roc_auc(y, s) == pytest.approx(6 / 8)
    assert roc_auc(y, np.ones(6)) == 0.5  # ties count half
    assert math.isnan(roc_auc(np.zeros(3, bool), np.ones(3)))
    # Ranking: 0.9 (F), 0.8, 0.4, 0.35 (F): AP = (1/1 + 2/4) / 2.
    assert average_precision(y, s) == pytest.approx((1.0 + 0.5) / 2)
    assert recall_at_fpr(y, s, 0.0) == 0.5
    assert recall_at_fpr(y, s, 0.5) == 1.0
    days = np.array([0, 0, 0, 1, 1, 1])
    assert precision_at_budget(y, s, days, 1) == pytest.approx(0.5)  # day0: 0.4 legit; day1: 0.9
    stats = alert_stats(y, s >= 0.5, days=2.0)
    assert stats["alerts_per_day"] == 1.0 and stats["precision"] == 0.5 and stats["recall"] == 0.5


def test_calibrated_threshold_only_looks_back() -> None:
    scores = np.r_[np.zeros(2000), np.ones(2000)]
    th = calibrated_thresholds(scores, 0.01, window=1000, step=500)
    assert np.isnan(th[:1000]).all()
    assert (th[1000:2000] == 0.0).all()  # computed from earlier zeros only
    assert th[-1] == 1.0


# ---------------------------------------------------------------------------- replay


def test_generated_stream_is_deterministic_and_labels_come_late(stream: Stream) -> None:
    again = generate_stream(
        n=4000, days=2.0, seed=5, fraud_rate=0.03, drift_at=0.5, label_delay_s=2 * HOUR,
        label_coverage=0.8, n_cards=300, n_merchants=60,
    )  # fmt: skip
    assert [t.transaction_id for t in again.transactions] == [
        t.transaction_id for t in stream.transactions
    ]
    assert (again.label_time == stream.label_time).all()
    assert (np.diff(stream.ts) >= 0).all()
    labeled = np.isfinite(stream.label_time)
    assert 0.7 < labeled.mean() < 0.9
    delay = stream.label_time[labeled] - stream.ts[labeled]
    assert delay.min() >= HOUR and delay.max() <= 3 * HOUR
    assert stream.drift_time == stream.ts[2000]
    assert stream.y.any()


def test_features_see_only_labels_that_arrived(stream: Stream) -> None:
    features = build_features(stream, batch_size=100)
    arrived_before = np.searchsorted(np.sort(stream.label_time), stream.ts, side="left")
    assert (features.labels_fed <= arrived_before).all()
    assert features.labels_fed[-1] > 0


class _Spy:
    """A learner that records the order of predictions and labels."""

    name = "spy"

    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.updates = 0
        self._rows: dict[int, int] = {}

    def predict_one(self, x: dict[str, float]) -> float:
        self.events.append(("predict", id(x)))
        return 0.5

    def learn_one(self, x: dict[str, float], y: bool) -> None:
        self.events.append(("learn", id(x)))
        self.updates += 1


def test_progressive_order_never_uses_a_label_before_it_arrives(plan: Plan) -> None:
    spy = _Spy()
    result = _progressive(spy, plan)
    row = {id(x): i for i, x in enumerate(plan.dicts)}
    predicted: set[int] = set()
    for kind, ref in spy.events:
        if kind == "predict":
            predicted.add(row[ref])
        else:
            assert row[ref] in predicted, "a label is learned only after its transaction is scored"
    # Every label learned arrived strictly before the transaction scored right after it.
    order = [(k, row[r]) for k, r in spy.events]
    for pos, (kind, i) in enumerate(order):
        if kind == "learn":
            nxt = next((j for k, j in order[pos:] if k == "predict"), None)
            if nxt is not None:
                assert plan.label_time[i] < plan.ts[nxt]
    assert result.updates == spy.updates > 0
    assert result.updates <= int(np.isfinite(plan.label_time).sum())
    assert np.isfinite(result.scores).all()


def test_static_model_is_trained_once_then_frozen(plan: Plan, monkeypatch) -> None:
    calls: list[int] = []
    fit = StaticLogistic.fit

    def counting_fit(self: StaticLogistic, rows: list) -> None:
        calls.append(len(rows))
        fit(self, rows)

    monkeypatch.setattr(StaticLogistic, "fit", counting_fit)
    result = _static(plan)
    before = int((plan.label_time < plan.static_until).sum())
    assert calls == [before]
    assert result.info["trained_on_labels"] == before
    assert result.updates == before * result.info["epochs"]
    assert result.learned_until < plan.static_until
    # No score before the model exists; a score for everything after.
    assert np.isnan(result.scores[plan.ts < plan.static_until]).all()
    assert np.isfinite(result.scores[plan.ts >= plan.static_until]).all()
    learner = StaticLogistic(ModelSettings())
    learner.fit([({"a": 1.0}, True)])
    with pytest.raises(RuntimeError):
        learner.learn_one({"a": 1.0}, False)
    with pytest.raises(RuntimeError):
        learner.fit([({"a": 1.0}, True)])


def test_top_scored_keeps_the_k_highest_in_bounded_memory() -> None:
    rng = random.Random(3)
    scores = [round(rng.random(), 2) for _ in range(2000)]  # many ties
    logits = [rng.choice([1.0, 2.0]) for _ in scores]
    top = TopScored(7)
    for i, p in enumerate(scores):
        if top.wants(p, i):
            top.add(p, i, {"row": i, "logit": logits[i]})
        assert len(top._heap) <= 7
    best = top.best()
    # Highest first; equal scores by logit (River's probability saturates), then the earlier.
    expected = sorted(range(len(scores)), key=lambda i: (-scores[i], -logits[i], i))[:7]
    assert [s.row for s in best] == expected
    assert [s.explanation["row"] for s in best] == expected
    assert not TopScored(0).wants(1.0, 0) and not TopScored(3).wants(math.nan, 0)


def test_online_top_scores_carry_the_reasons_given_when_scored(plan: Plan) -> None:
    plan = dataclasses.replace(plan, top=6, top_reasons=3)
    learner = OnlineLogistic(plan.model)
    asked: list[int] = []
    explain = learner.explain

    def spy(row: FeatureBatch, top: int) -> dict:
        # The explanation is the live scorer's, from the model that gave the score.
        compiled = CompiledModel.from_pipeline(learner.pipeline, 0)
        ex = explain(row, top)
        assert ex["reasons"] == compiled.reasons(row, top)[0]
        asked.append(len(asked))
        return ex

    learner.explain = spy  # type: ignore[method-assign]
    result = _progressive(learner, plan)
    top = result.top
    assert len(top) == 6 and len(asked) < len(plan.ts) // 10  # only records that enter
    assert [s.score for s in top] == sorted(result.scores, reverse=True)[:6]
    assert [s.score for s in top] == [result.scores[s.row] for s in top]
    for s in top:
        ex = s.explanation
        contributions = [c for _, c in ex["reasons"]]
        assert 1 <= len(contributions) <= 3
        assert contributions == sorted(contributions, reverse=True) and contributions[-1] > 0
        # Intercept, reasons and the other contributions make up the logit of the score.
        assert ex["intercept"] + sum(contributions) + ex["other"] == pytest.approx(ex["logit"])
        assert 1.0 / (1.0 + math.exp(-ex["logit"])) == pytest.approx(s.score, abs=1e-9)


def test_drift_monitor_sees_the_fraud_loss_rise() -> None:
    monitor = DriftMonitor()
    for i in range(600):
        monitor.update(True, 0.9, float(i))  # caught
    for i in range(600, 1200):
        monitor.update(True, 0.05, float(i))  # missed
    worse = [d for d in monitor.detections if d.worse and d.stream == "fraud"]
    assert worse and 600 <= worse[0].time < 800


# ---------------------------------------------------------------------------- end to end


def test_evaluation_report_files_and_contents(tmp_path: Path) -> None:
    opts = EvaluateOptions(
        count=4000, days=2.0, seed=5, fraud_rate=0.03, drift_at=0.5, label_delay_s=2 * HOUR,
        n_cards=300, n_merchants=60, forest_models=2, legit_sample=0.2, jobs=2, top=5,
        report=ReportOptions(daily_budget=20, chunk_frauds=10), out_dir=tmp_path / "out",
        json_path=tmp_path / "r.json",
    )  # fmt: skip
    ev = run_evaluation(opts)
    assert ev.files["plot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    report = orjson.loads(ev.files["json"].read_bytes())
    assert ev.files["json"] == tmp_path / "r.json"
    assert set(report["learners"]) == {"online", "static", "forest"}
    n_windows = len(report["windows"])
    assert n_windows >= 5
    assert any(
        abs(w["start_day"] - report["stream"]["drift_day"]) < 1e-9 for w in report["windows"]
    )
    for name, lr in report["learners"].items():
        assert set(lr["segments"]) == {"pre-drift", "post-drift", "overall"}
        for q in lr["segments"].values():
            assert {"roc_auc", "average_precision", "recall_at_fpr", "precision_at_budget"} <= set(
                q
            )
        assert len(lr["windows"]) == n_windows
        assert "recovered" in lr["recovery"]
        assert set(lr["alerts"]["overall"]) == {"fixed", "calibrated"}
        assert isinstance(lr["drift_detections"], list)
        assert lr["segments"]["overall"]["roc_auc"] is not None, name
    assert report["learners"]["online"]["threshold_sweep"]
    # The online model's top scores, with their reasons; the others do not explain theirs.
    top = report["learners"]["online"]["top_scored"]
    assert [t["rank"] for t in top] == [1, 2, 3, 4, 5]
    assert [t["score"] for t in top] == sorted((t["score"] for t in top), reverse=True)
    ids = {t.transaction_id for t in run_stream_ids(opts)}
    for t in top:
        assert t["transaction_id"] in ids and isinstance(t["is_fraud"], bool)
        assert t["pattern"] is None or t["is_fraud"]
        assert t["reasons"] and all(r["contribution"] > 0 for r in t["reasons"])
        total = t["intercept"] + sum(r["contribution"] for r in t["reasons"]) + t["other"]
        assert total == pytest.approx(t["logit"])
    assert "top_scored" not in report["learners"]["static"]
    assert "top_scored" not in report["learners"]["forest"]
    md = ev.files["markdown"].read_text()
    assert "5 highest scores" in md and top[0]["transaction_id"] in md
    for word in ("online", "static", "forest", "ROC AUC", "pre-drift", "post-drift", "← drift"):
        assert word in md
    assert md == ev.markdown


def run_stream_ids(opts: EvaluateOptions) -> list:
    from evaluation.run import load_stream

    return load_stream(opts).transactions


def test_user_files_are_read_and_evaluated(tmp_path: Path, stream: Stream, capsys) -> None:
    txs, labels = tmp_path / "tx.jsonl", tmp_path / "labels.jsonl"
    write_stream(stream, txs, labels)
    with txs.open("ab") as f:
        f.write(b'{"transaction_id": "broken"}\nnot json\n')
    errors: list[str] = []
    mine = read_stream(txs, labels, on_error=errors.append)
    assert len(mine) == len(stream) and len(errors) == 2
    assert [t.transaction_id for t in mine.transactions] == [
        t.transaction_id for t in stream.transactions
    ]
    known = np.isfinite(stream.label_time)
    assert (mine.known == known).all()
    assert np.allclose(mine.label_time[known], stream.label_time[known], atol=1e-3)
    assert (mine.y[known] == stream.y[known]).all()

    # Labels without labeled_at, as CSV: timed by --label-delay, or refused without it.
    csv = tmp_path / "labels.csv"
    rows = [orjson.loads(line) for line in labels.read_bytes().splitlines()]
    csv.write_text(
        "transaction_id,is_fraud\n"
        + "".join(f"{r['transaction_id']},{str(r['is_fraud']).lower()}\n" for r in rows)
    )
    delayed = read_stream(txs, csv, label_delay_s=600.0, on_error=lambda _: None)
    assert np.allclose(delayed.label_time[delayed.known], delayed.ts[delayed.known] + 600.0)
    with pytest.raises(StreamError, match="label-delay"):
        read_stream(txs, csv, on_error=lambda _: None)

    out = tmp_path / "out"
    code = main(
        ["evaluate", "--transactions", str(txs), "--labels", str(csv), "--label-delay", "600",
         "--learners", "online", "static", "--out", str(out), "--json", str(tmp_path / "e.json"),
         "--chunk-frauds", "10", "--drift-at", "0.5"]
    )  # fmt: skip
    assert code == 0
    printed = capsys.readouterr()
    assert "| online | pre-drift |" in printed.out
    assert "not json" in printed.err or "not_json" in printed.err
    report = orjson.loads((tmp_path / "e.json").read_bytes())
    assert report["stream"]["source"] == "files"
    assert set(report["learners"]) == {"online", "static"}
    assert (out / "evaluation.png").is_file()


def test_cli_rejects_half_a_recorded_stream(tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["evaluate", "--transactions", str(tmp_path / "x.jsonl"), "--out", str(tmp_path)])
    assert exc.value.code == 2
    assert "--labels" in capsys.readouterr().err
