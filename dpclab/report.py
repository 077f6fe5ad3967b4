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
import heapq
import html
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence, TextIO

log = logging.getLogger(__name__)

DEFAULT_NOTEBOOK_DIR = "notebooks"
DEFAULT_OUT_DIR = "reports"
TIMINGS_FILE = "timings.json"  # per-notebook wall times of the last run, per parameter set (in the output folder)


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


TEMPLATES = Path(__file__).parent / "templates"  # dpclab_report: nbconvert's lab template + images' alt text


def to_html(executed: Path, out: Path, nb=None) -> Path:
    """Convert an executed notebook (``nb``: already read from ``executed``) to a standalone HTML page (images
    embedded, with the alt text of their metadata: :mod:`dpclab.alttext`)."""
    import nbformat
    from nbconvert import HTMLExporter

    nb = nbformat.read(str(executed), as_version=4) if nb is None else nb
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


# ------------------------------------------------------------------------------ timings and the running line
def parameters_key(parameters: dict) -> str:
    """The key under which a parameter set's timings are stored: its sorted JSON."""
    return json.dumps(parameters, sort_keys=True, default=str)


def load_timings(out_dir: str | Path, parameters: dict) -> dict[str, float]:
    """Per-notebook wall times (s) of the last run with these exact ``parameters``; {} when there is none."""
    path = Path(out_dir) / TIMINGS_FILE
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as err:
        log.warning("ignoring unreadable %s (%s); estimates start over", path, err)
        return {}
    entry = table.get(parameters_key(parameters), {}) if isinstance(table, dict) else {}
    return {name: float(sec) for name, sec in entry.get("seconds", {}).items()}


