"""Saving a figure: :func:`save_figure` writes ``figures/<name>.png`` atomically with its alt text, and returns a
:class:`SavedFigure` that Jupyter shows as the saved PNG."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from matplotlib.figure import Figure

#: where :func:`save_figure` writes, relative to the working directory (the notebooks run from the repository root)
FIGURES_DIR = "figures"
#: resolution of saved figures
DPI = 120
_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


@dataclass(frozen=True)
class SavedFigure:
    """A figure written to ``path``; Jupyter displays it as the saved PNG."""

    path: Path
    alt: str

    def _repr_png_(self):
        data = self.path.read_bytes()
        width = int.from_bytes(data[16:20], "big")  # the PNG header's pixel width: shown at 100 dpi, not DPI
        return data, {"alt": self.alt, "width": round(width * 100 / DPI)}


def save_figure(fig: Figure, name: str, alt: str, folder: str | os.PathLike = FIGURES_DIR) -> SavedFigure:
    """Write ``fig`` to ``<folder>/<name>.png`` (atomically: a reader never sees half a file) with ``alt`` - a
    one-sentence description of what the figure shows - stored as the PNG's ``Description``."""
    if not _NAME.match(name):
        raise ValueError(f"figure name {name!r}: use letters, digits and _ . + - only (it becomes <name>.png).")
    if not alt or not alt.strip():
        raise ValueError(f"save_figure({name!r}) needs alt text: one sentence saying what the figure shows.")
    path = Path(folder) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    fig.savefig(tmp, format="png", dpi=DPI, bbox_inches="tight", metadata={"Description": alt.strip()})
    os.replace(tmp, path)
    return SavedFigure(path, alt.strip())


__all__ = ["save_figure", "SavedFigure", "FIGURES_DIR", "DPI"]
