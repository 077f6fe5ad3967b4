"""Run the notebooks headless and publish them: ``python -m dpclab report``.

Each notebook in ``notebooks/`` is executed with papermill (its ``parameters`` cell overridden the way
``papermill -p key value`` does, plus ``interactive=False`` and ``quick``), the executed copy is stored as
``reports/<name>.ipynb`` and converted to ``reports/<name>.html`` with nbconvert, and ``reports/index.html`` links
every report with its status and wall time. A notebook that fails still gets its HTML (papermill marks the failing
cell); the run continues with the next notebook and the whole report exits non-zero, naming the cell.

>>> from dpclab.report import run_report
>>> results = run_report(only=["00"], quick=True)
>>> results[0].status, results[0].seconds
"""

from __future__ import annotations

import ast
import html
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

log = logging.getLogger(__name__)

DEFAULT_NOTEBOOK_DIR = "notebooks"
DEFAULT_OUT_DIR = "reports"


@dataclass
class NotebookResult:
    name: str  # file stem, e.g. "00_quickstart"
    source: Path
    executed: Path  # the executed .ipynb
    html: Path | None
    ok: bool
    seconds: float
    error: str = ""  # "In [5] (cell 7 of the executed notebook, starts `...`): ValueError: ..." when it failed

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


def parse_value(text: str):
    """A ``-p`` value as papermill's CLI would read it, plus Python literals: ``16`` -> 16, ``None`` -> None,
    ``True`` -> True, ``[1, 2]`` -> list, anything else (``ViT-B-16``, ``1 2 3``) stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def discover(notebook_dir: str | Path = DEFAULT_NOTEBOOK_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """The notebooks to run, in name order. ``only`` keeps those whose name starts with one of the prefixes
    (``["00", "03"]``) or equals a stem; an ``only`` entry that matches nothing is an error."""
    folder = Path(notebook_dir)
    books = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not books:
        raise FileNotFoundError(f"No notebooks found in {folder.resolve()}. Run from the repository root or pass "
                                f"--notebooks <folder>.")
    if not only:
        return books
    chosen = []
    for key in only:
        hits = [p for p in books if p.stem == key or p.stem.startswith(key)]
        if not hits:
            raise ValueError(f"--only {key!r} matches no notebook; available: {', '.join(p.stem for p in books)}.")
        chosen += [p for p in hits if p not in chosen]
    return sorted(chosen)


def check_parameters(parameters: dict) -> None:
    """Refuse parameters the notebooks do not define (papermill would only warn and ignore them)."""
    from .notebook import PARAMETER_KEYS

    unknown = sorted(set(parameters) - set(PARAMETER_KEYS))
    if unknown:
        raise ValueError(f"Unknown notebook parameter(s) {unknown}. The notebooks take: {', '.join(PARAMETER_KEYS)}.")


def _describe_failure(err: Exception) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        first = next((line for line in err.source.splitlines() if line.strip()), "")
        return (f"In [{err.exec_count}] (cell {err.cell_index} of the executed notebook, starts `{first[:80]}`): "
                f"{err.ename}: {str(err.evalue)[:500]}")
    return f"{type(err).__name__}: {str(err)[:500]}"


def to_html(executed: Path, out: Path) -> Path:
    """Convert an executed notebook to a standalone HTML page (images embedded)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4)
    body, _ = HTMLExporter(template_name="lab").from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


def run_notebook(source: Path, out_dir: Path, parameters: dict, cwd: str | Path = ".",
                 timeout: float | None = None) -> NotebookResult:
    """Execute one notebook with papermill, then write its HTML. Never raises for a failing cell."""
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / source.name
    t0 = time.perf_counter()
    error = ""
    try:
        pm.execute_notebook(str(source), str(executed), parameters=parameters, cwd=str(cwd), progress_bar=False,
                            execution_timeout=timeout)
    except Exception as err:  # noqa: BLE001 - a failing notebook is reported, the others still run
        error = _describe_failure(err)
    seconds = time.perf_counter() - t0
    page = None
    if executed.is_file():
        try:
            page = to_html(executed, out_dir / f"{source.stem}.html")
        except Exception as err:  # noqa: BLE001
            error = error or f"HTML conversion failed: {type(err).__name__}: {err}"
    return NotebookResult(source.stem, source, executed, page, not error, seconds, error)