def save_timings(out_dir: str | Path, parameters: dict, results: Sequence[NotebookResult]) -> Path:
    """Record the wall times of the notebooks that ran (others keep their last time), atomically."""
    from .io import atomic_write_text

    path = Path(out_dir) / TIMINGS_FILE
    try:
        table = json.loads(path.read_text(encoding="utf-8"))
        table = table if isinstance(table, dict) else {}
    except (OSError, ValueError):
        table = {}
    key = parameters_key(parameters)
    seconds = {**table.get(key, {}).get("seconds", {}), **{r.name: round(r.seconds, 1) for r in results}}
    table[key] = {"parameters": parameters, "seconds": dict(sorted(seconds.items())),
                  "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return path


def estimate_remaining(running: dict[str, float], pending: Sequence[str], last: dict[str, float],
                       jobs: int = 1) -> float | None:
    """Seconds until the run ends, by the last run's times: each running notebook (name -> seconds so far) needs
    what it took last time minus its elapsed time (at least 0); pending notebooks go, in order, to whichever of the
    ``jobs`` workers frees first. None when a notebook has no time from the last run."""
    if any(name not in last for name in [*running, *pending]):
        return None
    workers = [max(last[name] - elapsed, 0.0) for name, elapsed in running.items()]
    workers += [0.0] * max(jobs - len(workers), 0)
    heapq.heapify(workers)
    for name in pending:
        heapq.heappush(workers, heapq.heappop(workers) + last[name])
    return max(workers, default=0.0)


def _clock(seconds: float) -> str:
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def status_line(result: NotebookResult, last: float | None = None) -> str:
    """One line per finished notebook (plus one indented line per warning it raised)."""
    was = f"  (last run {last:.1f} s)" if last is not None else ""
    lines = [f"{result.name:32s} {result.status:7s} {result.seconds:7.1f} s{was}"
             + (f"  {result.error}" if result.error else "")]
    lines += [f"    warning: {w}" for w in result.warnings]
    return "\n".join(lines)


class ReportConsole:
    """The report's console output: a status line per finished notebook and a running line.

    The running line names the notebooks in progress with their elapsed time (and last run's time), the total
    elapsed time and an estimate of the time left from the last run with the same parameters
    (:func:`estimate_remaining`). On a terminal it is redrawn in place every ``tick`` seconds; elsewhere (logs, CI)
    it is printed as a plain line every ``heartbeat`` seconds, so logs get no per-second lines.

    >>> with ReportConsole(names, load_timings("reports", params), jobs=2) as console:
    ...     run_report(..., on_start=console.started, on_result=console.finished)
    """

    def __init__(self, names: Sequence[str], last: dict[str, float], jobs: int = 1, stream: TextIO | None = None,
                 tick: float = 1.0, heartbeat: float = 60.0, clock: Callable[[], float] = time.monotonic):
        import sys

        self.pending = list(names)
        self.last, self.jobs, self.clock = dict(last), max(1, jobs), clock
        self.stream = sys.stdout if stream is None else stream
        self.live = self.stream.isatty()
        self.interval = tick if self.live else heartbeat
        self.t0 = clock()
        self.running: dict[str, float] = {}  # name -> start time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = False

    def line(self) -> str:
        """The running line, e.g. ``running 06_reproducibility_report 3:10/~9:40 · 12:05 elapsed, ~4:20 left``."""
        now = self.clock()
        elapsed = {name: now - t for name, t in self.running.items()}
        parts = [f"{name} {_clock(sec)}" + (f"/~{_clock(self.last[name])}" if name in self.last else "")
                 for name, sec in elapsed.items()]
        left = estimate_remaining(elapsed, self.pending, self.last, self.jobs)
        if left is None:
            note = "no estimate yet (no earlier run with these parameters)"
        elif left < 0.5 and elapsed:
            note = "taking longer than the last run"
        else:
            note = f"~{_clock(left)} left (by the last run)"
        tail = f"{_clock(now - self.t0)} elapsed, {note}"
        return ("running " + ", ".join(parts) if parts else "waiting") + " · " + tail

    def _write(self, text: str) -> None:
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self._drawn = False
            if text:
                self.stream.write(text + "\n")
            if self.live and self.running:
                self.stream.write(self.line())
                self._drawn = True
            self.stream.flush()

    def started(self, name: str) -> None:
        self.running[name] = self.clock()
        if name in self.pending:
            self.pending.remove(name)
        self._write("")

    def finished(self, result: NotebookResult) -> None:
        self.running.pop(result.name, None)
        if result.name in self.pending:
            self.pending.remove(result.name)
        self._write(status_line(result, self.last.get(result.name)))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.running:
                self._write("" if self.live else self.line())

    def __enter__(self) -> "ReportConsole":
        self._thread = threading.Thread(target=self._loop, name="report-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.running.clear()
        self._write("")


def write_index(results: Sequence[NotebookResult], out_dir: Path, parameters: dict,
                figures_dir: str | Path = "figures") -> Path:
    """``reports/index.html``: one row per notebook with a link, status, wall time and the failing cell."""
    rows = []
    for r in results:
        link = f'<a href="{html.escape(r.html.name)}">{html.escape(r.name)}</a>' if r.html else html.escape(r.name)
        colour = "#1a7f37" if r.ok else "#cf222e"
        rows.append(f"<tr><td>{link}</td><td style='color:{colour};font-weight:bold'>{r.status}</td>"
                    f"<td style='text-align:right'>{r.seconds:.1f} s</td><td>{html.escape(r.error)}"
                    + "".join(f"<div>warning: {html.escape(w)}</div>" for w in r.warnings) + "</td></tr>")
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
<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>error / warnings</th></tr>
{''.join(rows)}
</table>
<p>Figures: {fig_links or 'none'}</p>
</body></html>
"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def report_parameters(parameters: dict | None = None, quick: bool = False) -> dict:
    """The parameters the notebooks get: ``interactive`` False unless given, ``quick`` as passed (or given)."""
    return {"interactive": False, **(parameters or {}), "quick": bool(quick or (parameters or {}).get("quick"))}


def run_report(only: Sequence[str] | None = None, parameters: dict | None = None, quick: bool = False,
               notebook_dir: str | Path = DEFAULT_NOTEBOOK_DIR, out_dir: str | Path = DEFAULT_OUT_DIR,
               cwd: str | Path = ".", timeout: float | None = None, on_result=None,
               jobs: int = 1, on_start=None) -> list[NotebookResult]:
    """Execute the notebooks (all, or ``only``) headless, write their HTML reports and ``index.html``.

    ``jobs > 1`` runs that many notebooks at once (each in its own kernel). Runs they share (e.g. the CoOp that 01
    trains and 02 builds on) are trained once: ``pipeline.run`` locks each run directory, so the second notebook
    waits and then reuses the finished run.

    ``parameters`` override the notebooks' ``parameters`` cells (keys from
    :data:`dpclab.notebook.PARAMETER_KEYS`); ``interactive`` is False unless given, ``quick`` as passed.
    Notebooks run in ``cwd`` (the repository root) so they share ``runs/``, ``data/`` and ``figures/``.
    ``on_start(name)`` and ``on_result(result)`` are called as each notebook starts and ends (in this process).
    The wall times are recorded in ``<out_dir>/timings.json`` (:func:`load_timings` reads them back).
    """
    params = report_parameters(parameters, quick)
    check_parameters(params)
    books = discover(notebook_dir, only)
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
        import multiprocessing
        import queue
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

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
        order = {b.stem: i for i, b in enumerate(books)}
        results.sort(key=lambda r: order[r.name])
    write_index(results, out, params, Path(cwd) / "figures")
    save_timings(out, params, results)
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


__all__ = ["strip_outputs", "NotebookResult", "run_report", "run_notebook", "discover", "to_html", "write_index",
           "parse_value", "notebook_warnings", "kernel_config", "report_parameters", "load_timings", "save_timings",
           "estimate_remaining", "status_line", "ReportConsole"]
