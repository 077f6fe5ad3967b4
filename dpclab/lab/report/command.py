"""``python -m dpclab report``: the pre-flight, the training phase, then the notebooks
(:func:`dpclab.lab.report.run.run_report`), with the console (:class:`dpclab.lab.report.console.ReportConsole`).

The training phase: every run the notebooks will request (:func:`dpclab.lab.plan.report_plan`), trained first over the
local workers (:func:`dpclab.lab.jobs.run_jobs`), so that both cores stay busy on the longest work (notebook 06's grid)
and no run is trained twice; the notebooks then only reuse finished runs. Without it the notebooks train their own runs
as they go: 06, the longest, trains its runs in one kernel while the other core idles once 00-05 are done."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable, Sequence

from dpclab.data.world import ensure_world
from dpclab.lab.jobs import local_executor, run_jobs, summary
from dpclab.lab.plan import NOTEBOOKS, report_plan
from dpclab.lab.preflight import preflight
from dpclab.lab.report.console import ReportConsole, expected_times, save_timings
from dpclab.lab.report.run import NotebookResult, discover, report_parameters, run_report
from dpclab.lab.trainjobs import grid_jobs, with_weights
from dpclab.source import Source

#: the training phase's name in the console and in ``timings.json``
PHASE = "train"


def planned_notebooks(names: Sequence[str]) -> list[str]:
    """The plan's notebook numbers (``"00"``..``"06"``) among the notebook file stems ``names``."""
    return [nb for nb in NOTEBOOKS if any(name.startswith(nb + "_") or name == nb for name in names)]


def _source_and_plan(parameters: dict, notebooks: Sequence[str]) -> tuple[Source, list]:
    """The notebooks' source and the runs ``notebooks`` plan under ``parameters``; on the embedded backend every planned
    dataset of the world is written first when missing, as the notebooks do (06 has its own)."""
    src = Source.from_parameters(parameters)
    plan = report_plan(parameters, notebooks)
    if src.embedded:
        ensure_world(src.data_root, list(dict.fromkeys(r.dataset for r in plan)))
    return src, plan


def preflight_plan(parameters: dict, names: Sequence[str], log: Callable[[str], None] = print) -> dict[str, str]:
    """The report's pre-flight (:mod:`dpclab.lab.preflight`), before any notebook or training job starts: every
    dataset the plan's notebooks use readable from the data root, every pretrained tag resolved to its local file
    (returned, ``{"model/tag": file}``; a tag without one is said, the runs then download it). Raises a one-line
    :class:`~dpclab.lab.preflight.PreflightError` naming the fix. Nothing to check when the plan is unavailable."""

    notebooks = planned_notebooks(names)
    if not notebooks:
        return {}
    src, plan = _source_and_plan(parameters, notebooks)
    checked = preflight(src, [r.run_config(src, progress=False) for r in plan])
    for line in checked.lines:
        log(f"pre-flight: {line}")
    return checked.weights


def train_plan(parameters: dict, names: Sequence[str], workers: int = 2,
               log: Callable[[str], None] = print, weights: dict[str, str] | None = None) -> dict:
    """Train the runs of the notebooks ``names`` (file stems) under the notebooks' ``parameters`` over ``workers``
    local processes (one torch thread each on the embedded model's CPU). Finished runs are reused. Never raises for
    a failed run: a notebook that needs it trains it (or fails and says why). ``weights``: the local weights files
    :func:`preflight_plan` resolved, handed to the jobs. Returns counts and the wall time."""

    notebooks = planned_notebooks(names)
    if not notebooks:
        return {"jobs": 0, "seconds": 0.0}
    t0 = time.perf_counter()
    src, plan = _source_and_plan(parameters, notebooks)
    threads = 1 if src.embedded and src.device in ("auto", "cpu") else None
    jobs = with_weights(grid_jobs(plan, src, threads), weights or {})
    if not jobs:
        return {"jobs": 0, "seconds": time.perf_counter() - t0}
    log(f"training the {len(jobs)} runs of notebooks {', '.join(notebooks)} on {workers} worker(s) first "
        f"(the notebooks then reuse them)")
    executor = local_executor(workers, device=src.device) if workers > 1 else None  # spawned where CUDA may be used
    try:
        records = run_jobs(jobs, executor, log=log)
    finally:
        if executor is not None:
            executor.shutdown()
    lines = summary(records)
    for line in lines[1:]:
        log(line)
    return {"jobs": len(records), "ok": sum(r.ok for r in records), "seconds": time.perf_counter() - t0,
            "summary": lines[0]}


def report_command(parameters: dict, quick: bool = False, only: Sequence[str] | None = None,
                   notebook_dir: str | Path = "notebooks", out_dir: str | Path = "reports",
                   timeout: float | None = None, jobs: int = 1, train: bool = True) -> int:
    """Run the report as the CLI does; the exit status (1 when a notebook failed).

    With ``train``, the runs the notebooks will request are trained first over ``jobs`` workers (when
    :mod:`dpclab.lab.plan` knows the notebooks); the notebooks then run ``jobs`` at a time, the longest first."""

    t0 = time.perf_counter()
    names = [p.stem for p in discover(notebook_dir, only)]
    params = report_parameters(parameters, quick)
    weights = preflight_plan(params, names)  # data and weights checked before anything starts (one-line error)
    phase = [PHASE] if train and planned_notebooks(names) else []
    last, source = expected_times(out_dir, params)
    first = sorted(names, key=lambda n: -last.get(n, 0.0))  # the longest first: the others fill the free worker
    training = None
    with ReportConsole(phase + first, last, source, jobs, serial=phase) as console:
        if phase:
            console.started(PHASE)
            try:
                training = train_plan(params, names, workers=jobs, log=console.note, weights=weights)
                error = "" if training.get("ok", 0) == training["jobs"] else \
                    f"{training['summary']}; the notebooks that need the failed runs train them again"
            except Exception as err:  # noqa: BLE001 - the notebooks still train what they need, and say so
                training, error = None, f"training ahead failed ({type(err).__name__}: {err}); the notebooks train"
            seconds = time.perf_counter() - t0
            console.finished(NotebookResult(PHASE, Path(), Path(), None, not error, seconds, error))
            save_timings(out_dir, params, {PHASE: seconds})
        results = run_report(only=only, parameters=parameters, quick=quick, notebook_dir=notebook_dir,
                             out_dir=out_dir, timeout=timeout, on_start=console.started, on_result=console.finished,
                             jobs=jobs, order=first, started=t0, training=training)
    failed = [r for r in results if not r.ok]
    wall = time.perf_counter() - t0
    print(f"{len(results) - len(failed)}/{len(results)} notebooks ok in {wall:.1f} s wall ({jobs} at a time); "
          f"reports in {out_dir}/index.html")
    for r in failed:
        print(f"FAILED {r.name}: {r.error}  (see {r.html or r.executed})", file=sys.stderr)
    return 1 if failed else 0


__all__ = ["report_command", "train_plan", "preflight_plan", "planned_notebooks", "PHASE"]
