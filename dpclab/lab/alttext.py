"""Alternative text for figures in notebooks and the HTML reports, written from the figure itself.

nbconvert writes a figure's ``alt`` attribute from the output's metadata (``{"image/png": {"alt": ...}}``) and warns
"Alternative text is missing on N image(s)" otherwise. :func:`enable` makes IPython attach :func:`describe_figure`'s
text to every matplotlib figure a notebook shows (``plt.show()``, a figure as a cell's value, ``display(fig)``);
:func:`image_alt` is the same text for figures shown as ``IPython.display.Image``.
"""

from __future__ import annotations

MAX_CHARS = 600
_PANEL_DETAIL = 6  # more panels than this (image grids) are summarised by their titles


def _panel_kind(ax) -> str:
    if ax.images:
        return "image"
    if ax.patches and not ax.lines:
        return "bar chart"
    if ax.collections and not ax.lines:
        return "scatter plot"
    return "line plot" if ax.lines else "panel"


def _describe_axes(ax) -> str:
    title = ax.get_title() or ax.get_title("left") or ax.get_title("right")
    text = _panel_kind(ax) + (f" '{title}'" if title else "")
    x, y = ax.get_xlabel(), ax.get_ylabel()
    if x or y:
        text += f" of {y or 'values'} against {x or 'position'}"
    legend = ax.get_legend()
    if legend is not None:
        labels = [t.get_text() for t in legend.get_texts() if t.get_text()]
        if labels:
            text += " (series: " + ", ".join(labels) + ")"
    return text


def describe_figure(fig, max_chars: int = MAX_CHARS) -> str:
    """A one-paragraph description of a matplotlib figure: its title and, per panel, the kind of plot, title, axis
    labels and legend entries (image grids: the number of panels and their titles). Colour bars are left out."""
    axes = [ax for ax in fig.axes if ax.get_label() != "<colorbar>"]
    title = fig.get_suptitle()
    head = f"Figure: {title}." if title else "Figure."
    if not axes:
        text = head
    elif len(axes) == 1:
        panel = _describe_axes(axes[0])
        text = f"{head} {panel[0].upper()}{panel[1:]}."
    elif len(axes) <= _PANEL_DETAIL:
        text = f"{head} {len(axes)} panels: " + "; ".join(f"({k}) {_describe_axes(ax)}"
                                                         for k, ax in enumerate(axes, 1)) + "."
    else:
        kinds = sorted({_panel_kind(ax) for ax in axes})
        titles = [ax.get_title() for ax in axes if ax.get_title()]
        text = f"{head} {len(axes)} {'/'.join(kinds)} panels" + (
            " titled: " + ", ".join(t.replace("\n", " ") for t in titles) if titles else "") + "."
    text = " ".join(text.split())
    return text if len(text) <= max_chars else text[: max_chars - 1].rstrip() + "…"


def image_alt(fig) -> str:
    """Alt text for a figure shown as ``IPython.display.Image(data=png, alt=image_alt(fig))``."""
    return describe_figure(fig)


FIGURE_MIME_TYPES = ("image/png", "image/jpeg", "image/svg+xml")


def figure_alt_metadata(fig) -> tuple[dict, dict]:
    """An IPython mime-bundle printer for figures: no data of its own (matplotlib's formatters render the image),
    only the metadata ``{"image/png": {"alt": ...}, ...}`` that nbconvert and JupyterLab read the alt text from."""
    alt = describe_figure(fig)
    return {}, {mime: {"alt": alt} for mime in FIGURE_MIME_TYPES}


def enable(shell=None) -> bool:
    """Attach alt text to every matplotlib figure the IPython ``shell`` (default: the running one) displays.

    It registers :func:`figure_alt_metadata` with IPython's mime-bundle formatter, which IPython merges with the
    image that matplotlib's inline backend renders (whenever that backend loads). Idempotent; returns False outside
    IPython."""
    if shell is None:
        from IPython import get_ipython

        shell = get_ipython()
    if shell is None:
        return False
    from matplotlib.figure import Figure

    shell.display_formatter.mimebundle_formatter.for_type(Figure, figure_alt_metadata)
    return True


__all__ = ["describe_figure", "image_alt", "figure_alt_metadata", "enable"]
