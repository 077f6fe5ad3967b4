"""The ω figure of DPC: base and new accuracy along ω_b and ω_n, HM over the (ω_b, ω_n) plane, and the paper's
published sweeps beside them."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from dpclab.omega import omega_view


def omega_sweep(grid, paper: pd.DataFrame, label: str) -> Figure:
    """Three panels from an :class:`~dpclab.omega.OmegaGrid`: (left) base accuracy against ω_b and new against ω_n,
    with the HM of each pair at the other knob's default; (middle) HM over the (ω_b, ω_n) plane with the default as
    a star; (right) the published sweeps (``paper``: :func:`dpclab.lab.paper_numbers.dpc_omega_sweeps`; hollow markers
    are values read off a plot). ``label`` names where the left panels were computed (e.g. the backend)."""
    w = np.array(grid.omegas)
    base_acc, new_acc = grid.accuracy["base"].numpy(), grid.accuracy["new"].numpy()
    default_b, default_n = grid.meta["default"]
    hm_b = [omega_view(grid, x, default_n)["hm"] for x in w]
    hm_n = [omega_view(grid, default_b, x)["hm"] for x in w]
    fig = Figure(figsize=(15, 3.8))
    axes = fig.subplots(1, 3)
    ax = axes[0]
    ax.plot(w, base_acc, "-o", ms=3, label="base accuracy vs ω_b")
    ax.plot(w, new_acc, "-s", ms=3, label="new accuracy vs ω_n")
    ax.plot(w, hm_b, "--", label=f"HM vs ω_b (ω_n = {default_n:g})")
    ax.plot(w, hm_n, ":", label=f"HM vs ω_n (ω_b = {default_b:g})")
    ax.axvline(default_b, color="gray", lw=0.8)
    ax.set_xlabel("ω")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"computed here ({label})")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    hm_plane = np.array([[omega_view(grid, b, n)["hm"] for b in w] for n in w])
    half = (w[1] - w[0]) / 2 if len(w) > 1 else 0.05
    im = axes[1].imshow(hm_plane, origin="lower", extent=(w[0] - half, w[-1] + half, w[0] - half, w[-1] + half),
                        aspect="auto", cmap="viridis")
    axes[1].plot(default_b, default_n, "w*", ms=12)
    axes[1].set_xlabel("ω_b")
    axes[1].set_ylabel("ω_n")
    axes[1].set_title("HM over (ω_b, ω_n); star: default")
    fig.colorbar(im, ax=axes[1])
    for (knob, metric), d in paper.groupby(["knob", "metric"]):
        line, = axes[2].plot(d["omega"], d["accuracy"], "-", label=f"{metric} accuracy vs {knob}")
        exact = d[~d["approx"]]
        axes[2].plot(exact["omega"], exact["accuracy"], "o", color=line.get_color())
        approx = d[d["approx"]]
        axes[2].plot(approx["omega"], approx["accuracy"], "o", mfc="none", color=line.get_color())
    axes[2].set_xlabel("ω")
    axes[2].set_title("paper (DPC, CoOp, ViT-B/16, 11 datasets)")
    axes[2].legend(fontsize=7)
    axes[2].grid(alpha=0.3)
    fig.tight_layout()
    return fig


__all__ = ["omega_sweep"]
