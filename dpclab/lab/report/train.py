"""The report's training phase: every run the notebooks will request (:func:`dpclab.lab.plan.report_plan`), trained
first over the local workers (:func:`dpclab.lab.jobs.run_jobs`), so that both cores stay busy on the longest work
(notebook 06's grid) and no run is trained twice; the notebooks then only reuse finished runs.

Without it the notebooks train their own runs as they go: 06, the longest, trains its 42 runs in one kernel while
the other core idles once 00-05 are done."""

from __future__ import annotations

import time
from typing import Callable, Sequence

from dpclab.data.world import ensure_world
from dpclab.lab.jobs import local_executor, run_jobs, summary
from dpclab.lab.notebook import resolve
from dpclab.lab.plan import NOTEBOOKS, grid_jobs, report_plan
from dpclab.lab.preflight import preflight
from dpclab.lab.trainjobs import with_weights

#: the training phase's name in the console and in ``timings.json``
PHASE = "train"


def planned_notebooks(names: Sequence[str]) -> list[str]:
    """The plan's notebook numbers (``"00"``..``"06"``) among the notebook file stems ``names``."""
    return [nb for nb in NOTEBOOKS if any(name.startswith(nb + "_") or name == nb for name in names)]


def preflight_plan(parameters: dict, names: Sequence[str], log: Callable[[str], None] = print) -> dict[str, str]:
    """The report's pre-flight (:mod:`dpclab.lab.preflight`), before any notebook or training job starts: every
    dataset the plan's notebooks use readable from the data root, every pretrained tag resolved to its local file
    (returned, ``{"model/tag": file}``; a tag without one is said, the runs then download it). Raises a one-line
    :class:`~dpclab.lab.preflight.PreflightError` naming the fix. Nothing to check when the plan is unavailable."""

    notebooks = planned_notebooks(names)
    if not notebooks:
        return {}
    setup = resolve(parameters)
    src = setup.source
    plan = report_plan(setup.scope, notebooks)
    if src.embedded:  # the world's datasets are generated, as the notebooks do

        ensure_world(src.data_root, list(dict.fromkeys(r.dataset for r in plan)))
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
    setup = resolve(parameters)
    src = setup.source
    plan = report_plan(setup.scope, notebooks)
    if src.embedded:  # the world's datasets are generated, as the notebooks do (every planned one: 06 has its own)

        ensure_world(src.data_root, list(dict.fromkeys(r.dataset for r in plan)))
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


__all__ = ["train_plan", "preflight_plan", "planned_notebooks", "PHASE"]
