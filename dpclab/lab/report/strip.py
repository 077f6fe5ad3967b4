"""Notebooks are committed without outputs: :func:`strip_outputs` (``python -m dpclab strip``)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence


def strip_outputs(paths: Sequence[str | Path]) -> list[Path]:
    """Remove outputs, execution counts, run metadata and papermill's injected cells from notebooks, in place.

    Notebooks are committed without outputs (reports are built, not stored). Returns the files that changed."""
    import nbformat

    changed = []
    for path in map(Path, paths):
        nb = nbformat.read(str(path), as_version=4)
        before = nbformat.writes(nb)
        nb.cells = [c for c in nb.cells if "injected-parameters" not in c.metadata.get("tags", [])]
        for cell in nb.cells:
            for key in ("papermill", "execution", "ExecuteTime", "collapsed", "scrolled"):
                cell.metadata.pop(key, None)
            if cell.cell_type == "code":
                cell.outputs = []
                cell.execution_count = None
        nb.metadata.pop("papermill", None)
        nb.metadata.pop("widgets", None)
        after = nbformat.writes(nb)
        if after != before:
            path.write_text(after, encoding="utf-8")
            changed.append(path)
    return changed


__all__ = ["strip_outputs"]
