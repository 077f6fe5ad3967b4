"""Figures for the analyses in :mod:`dpclab.analysis` (DePT Fig. 3, DPC's channel invariance).

Each function takes the analysis table, saves the figure under ``path`` (when given; the format follows the file
suffix) and returns the :class:`matplotlib.figure.Figure`. Figures are built with the object API
(``Figure()``, not ``pyplot``), so they work headless (no display, papermill, CI) without touching the global
backend, and a notebook shows a returned figure as usual.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure


def _save(fig: Figure, path: str | os.PathLike | None) -> Figure:
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120, bbox_inches="tight")
    return fig


def plot_channel_importance(table: pd.DataFrame, path: str | os.PathLike | None = None,
                            title: str | None = None) -> Figure:
    """DePT Fig. 3(a)(c): one panel per model, channels ordered by their base CI, base and new CI as points."""
    models = list(dict.fromkeys(table["model"]))
    fig = Figure(figsize=(4 * len(models), 3.6), layout="constrained")  # keeps the suptitle above the panel titles
    axes = fig.subplots(1, len(models), sharey=True, squeeze=False)[0]
    for ax, name in zip(axes, models):
        d = table[table["model"] == name].sort_values("base")
        x = np.arange(len(d))
        ax.scatter(x, d["base"], s=4, label="CI-Base")
        ax.scatter(x, d["new"], s=4, label="CI-New")
        ax.set_title(name)
        ax.set_xlabel("channel (sorted by CI-Base)")
        ax.set_xticks([])
    axes[0].set_ylabel("channel importance")
    axes[0].legend(loc="upper left", markerscale=3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_ci_ratio_hist(table: pd.DataFrame, path: str | os.PathLike | None = None, title: str | None = None,
                       bins: int = 40) -> Figure:
    """DePT Fig. 3(b)(d): distribution of CI-Base / CI-New over channels, one histogram per model; a ratio near 1
    means the channel serves base and new classes alike."""
    import seaborn as sns

    fig = Figure(figsize=(5, 3.6))
    ax = fig.subplots()
    sns.histplot(table, x="ratio", hue="model", bins=bins, stat="density", element="step", common_norm=False, ax=ax)
    ax.axvline(1.0, color="grey", ls="--", lw=1)
    ax.set_xlabel("CI-Base : CI-New")
    if title:
        ax.set_title(title)
    return _save(fig, path)


def plot_invariance(table: pd.DataFrame, path: str | os.PathLike | None = None, title: str | None = None) -> Figure:
    """Along omega (0 = P, 1 = P'): correlation of per-channel mean/variance with P's (left) and the relative
    linearity gap of the text encoder (right), from :func:`dpclab.analysis.invariance_table`."""
    fig = Figure(figsize=(9, 3.6))
    left, right = fig.subplots(1, 2)
    for col, style in (("pearson_mean", "-o"), ("spearman_mean", "--o"), ("pearson_var", "-s"),
                       ("spearman_var", "--s")):
        left.plot(table["omega"], table[col], style, ms=3, label=col.replace("_", " "))
    left.set_xlabel("omega")
    left.set_ylabel("correlation with P")
    left.legend(fontsize=8)
    right.plot(table["omega"], table["rel_gap"], "-o", ms=3)
    right.set_xlabel("omega")
    right.set_ylabel("relative linearity gap")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


__all__ = ["plot_channel_importance", "plot_ci_ratio_hist", "plot_invariance"]
