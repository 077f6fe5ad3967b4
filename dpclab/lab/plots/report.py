"""Figures of the reproducibility report (notebook 06): every method's accuracy, and every method in the base-new
plane, from :func:`dpclab.lab.benchmark.run_matrix` runs and their :func:`dpclab.lab.benchmark.summary_table`."""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dpclab.lab.plots.training import tradeoff
from dpclab.lab.targets import AVERAGE
from dpclab.methods.table import PLUGINS


def _average(summary: pd.DataFrame) -> pd.DataFrame:
    return summary[summary["dataset"] == AVERAGE].set_index("method")


#: bar colours of a plug-in's rows, in the order of the plug-in table (DPC blue, DePT orange, then the next ones)
PLUGIN_COLOURS = ("tab:blue", "tab:orange", "tab:purple", "tab:brown", "tab:pink", "tab:olive", "tab:cyan")


def bar_colour(label: str) -> str:
    """Grey for a method alone; a plug-in's row (``coop+dpc``, ``coop+dpc[released]``) in its plug-in's colour."""
    plugin = label.partition("+")[2].partition("[")[0]
    if not plugin:
        return "gray"
    order = list(PLUGINS)
    return PLUGIN_COLOURS[order.index(plugin) % len(PLUGIN_COLOURS)] if plugin in order else "tab:red"


def bars_label(counts) -> str:
    """What the bars of :func:`method_bars` show, with n (runs per method: datasets x seeds)."""
    ns = sorted({int(k) for k in counts if k == k})
    n = "/".join(str(k) for k in ns) or "0"
    if ns == [1]:
        return "one run per method (n = 1), no error bars"
    return f"mean ± sample std over n = {n} runs" + (" (n = 1: no error bar)" if 1 in ns else "")


def method_bars(runs: pd.DataFrame, summary: pd.DataFrame, methods: Sequence[str], title: str,
                ylabel: str) -> Figure:
    """Bars per method: base and new accuracy (mean ± sample std over every run of the method: datasets and seeds
    pooled; the title and each tick say n, and a method with one run has no error bar) and the HM of the mean base
    and new (the summary's average over datasets). Grey: a method alone, each
    plug-in in its colour (:func:`bar_colour`: blue DPC, orange DePT)."""
    agg = runs.groupby("method", sort=False).agg(base=("base", "mean"), base_std=("base", "std"),
                                                 new=("new", "mean"), new_std=("new", "std"),
                                                 n=("base", "size")).reindex(methods)
    x = np.arange(len(methods))
    fig = Figure(figsize=(15, 3.8))
    axes = fig.subplots(1, 3, sharey=True)
    for ax, metric in zip(axes, ("base", "new")):
        ax.bar(x, agg[metric], color=[bar_colour(m) for m in methods])
        many = agg["n"].fillna(0) >= 2  # no error bar from a single run
        if many.any():
            ax.errorbar(x[many.to_numpy()], agg[metric][many], yerr=agg[f"{metric}_std"][many], fmt="none",
                        ecolor="black", capsize=3)
        ax.set_xticks(x, [f"{m} (n={int(k)})" if k == k else m for m, k in zip(methods, agg["n"])], rotation=60,
                      ha="right", fontsize=8)
        ax.set_title(f"{metric} accuracy: {bars_label(agg['n'])}")
        ax.grid(axis="y", alpha=0.3)
    axes[2].bar(x, _average(summary).reindex(methods)["hm"], color="tab:green")
    axes[2].set_xticks(x, methods, rotation=60, ha="right", fontsize=8)
    axes[2].set_title("HM of mean base and new")
    axes[2].grid(axis="y", alpha=0.3)
    axes[0].set_ylabel(ylabel)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def methods_tradeoff(summary: pd.DataFrame, title: str) -> Figure:
    """Every method's average over datasets as a point in the base-new plane, zero-shot as the star."""
    ours = _average(summary)
    reference = ours.loc["zeroshot"] if "zeroshot" in ours.index else None
    return tradeoff({}, reference, points={m: ours.loc[m] for m in ours.index if m != "zeroshot"}, title=title)


__all__ = ["method_bars", "bars_label", "methods_tradeoff"]
