"""Run the notebooks headless and publish them: ``python -m dpclab report``.

Each notebook in ``notebooks/`` (``./notebooks`` when it holds notebooks, else those installed with dpclab:
:func:`notebook_source`) is executed with papermill (its ``parameters`` cell overridden the way
``papermill -p key value`` does, plus ``interactive=False`` and ``quick``), the executed copy is stored as
``reports/<name>.ipynb`` and converted to ``reports/<name>.html`` with nbconvert, and ``reports/index.html`` links
every report (:mod:`dpclab.lab.report.index`: the headline, wall time, figures and provenance). A notebook that fails still gets its HTML (papermill marks the failing
cell); the run continues with the next notebook and the whole report exits non-zero, naming the cell.

>>> from dpclab.lab.report.run import run_report
>>> results = run_report(only=["00"], quick=True)
>>> results[0].status, results[0].seconds
"""

from __future__ import annotations

import copy
import logging
import multiprocessing
import os
import queue
import re
import shutil
import tempfile
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dpclab.lab.parameters import check_parameter_names
from dpclab.lab.plan import planned_datasets
from dpclab.lab.report.console import save_timings
from dpclab.lab.report.index import notebook_title, write_index
from dpclab.lab.report.provenance import provenance, write_provenance
from dpclab.resources import notebooks_dir

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
    warnings: list[str] = field(default_factory=list)  # "In [3]: UserWarning: ..." raised while it ran

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"


def notebook_source(folder: str | Path | None = None) -> tuple[Path, str]:
    """The notebooks the report runs, and one line saying which: ``folder`` when given; else ``./notebooks`` when
    it holds dpclab's notebooks (a clone, or a copy made by ``python -m dpclab notebooks``; a folder of other
    notebooks is not run); else the ones shipped with dpclab (:func:`dpclab.resources.notebooks_dir`)."""

    if folder is not None:
        return Path(folder), f"notebooks: {folder} (--notebooks)"
    local, shipped = Path(DEFAULT_NOTEBOOK_DIR), notebooks_dir()
    if any((local / book.name).is_file() for book in shipped.glob("*.ipynb")):
        return local, f"notebooks: ./{DEFAULT_NOTEBOOK_DIR} (found here)"
    return shipped, (f"notebooks: the ones shipped with dpclab ({shipped}); `python -m dpclab notebooks` copies "
                     f"them to ./notebooks for editing")


def copy_notebooks(dest: str | Path = DEFAULT_NOTEBOOK_DIR, overwrite: bool = False) -> list[str]:
    """Copy the notebooks shipped with dpclab into ``dest`` (created); one line per notebook. A notebook already
    there is kept when it differs (your edits), unless ``overwrite``; the last line says what happened."""

    source, dest = notebooks_dir(), Path(dest)
    books = sorted(source.glob("*.ipynb"))
    if not books:
        raise FileNotFoundError(f"No notebooks found in {source}: reinstall dpclab (its wheel carries them).")
    if dest.resolve() == source.resolve():
        raise ValueError(f"{dest} is where the notebooks already are: pass another folder.")
    dest.mkdir(parents=True, exist_ok=True)
    lines, kept = [], []
    for book in books:
        target = dest / book.name
        if target.is_file() and target.read_bytes() == book.read_bytes():
            lines.append(f"{target}: already there")
        elif target.exists() and not overwrite:
            kept.append(target.name)
            lines.append(f"{target}: kept (it differs from the shipped one; --overwrite replaces it)")
        else:
            shutil.copyfile(book, target)
            lines.append(f"{target}: copied")
    run = "python -m dpclab report" + ("" if dest == Path(DEFAULT_NOTEBOOK_DIR) else f" --notebooks {dest}")
    lines.append(f"{len(books) - len(kept)} of {len(books)} notebooks in {dest} as shipped; open them in Jupyter "
                 f"(they run in the folder they are opened in), or `{run}` runs them all")
    return lines


def discover(notebook_dir: str | Path = DEFAULT_NOTEBOOK_DIR, only: Sequence[str] | None = None) -> list[Path]:
    """The notebooks to run, in name order. ``only`` keeps those whose name starts with one of the prefixes
    (``["00", "03"]``) or equals a stem; an ``only`` entry that matches nothing is an error."""
    folder = Path(notebook_dir)
    books = sorted(p for p in folder.glob("*.ipynb") if not p.name.startswith("."))
    if not books:
        raise FileNotFoundError(f"No notebooks found in {folder.resolve()}. Pass --notebooks <folder>, or leave it "
                                f"out to run the notebooks installed with dpclab.")
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
    check_parameter_names(parameters)


