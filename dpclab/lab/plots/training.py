"""Figures of training: accuracy and loss over the epochs, and the base-new plane.

``curves`` arguments map a name to a per-epoch frame (:func:`dpclab.evaluate.history_frame`: columns ``epoch``,
``loss``, and ``base`` / ``new`` / ``hm`` when the run evaluated after every epoch)."""

from __future__ import annotations

from typing import Mapping, Sequence

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

_TITLES = {"base": "base classes", "new": "new classes", "hm": "harmonic mean"}


def accuracy_curves(curves: Mapping[str, pd.DataFrame], reference: Mapping | None = None,
                    metrics: Sequence[str] = ("base", "new", "hm")) -> Figure:
    """Accuracy against epoch: one panel per metric, one line per method; ``reference`` (e.g. zero-shot metrics)
    is drawn as a dashed horizontal line."""
    fig = Figure(figsize=(4.2 * len(metrics), 3.2))
    axes = fig.subplots(1, len(metrics), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, df in curves.items():
            ax.plot(df["epoch"] + 1, df[metric], label=name)
        if reference is not None:
            ax.axhline(reference[metric], ls="--", color="gray", label="zero-shot")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} accuracy (%)" if metric != "hm" else "HM (%)")
        ax.set_title(_TITLES.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def tradeoff(curves: Mapping[str, pd.DataFrame], reference: Mapping | None = None, points: Mapping | None = None,
             ax: Axes | None = None, title: str | None = None) -> Figure:
    """The base-new plane: each method's trajectory over epochs (``curves``, drawn as a moving average over 1/20
    of the epochs; the dot is the last epoch's actual value), extra single ``points`` (name -> metrics), the
    ``reference`` point (a star), and dotted iso-HM contours. Fills ``ax`` when given; returns its figure."""
    if ax is None:
        ax = Figure(figsize=(5.2, 4.6)).subplots()
    points = points or {}
    xs = [v for df in curves.values() for v in df["base"]] + [p["base"] for p in points.values()]
    ys = [v for df in curves.values() for v in df["new"]] + [p["new"] for p in points.values()]
    if reference is not None:
        xs.append(reference["base"])
        ys.append(reference["new"])
    lo = max(0.0, min(xs + ys) - 5)
    hi = min(100.0, max(xs + ys) + 5)
    grid = np.linspace(lo, hi, 200)
    b, n = np.meshgrid(grid, grid)
    hm = 2 * b * n / np.maximum(b + n, 1e-9)
    cs = ax.contour(b, n, hm, levels=8, colors="lightgray", linestyles=":", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="HM %.0f")
    for name, df in curves.items():
        window = max(1, len(df) // 20)  # per-epoch accuracies on small test sets are noisy: a moving average
        smooth = df[["base", "new"]].rolling(window, min_periods=1).mean()
        label = f"{name} (over epochs{f', moving average of {window}' if window > 1 else ''})"
        line, = ax.plot(smooth["base"], smooth["new"], "-", alpha=0.7, label=label)
        ax.plot(df["base"].iloc[-1], df["new"].iloc[-1], "o", color=line.get_color())
    # one colour per base method, one marker per plug-in, so a dozen methods stay distinguishable
    bases = list(dict.fromkeys(name.partition("+")[0] for name in points))
    palette = matplotlib.colormaps["tab10"]
    markers = {"": "s", "dpc": "^", "dept": "D"}
    for name, p in points.items():
        base, _, plugin = name.partition("+")
        ax.plot(p["base"], p["new"], markers.get(plugin, "o"), color=palette(bases.index(base) % 10), label=name)
    if reference is not None:
        ax.plot(reference["base"], reference["new"], "*", ms=12, color="black", label="zero-shot")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("base accuracy (%)")
    ax.set_ylabel("new accuracy (%)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.2)
    if title:
        ax.set_title(title, fontsize=9)
    return ax.figure


def training_loss(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """The training loss against epoch (log scale), one line per method."""
    fig = Figure(figsize=(5, 3.2))
    ax = fig.subplots()
    for name, df in curves.items():
        ax.plot(df["epoch"] + 1, df["loss"], label=name)
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss")
    ax.set_yscale("log")
    ax.legend()
    ax.grid(alpha=0.3)
    return fig


def two_step_curves(step1: pd.DataFrame, step2: pd.DataFrame, reference: Mapping) -> Figure:
    """DPC's two steps on one time axis: base, new and HM accuracy over step 1 (CoOp, P) and then step 2 (P'
    with P frozen), a vertical line between them and ``reference`` (zero-shot) dashed."""
    fig = Figure(figsize=(13, 3.3))
    axes = fig.subplots(1, 3)
    offset = len(step1)
    for ax, metric in zip(axes, ("base", "new", "hm")):
        ax.plot(step1["epoch"] + 1, step1[metric], label="step 1: CoOp (P)")
        ax.plot(step2["epoch"] + 1 + offset, step2[metric], label="step 2: DPC (P′ with P frozen)")
        ax.axhline(reference[metric], ls="--", color="gray", label="zero-shot")
        ax.axvline(offset + 0.5, color="black", lw=0.8)
        ax.set_title({"base": "base accuracy", "new": "new accuracy", "hm": "harmonic mean"}[metric])
        ax.set_xlabel("epoch (step 1, then step 2)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def loss_curves(curves: Mapping[str, pd.DataFrame]) -> Figure:
    """One panel per run: its training loss over the epochs and, when recorded, the accuracy within the training
    batches (right axis, orange)."""
    fig = Figure(figsize=(9, 3.2))
    axes = fig.subplots(1, 2)
    for ax, (name, df) in zip(axes, curves.items()):
        ax.plot(df["epoch"] + 1, df["loss"], label="loss")
        ax.set_title(name)
        ax.set_xlabel("epoch")
        ax.set_ylabel("training loss")
        ax.grid(alpha=0.3)
        if "acc" in df:
            twin = ax.twinx()
            twin.plot(df["epoch"] + 1, 100 * df["acc"], color="tab:orange", label="train accuracy")
            twin.set_ylabel("train accuracy in batch (%)", color="tab:orange")
    fig.tight_layout()
    return fig


__all__ = ["accuracy_curves", "tradeoff", "training_loss", "two_step_curves", "loss_curves"]
