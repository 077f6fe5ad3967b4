"""``python -m dpclab report``: the training phase (:mod:`dpclab.lab.report.train`), then the notebooks
(:func:`dpclab.lab.report.run.run_report`), with the console (:class:`dpclab.lab.report.console.ReportConsole`)."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Sequence

from dpclab.lab.report.console import ReportConsole, expected_times, save_timings
from dpclab.lab.report.run import NotebookResult, discover, report_parameters, run_report
from dpclab.lab.report.train import PHASE, planned_notebooks, preflight_plan, train_plan


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


__all__ = ["report_command"]
