"""Interactive widgets of the notebooks: the ω sliders over a precomputed :class:`~dpclab.omega.OmegaGrid`."""

from __future__ import annotations

import time

import numpy as np

from dpclab.omega import omega_view


def omega_summary(grid, omega_b: float, omega_n: float) -> str:
    """A one-line Markdown read-out of :func:`dpclab.omega.omega_view` (the ω sliders' callback text)."""
    v = omega_view(grid, omega_b, omega_n)
    return (f"ω_b = {v['omega_b']:.2f}, ω_n = {v['omega_n']:.2f} → base **{v['base']:.2f}**, "
            f"new **{v['new']:.2f}**, HM **{v['hm']:.2f}**")


def omega_sliders(grid, step: float | None = None):
    """Two ipywidgets sliders (ω_b, ω_n) over the grid's values, showing :func:`omega_summary` live.

    The callback only reads the precomputed grid (no model call). Errors inside widget callbacks do not fail a
    headless run, so notebooks also call :func:`omega_summary` directly once."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    omegas = list(grid.omegas)
    step = step or (min(b - a for a, b in zip(omegas, omegas[1:])) if len(omegas) > 1 else 0.05)
    default_b, default_n = grid.meta.get("default", [0.2, 0.0])
    make = lambda name, v: widgets.FloatSlider(value=v, min=omegas[0], max=omegas[-1], step=step,  # noqa: E731
                                               description=name, continuous_update=True, readout_format=".2f")
    sb, sn = make("ω_b", default_b), make("ω_n", default_n)
    out = widgets.Output()

    def update(change=None):
        with out:
            out.clear_output(wait=True)
            display(Markdown(omega_summary(grid, sb.value, sn.value)))

    sb.observe(update, "value")
    sn.observe(update, "value")
    update()
    return widgets.VBox([widgets.HBox([sb, sn]), out])


def slider_latency_ms(grid, n: int = 500, seed: int = 0) -> float:
    """Mean time (ms) of one slider update (:func:`omega_summary`: grid lookup + text) over ``n`` random
    (ω_b, ω_n) positions on the grid."""
    pairs = np.random.default_rng(seed).choice(grid.omegas, size=(n, 2))
    t0 = time.perf_counter()
    for wb, wn in pairs:
        omega_summary(grid, float(wb), float(wn))
    return 1000 * (time.perf_counter() - t0) / len(pairs)


__all__ = ["omega_summary", "omega_sliders", "slider_latency_ms"]