def write_index(results: Sequence[NotebookResult], out_dir: Path, parameters: dict,
                figures_dir: str | Path = "figures") -> Path:
    """``reports/index.html``: one row per notebook with a link, status, wall time and the failing cell."""
    rows = []
    for r in results:
        link = f'<a href="{html.escape(r.html.name)}">{html.escape(r.name)}</a>' if r.html else html.escape(r.name)
        colour = "#1a7f37" if r.ok else "#cf222e"
        rows.append(f"<tr><td>{link}</td><td style='color:{colour};font-weight:bold'>{r.status}</td>"
                    f"<td style='text-align:right'>{r.seconds:.1f} s</td><td>{html.escape(r.error)}</td></tr>")
    total = sum(r.seconds for r in results)
    params = ", ".join(f"{k}={v!r}" for k, v in parameters.items())
    figures = sorted(Path(figures_dir).glob("*.png")) if Path(figures_dir).is_dir() else []
    fig_links = " ".join(f'<a href="{html.escape(os.path.relpath(p, out_dir))}">{html.escape(p.stem)}</a>'
                         for p in figures)
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>dpclab report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}} td,th{{padding:4px 10px;
border-bottom:1px solid #ddd;vertical-align:top}} th{{text-align:left}}</style></head>
<body><h1>dpclab notebooks report</h1>
<p>Parameters: <code>{html.escape(params)}</code><br>Generated {time.strftime('%Y-%m-%d %H:%M:%S')};
total wall time {total:.1f} s; {sum(r.ok for r in results)}/{len(results)} notebooks ran without error.</p>
<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>error</th></tr>
{''.join(rows)}
</table>
<p>Figures: {fig_links or 'none'}</p>
</body></html>
"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def run_report(only: Sequence[str] | None = None, parameters: dict | None = None, quick: bool = False,
               notebook_dir: str | Path = DEFAULT_NOTEBOOK_DIR, out_dir: str | Path = DEFAULT_OUT_DIR,
               cwd: str | Path = ".", timeout: float | None = None, on_result=None,
               jobs: int = 1) -> list[NotebookResult]:
    """Execute the notebooks (all, or ``only``) headless, write their HTML reports and ``index.html``.

    ``jobs > 1`` runs that many notebooks at once (each in its own kernel). Runs they share (e.g. the CoOp that 01
    trains and 02 builds on) are trained once: ``pipeline.run`` locks each run directory, so the second notebook
    waits and then reuses the finished run.

    ``parameters`` override the notebooks' ``parameters`` cells (keys from
    :data:`dpclab.notebook.PARAMETER_KEYS`); ``interactive`` is False unless given, ``quick`` as passed.
    Notebooks run in ``cwd`` (the repository root) so they share ``runs/``, ``data/`` and ``figures/``.
    """
    params = {"interactive": False, **(parameters or {}), "quick": bool(quick or (parameters or {}).get("quick"))}
    check_parameters(params)
    books = discover(notebook_dir, only)
    out = Path(out_dir)
    results = []
    if jobs <= 1:
        for book in books:
            log.info("running %s", book)
            res = run_notebook(book, out, params, cwd, timeout)
            results.append(res)
            if on_result is not None:
                on_result(res)
    else:
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs) as pool:
            futures = [pool.submit(run_notebook, book, out, params, cwd, timeout) for book in books]
            for fut in as_completed(futures):
                res = fut.result()
                results.append(res)
                if on_result is not None:
                    on_result(res)
        order = {b.stem: i for i, b in enumerate(books)}
        results.sort(key=lambda r: order[r.name])
    write_index(results, out, params, Path(cwd) / "figures")
    return results


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


__all__ = ["strip_outputs", "NotebookResult", "run_report", "run_notebook", "discover", "to_html", "write_index", "parse_value"]
