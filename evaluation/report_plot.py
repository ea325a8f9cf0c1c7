"""The evaluation report as a plot: ROC AUC and average precision per time window, per learner,
with the drift, the end of the static model's training part and ADWIN's detections marked."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from evaluation.streams import DAY_S


def write_plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    st = report["stream"]
    fig, axes = plt.subplots(2, 1, figsize=(11, 7), sharex=True)
    mids = [(w["start_day"] + w["end_day"]) / 2 for w in report["windows"]]
    colors = {"online": "tab:blue", "static": "tab:gray", "forest": "tab:green"}
    for name, lr in report["learners"].items():
        color = colors.get(name)
        auc = [w["roc_auc"] if w["roc_auc"] is not None else np.nan for w in lr["windows"]]
        ap = [
            w["average_precision"] if w["average_precision"] is not None else np.nan
            for w in lr["windows"]
        ]
        axes[0].plot(mids, auc, marker="o", ms=3, label=name, color=color)
        axes[1].plot(mids, ap, marker="o", ms=3, label=name, color=color)
        for d in lr["drift_detections"]:
            if d["worse"] and d["stream"] == "fraud":
                day = (d["time"] - st["start"]) / DAY_S
                axes[0].axvline(day, color=color, ls=":", lw=1, alpha=0.8)
    for ax in axes:
        if st.get("drift_day") is not None:
            ax.axvline(st["drift_day"], color="red", lw=2, label="drift")
        ax.axvline(st["static_until_day"], color="black", ls="--", lw=1, label="static trained")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("ROC AUC per window")
    axes[1].set_ylabel("average precision per window")
    axes[1].set_xlabel("days from the start (dotted: ADWIN saw the fraud loss rise)")
    axes[0].legend(loc="lower left", fontsize=8)
    axes[0].set_title("fraudstream evaluate: progressive validation")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
