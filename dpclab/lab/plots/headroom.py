"""DPC's base gain against how much room CoOp leaves (issue 22): one point per dataset and DPC row.

DPC's step 2 can only add base accuracy that step 1 left on the table. Two measures of that room, both from the
benchmark's own rows: the **feature headroom** (16-shot linear probe base − CoOp base: what the frozen features allow
beyond CoOp's prompt) and CoOp's **accuracy on its own shots** (near 100 %: nothing left to fit)."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dpclab.lab.targets import AVERAGE, PROBE

_MARKERS = ("o", "s", "^", "D", "v", "P")


def headroom_table(summary: pd.DataFrame, gains: pd.DataFrame) -> pd.DataFrame:
    """One row per dataset x DPC row: ``headroom`` (probe − CoOp base), ``coop_train`` (CoOp's accuracy on its
    shots), ``gain``/``low``/``high`` (:func:`dpclab.lab.targets.paired_gains`: mean and paired 95 % interval)."""
    per = summary[summary["dataset"] != AVERAGE].set_index(["dataset", "method"])
    rows = []
    for g in gains[gains["dataset"] != AVERAGE].to_dict("records"):
        d = g["dataset"]
        if (d, "coop") not in per.index:
            continue
        coop = per.loc[(d, "coop")]
        probe = per.loc[(d, PROBE), "base"] if (d, PROBE) in per.index else np.nan
        rows.append({"dataset": d, "method": g["method"], "headroom": probe - coop["base"],
                     "coop_train": coop["train_acc"], "gain": g["mean"], "low": g["low"], "high": g["high"]})
    return pd.DataFrame(rows, columns=["dataset", "method", "headroom", "coop_train", "gain", "low", "high"])


def dpc_headroom(summary: pd.DataFrame, gains: pd.DataFrame, title: str = "",
                 methods: Sequence[str] | None = None) -> Figure:
    """Two panels, DPC's base gain over CoOp (paired mean, bars = paired 95 % interval) against the feature
    headroom (probe − CoOp base) and against CoOp's accuracy on its shots; one marker per DPC row, each dataset
    labelled. ``summary``: :func:`dpclab.lab.benchmark.summary_table`; ``gains``: :func:`dpclab.lab.benchmark.dpc_gains`."""
    table = headroom_table(summary, gains)
    if table.empty:
        raise ValueError("dpc_headroom needs CoOp rows and DPC gains on at least one dataset.")
    methods = list(methods or dict.fromkeys(table["method"]))
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2, sharey=True)
    for ax, col, label in ((axes[0], "headroom", "feature headroom: probe base − CoOp base (points)"),
                           (axes[1], "coop_train", "CoOp accuracy on its own shots (%)")):
        for i, m in enumerate(methods):
            t = table[table["method"] == m]
            err = np.vstack([(t["gain"] - t["low"]).fillna(0), (t["high"] - t["gain"]).fillna(0)])
            ax.errorbar(t[col], t["gain"], yerr=err, fmt=_MARKERS[i % len(_MARKERS)], capsize=3, label=m, alpha=0.85)
        for r in table.drop_duplicates("dataset").to_dict("records"):
            ax.annotate(r["dataset"].replace("world_", ""), (r[col], r["gain"]), textcoords="offset points",
                        xytext=(4, 4), fontsize=7)
        ax.axhline(0, color="gray", lw=0.8)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("DPC base − CoOp base (points, paired over seeds)")
    axes[1].legend(fontsize=8)
    fig.suptitle(title or "DPC's base gain against the room CoOp leaves", fontsize=10)
    fig.tight_layout()
    return fig


__all__ = ["dpc_headroom", "headroom_table"]