def _describe_failure(err: Exception) -> str:
    from papermill.exceptions import PapermillExecutionError

    if isinstance(err, PapermillExecutionError):
        first = next((line for line in err.source.splitlines() if line.strip()), "")
        return (f"In [{err.exec_count}] (cell {err.cell_index} of the executed notebook, starts `{first[:80]}`): "
                f"{err.ename}: {str(err.evalue)[:500]}")
    return f"{type(err).__name__}: {str(err)[:500]}"


TEMPLATES = Path(__file__).parent.parent / "templates"  # dpclab_report: nbconvert's lab template + images' alt text


def to_html(executed: Path, out: Path, nb=None) -> Path:
    """Convert an executed notebook (``nb``: already read from ``executed``) to a standalone HTML page (images
    embedded, with the alt text of their metadata: :mod:`dpclab.lab.alttext`), titled by the notebook
    (:func:`notebook_title`)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4) if nb is None else nb
    nb = copy.deepcopy(nb)
    nb.metadata["title"] = notebook_title(nb, Path(executed).stem)
    exporter = HTMLExporter(template_name="dpclab_report", extra_template_basedirs=[str(TEMPLATES)])
    body, _ = exporter.from_notebook_node(nb)
    out.write_text(body, encoding="utf-8")
    return out


_WARNING_LINE = re.compile(r"^(?:.*?:\d+: )?(?P<text>[A-Za-z_.]*Warning: .*)$")


def notebook_warnings(nb) -> list[str]:
    """Python warnings a notebook's cells printed (their stderr outputs), as ``"In [3]: UserWarning: ..."``, in
    order and without repeats. The report prints them under the notebook's status line."""
    found: list[str] = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") != "stream" or out.get("name") != "stderr":
                continue
            for line in out.get("text", "").splitlines():
                match = _WARNING_LINE.match(line.strip())
                if match:
                    text = f"In [{cell.execution_count}]: {match['text']}"
                    if text not in found:
                        found.append(text)
    return found


def kernel_config(socket_dir: str | Path | None):
    """Kernel manager settings for headless runs: on POSIX the kernel talks over Unix sockets in ``socket_dir`` (a
    private temporary folder) instead of TCP ports on localhost. Nothing is reachable from other users or hosts,
    and ipykernel has nothing to warn about ("Kernel is running over TCP without encryption"). ``None`` (Windows):
    ipykernel's default, TCP."""
    from traitlets.config import Config

    if socket_dir is None:
        return Config()
    return Config({"KernelManager": {"transport": "ipc", "ip": str(Path(socket_dir) / "kernel")}})


def run_notebook(source: Path, out_dir: Path, parameters: dict, cwd: str | Path = ".",
                 timeout: float | None = None) -> NotebookResult:
    """Execute one notebook with papermill, then write its HTML. Never raises for a failing cell.

    ``seconds`` is the notebook's whole wall time in the report: loading papermill, the run and the HTML."""
    t0 = time.perf_counter()
    import nbformat
    import papermill as pm

    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / source.name
    error = ""
    socket_dir = tempfile.mkdtemp(prefix="dpclab-kernel-") if os.name == "posix" else None
    try:
        pm.execute_notebook(str(source), str(executed), parameters=parameters, cwd=str(cwd), progress_bar=False,
                            execution_timeout=timeout, config=kernel_config(socket_dir))
    except Exception as err:  # noqa: BLE001 - a failing notebook is reported, the others still run
        error = _describe_failure(err)
    finally:
        if socket_dir is not None:
            shutil.rmtree(socket_dir, ignore_errors=True)
    page, warned = None, []
    if executed.is_file():
        try:
            nb = nbformat.read(str(executed), as_version=4)
            warned = notebook_warnings(nb)
            page = to_html(executed, out_dir / f"{source.stem}.html", nb)
        except Exception as err:  # noqa: BLE001
            error = error or f"HTML conversion failed: {type(err).__name__}: {err}"
    return NotebookResult(source.stem, source, executed, page, not error, time.perf_counter() - t0, error, warned)


def _run_notebook_signalled(started, source: Path, *args) -> NotebookResult:
    """:func:`run_notebook` in a pool worker, first telling the parent (``started``: a queue) that it began."""
    started.put(source.stem)
    return run_notebook(source, *args)


