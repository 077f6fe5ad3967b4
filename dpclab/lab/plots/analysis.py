"""Figures of the feature-space analyses in :mod:`dpclab.lab.analysis`: DePT's channel importance (its Fig. 3) and
DPC's feature-channel invariance."""

from __future__ import annotations

from typing import Mapping

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from dpclab.lab.analysis import pearson


def channel_importance(table: pd.DataFrame, title: str | None = None) -> Figure:
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
    return fig


def ci_ratio_hist(table: pd.DataFrame, title: str | None = None, bins: int = 40) -> Figure:
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
    return fig


def invariance(table: pd.DataFrame, title: str | None = None) -> Figure:
    """Along omega (0 = P, 1 = P'): correlation of per-channel mean/variance with P's (left) and the relative
    linearity gap of the text encoder (right), from :func:`dpclab.lab.analysis.invariance_table`."""
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
    return fig


def channel_means(stats: Mapping[str, pd.DataFrame]) -> Figure:
    """One panel per prompt pair (``stats``: name -> :func:`dpclab.lab.analysis.channel_stats_table`): each feature
    channel's mean at the start of the pair (omega = 0, x) against at its end (omega = 1, y), with the diagonal and
    the Pearson correlation of the two."""
    fig = Figure(figsize=(4.2 * len(stats), 3.8))
    axes = fig.subplots(1, len(stats), squeeze=False)
    for ax, (pair, table) in zip(axes[0], stats.items()):
        start = table[table["omega"] == 0.0]["mean"].to_numpy()
        end = table[table["omega"] == 1.0]["mean"].to_numpy()
        ax.scatter(start, end, s=6)
        lim = [min(start.min(), end.min()), max(start.max(), end.max())]
        ax.plot(lim, lim, color="gray", lw=0.8)
        ax.set_title(f"{pair}\nPearson {pearson(torch.tensor(start), torch.tensor(end)):.3f}", fontsize=9)
        ax.set_xlabel("channel mean at start")
        ax.set_ylabel("channel mean at end")
    fig.tight_layout()
    return fig


__all__ = ["channel_importance", "ci_ratio_hist", "invariance", "channel_means"]
