"""The evaluation report as Markdown tables: what `fraudstream evaluate` prints and writes.

Renders the report `evaluation.report.build_report` returns (plain JSON values): quality per
segment, recovery after the drift, alerts at a fixed and a calibrated threshold, the online
model's threshold sweep, each explaining learner's top scores with their reasons, and ROC AUC
per time window.
"""

from __future__ import annotations

import math
from typing import Any


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def render_markdown(report: dict[str, Any]) -> str:
    st = report["stream"]
    opts = report["options"]
    lines = []
    drift = f"drift at day {st['drift_day']:.1f}" if st.get("drift_day") is not None else "no drift"
    lines.append(
        f"**fraudstream evaluate** — {st['transactions']:,} transactions over {st['days']:.1f} "
        f"days, {st['frauds']:,} fraud ({st['frauds'] / max(st['measured'], 1):.2%}), "
        f"{st['labels']:,} labels; {drift}; static model trained on labels that arrived "
        f"before day {st['static_until_day']:.1f}; measured from then on."
    )
    lines.append("")
    budget = opts["daily_budget"]
    lines.append(
        f"| learner | segment | frauds | ROC AUC | avg precision | recall @{opts['fpr']:.1%} FPR "
        f"| precision @{budget}/day |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    for name, lr in report["learners"].items():
        for seg, q in lr["segments"].items():
            lines.append(
                f"| {name} | {seg} | {_f(q['frauds'])} | {_f(q['roc_auc'])} | "
                f"{_f(q['average_precision'])} | {_f(q['recall_at_fpr'])} | "
                f"{_f(q['precision_at_budget'])} |"
            )
    if st.get("drift_day") is not None:
        lines.append("")
        lines.append(
            f"Recovery after the drift: first chunk of {opts['chunk_frauds']} frauds whose ROC AUC "
            f"reaches {opts['recovery_share']:.0%} of the learner's pre-drift ROC AUC and stays "
            f"there to the end, over at least {opts['recovery_min_chunks']} chunks; ADWIN on the "
            "per-label loss of fraud labels."
        )
        lines.append("")
        lines.append(
            "| learner | pre-drift AUC | target | lowest chunk AUC | recovered | labels after "
            "drift | fraud labels | hours | AUC from there | chunks below target after | "
            "ADWIN: degradation seen after | false alarms before | reactions |"
        )
        lines.append("| --- | " + "---: | " * 3 + "--- | " + "---: | " * 5 + "--- | ---: | ---: |")
        for name, lr in report["learners"].items():
            rec = lr["recovery"] or {}
            pre = lr["segments"].get("pre-drift", {}).get("roc_auc")
            seen = lr["first_degradation_after_drift"]
            seen_s = f"{seen['hours']:.0f} h" if seen else "not seen"
            ok = rec.get("recovered")
            lines.append(
                f"| {name} | {_f(pre)} | {_f(rec.get('target_roc_auc'))} | "
                f"{_f(rec.get('lowest_chunk_roc_auc'))} | {'yes' if ok else 'no'} | "
                f"{_f(rec.get('labels')) if ok else '—'} | "
                f"{_f(rec.get('fraud_labels')) if ok else '—'} | "
                f"{_f(rec.get('hours'), 0) if ok else '—'} | "
                f"{_f(rec.get('recovered_roc_auc')) if ok else '—'} | "
                f"{_f(rec.get('chunks_below_after')) if ok else '—'} | {seen_s} | "
                f"{lr['false_alarms_before_drift']} | {lr['reactions']} |"
            )
    lines.append("")
    lines.append(
        f"Decisions: fixed threshold {opts['threshold']} vs a threshold calibrated, from each "
        f"learner's recent scores, to alert on {opts['alert_rate']:.1%} of transactions."
    )
    lines.append("")
    lines.append(
        "| learner | segment | alerts/day @fixed | precision | recall | alerts/day @calibrated "
        "| precision | recall |"
    )
    lines.append("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, lr in report["learners"].items():
        for seg, a in lr["alerts"].items():
            fx, cal = a["fixed"], a["calibrated"]
            lines.append(
                f"| {name} | {seg} | {_f(fx['alerts_per_day'], 0)} | {_f(fx['precision'])} | "
                f"{_f(fx['recall'])} | {_f(cal['alerts_per_day'], 0)} | "
                f"{_f(cal['precision'])} | {_f(cal['recall'])} |"
            )
    sweep = report["learners"].get("online", {}).get("threshold_sweep")
    if sweep:
        lines.append("")
        lines.append("Online model, effect of the threshold (overall):")
        lines.append("")
        lines.append("| threshold | alerts/day | alert rate | precision | recall |")
        lines.append("| ---: | ---: | ---: | ---: | ---: |")
        for row in sweep:
            lines.append(
                f"| {row['threshold']} | {_f(row['alerts_per_day'], 0)} | "
                f"{_f(row['alert_rate'], 4)} | {_f(row['precision'])} | {_f(row['recall'])} |"
            )
    for name, lr in report["learners"].items():
        lines += _render_top(name, lr.get("top_scored") or [])
    lines.append("")
    names = list(report["learners"])
    lines.append(
        "ROC AUC per time window (days from the start; ← drift marks the first window after it):"
    )
    lines.append("")
    lines.append("| window (days) | frauds | " + " | ".join(names) + " |")
    lines.append("| --- | ---: | " + " | ".join("---:" for _ in names) + " |")
    drift_day = st.get("drift_day")
    for k, w in enumerate(report["windows"]):
        mark = (
            " ← drift" if drift_day is not None and abs(w["start_day"] - drift_day) < 1e-9 else ""
        )
        frauds = max(report["learners"][n]["windows"][k]["frauds"] for n in names)
        cells = " | ".join(_f(report["learners"][n]["windows"][k]["roc_auc"]) for n in names)
        lines.append(f"| {w['start_day']:.1f}–{w['end_day']:.1f}{mark} | {frauds} | {cells} |")
    return "\n".join(lines) + "\n"


def _render_top(name: str, top: list[dict[str, Any]]) -> list[str]:
    if not top:
        return []
    scenario = any(t.get("pattern") is not None for t in top)
    lines = [
        "",
        f"{name.capitalize()} model, its {len(top)} highest scores (equal scores: by logit) and "
        "the features that pushed each up most (contribution to the logit; intercept + these + "
        "the other contributions = logit):",
        "",
        "| # | transaction | day | fraud | "
        + ("scenario | " if scenario else "")
        + "score | logit | reasons | intercept | other |",
        "| ---: | --- | ---: | --- | "
        + ("--- | " if scenario else "")
        + "---: | ---: | --- | ---: | ---: |",
    ]
    for t in top:
        label = {True: "yes", False: "no", None: "—"}[t["is_fraud"]]
        reasons = ", ".join(f"{r['feature']} {r['contribution']:+.2f}" for r in t["reasons"])
        lines.append(
            f"| {t['rank']} | {t['transaction_id']} | {t['day']:.1f} | {label} | "
            + (f"{t.get('pattern') or '—'} | " if scenario else "")
            + f"{_f(t['score'], 4)} | {t['logit']:+.2f} | {reasons or '—'} | "
            f"{t['intercept']:+.2f} | {t['other']:+.2f} |"
        )
    return lines