def report_parameters(parameters: dict | None = None, quick: bool = False) -> dict:
    """The parameters the notebooks get: ``interactive`` False unless given, ``quick`` as passed (or given)."""
    return {"interactive": False, **(parameters or {}), "quick": bool(quick or (parameters or {}).get("quick"))}


def run_report(only: Sequence[str] | None = None, parameters: dict | None = None, quick: bool = False,
               notebook_dir: str | Path = DEFAULT_NOTEBOOK_DIR, out_dir: str | Path = DEFAULT_OUT_DIR,
               cwd: str | Path = ".", timeout: float | None = None, on_result=None,
               jobs: int = 1, on_start=None, order: Sequence[str] = (), started: float | None = None,
               training: dict | None = None) -> list[NotebookResult]:
    """Execute the notebooks (all, or ``only``) headless, write their HTML reports and ``index.html``.

    ``jobs > 1`` runs that many notebooks at once (each in its own kernel). Runs they share (e.g. the CoOp that 01
    trains and 02 builds on) are trained once: ``pipeline.run`` locks each run directory, so the second notebook
    waits and then reuses the finished run. ``order``: notebook names (or prefixes) to start first, in that order
    (e.g. the longest); the others follow in name order. ``started``: the ``time.perf_counter()`` the report
    began at, when something ran before the notebooks (``training``: what :func:`~dpclab.lab.report.command.train_plan`
    returned); the wall time in ``index.html`` counts from then.

    ``parameters`` override the notebooks' ``parameters`` cells (keys from
    :data:`dpclab.lab.parameters.PARAMETER_KEYS`); ``interactive`` is False unless given, ``quick`` as passed.
    Notebooks run in ``cwd`` (the repository root) so they share ``runs/``, ``data/`` and ``figures/``.
    ``on_start(name)`` and ``on_result(result)`` are called as each notebook starts and ends (in this process).
    The wall times are recorded in ``<out_dir>/timings.json`` (:func:`~dpclab.lab.report.console.load_timings`
    reads them back); ``index.html`` and ``provenance.json`` are written after the last notebook.
    """
    t0 = time.perf_counter() if started is None else started
    started_at = time.time() - (time.perf_counter() - t0)
    params = report_parameters(parameters, quick)
    check_parameters(params)
    books = start_order(discover(notebook_dir, only), order)
    out = Path(out_dir)
    results = []
    if jobs <= 1:
        for book in books:
            log.info("running %s", book)
            if on_start is not None:
                on_start(book.stem)
            res = run_notebook(book, out, params, cwd, timeout)
            results.append(res)
            if on_result is not None:
                on_result(res)
    else:
        def drain(started) -> None:
            while True:
                try:
                    name = started.get_nowait()
                except queue.Empty:
                    return
                if on_start is not None:
                    on_start(name)

        with multiprocessing.Manager() as manager, ProcessPoolExecutor(max_workers=jobs) as pool:
            started = manager.Queue()
            waiting = {pool.submit(_run_notebook_signalled, started, book, out, params, cwd, timeout)
                       for book in books}
            while waiting:
                done, waiting = wait(waiting, timeout=0.25, return_when=FIRST_COMPLETED)
                drain(started)
                for fut in done:
                    res = fut.result()
                    results.append(res)
                    if on_result is not None:
                        on_result(res)
    names = sorted(b.stem for b in books)
    results.sort(key=lambda r: names.index(r.name))
    wall = time.perf_counter() - t0
    prov = provenance(params, *planned_datasets(params), cwd=cwd, wall_seconds=wall, training=training)
    write_provenance(prov, out)
    write_index(results, out, params, Path(cwd) / "figures", wall_seconds=wall, provenance=prov,
                since=started_at, training=training)
    save_timings(out, params, {r.name: r.seconds for r in results})
    return results


def start_order(books: Sequence[Path], first: Sequence[str] = ()) -> list[Path]:
    """``books`` with those named (or prefixed) in ``first`` moved to the front, in ``first``'s order."""
    front = [b for key in first for b in books if b.stem == key or b.stem.startswith(key)]
    front = list(dict.fromkeys(front))
    return front + [b for b in books if b not in front]


__all__ = ["NotebookResult", "notebook_source", "copy_notebooks", "run_report", "run_notebook", "discover", "to_html",
           "notebook_title", "notebook_warnings", "kernel_config", "report_parameters", "check_parameters", "start_order"]
