"""Progress bars that stay out of logs: a tqdm bar on a terminal or in Jupyter, nothing per iteration elsewhere.

Text bars written to a file or a pipe (CI logs, ``> run.log``) turn into one line per refresh, and nested bars
(training epochs around feature encoding) interleave there. :func:`progress_bar` therefore draws only where it can
redraw in place: a terminal (tqdm's ``disable=None``: on when its stream is a TTY) or a Jupyter front end (a widget).
"""

from __future__ import annotations


def progress_bar(iterable=None, enabled: bool = True, **kwargs):
    """``tqdm(iterable, **kwargs)``, disabled unless ``enabled`` and drawn on a terminal or as a Jupyter widget."""
    from tqdm.auto import tqdm

    if not enabled:
        return tqdm(iterable, disable=True, **kwargs)
    from tqdm.notebook import tqdm as notebook_tqdm  # imports ipywidgets: only when a bar may be drawn

    if issubclass(tqdm, notebook_tqdm):
        disable = False  # Jupyter: a widget that updates in place (the kernel's stderr is no TTY)
    else:
        disable = None  # tqdm: only when its stream is a terminal
    return tqdm(iterable, disable=disable, **kwargs)


__all__ = ["progress_bar"]
