"""Every figure of the project, and the one way to save them.

Each function takes data (tables, runs, grids) and returns a :class:`matplotlib.figure.Figure`, built with the object
API (``Figure()``, never ``pyplot``): figures work headless (papermill, CI) without touching the global backend.
Functions that draw a single panel also accept ``ax=`` to fill an existing :class:`~matplotlib.axes.Axes`.

>>> from dpclab.lab import plots
>>> fig = plots.tradeoff(curves, reference=zeroshot_metrics)
>>> plots.save_figure(fig, "01_tradeoff", alt="base against new accuracy of CoOp over the epochs")

:func:`save_figure` (:mod:`.saving`) writes ``figures/<name>.png`` and returns a :class:`SavedFigure`, which a notebook displays as
that very PNG: what the notebook shows is what was saved.
"""

from __future__ import annotations

from dpclab.lab.plots.analysis import channel_importance, channel_means, ci_ratio_hist, invariance
from dpclab.lab.plots.headroom import dpc_headroom
from dpclab.lab.plots.images import hard_negative_grid, image_grid, prediction_grid, prompt_similarity
from dpclab.lab.plots.omega import omega_sweep
from dpclab.lab.plots.report import method_bars, methods_tradeoff
from dpclab.lab.plots.saving import FIGURES_DIR, SavedFigure, save_figure
from dpclab.lab.plots.training import accuracy_curves, loss_curves, tradeoff, training_loss, two_step_curves

__all__ = ["save_figure", "SavedFigure", "FIGURES_DIR", "image_grid", "prediction_grid", "hard_negative_grid",
           "prompt_similarity", "accuracy_curves", "tradeoff", "training_loss", "two_step_curves", "loss_curves",
           "omega_sweep", "channel_importance", "ci_ratio_hist", "invariance", "channel_means", "method_bars",
           "methods_tradeoff", "dpc_headroom"]
