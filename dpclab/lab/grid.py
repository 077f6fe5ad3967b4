"""The report's runs as a grid of independent jobs, spread over workers: ``python -m dpclab grid``.

:func:`dpclab.lab.plan.report_plan` lists every run the notebooks request, for the notebooks' own parameters (the same
``--quick`` and ``-p key value`` as ``python -m dpclab report``, e.g. ``-p precision amp``). This command trains it
ahead of the report (``dpclab.lab.plan.grid_jobs``), which then finds every run finished in ``runs/`` and only
evaluates and draws. ``--dry-run`` lists the plan: each run with the notebooks that request it.

The runs are executed by :mod:`dpclab.lab.jobs` (one job = one :func:`dpclab.lab.trainjobs.train_run`): here, a local process
pool (``--workers``, ``--gpus``) or SLURM through submitit job arrays (``--slurm``; ``pip install -e ".[cluster]"``),
one line per run as it finishes, failures reported at the end (exit status 1) while the other runs go on.

Nothing is done twice: finished runs are reused (``if_exists="reuse"``), a run directory is locked while it trains
(two workers asking for the same run: one trains, the other waits and reuses), and runs that need another run
(DPC's step 2 needs its base's step 1) start after it has finished.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from dpclab.data.world import ensure_world
from dpclab.io import atomic_write_text
from dpclab.lab.jobs import local_executor, run_jobs, slurm_executor, summary
from dpclab.lab.notebook import resolve
from dpclab.lab.options import add_parameter_args, notebook_parameters, parse_options, positive_int
from dpclab.lab.plan import (NOTEBOOKS, grid_jobs,  # noqa: F401 - the plan and its jobs live in dpclab.lab.plan
                             report_plan, waves)
from dpclab.source import startup_lines


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dpclab grid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parameter_args(p)
    p.add_argument("--only", nargs="+", metavar="NN", help="the runs of these notebooks only (as report --only)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per worker")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes (CPU)")
    p.add_argument("--gpus", type=int, nargs="+", help="local GPUs, one worker each (e.g. --gpus 0 1 2 3)")
    p.add_argument("--slurm", nargs="*", metavar="KEY=VALUE", help="run the jobs through submitit/SLURM as job "
                   "arrays with these parameters (e.g. cpus=8 mem_gb=32 timeout=720 partition=gpu gpus=1 parallel=16; "
                   "or submitit's names: cpus_per_task, timeout_min, slurm_partition...; dpclab.lab.jobs.SLURM_DEFAULTS)")
    p.add_argument("--slurm-folder", default="runs/slurm", help="submitit's log folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--out", help="write the per-run results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup = resolve(notebook_parameters(args))  # the notebooks' own resolution: the same source, scope and runs
    src = setup.source
    notebooks = [nb for nb in NOTEBOOKS if not args.only or any(nb.startswith(o[:2]) for o in args.only)]
    plan = report_plan(setup.scope, notebooks)
    if args.dry_run:
        for r in plan:
            print(r.describe())
        print(f"{len(plan)} runs ({sum(len(w) for w in waves(plan, src))} trained)")
        return 0
    if src.embedded:  # the world's datasets are generated, as the notebooks do

        ensure_world(src.data_root, list(dict.fromkeys(r.dataset for r in plan)))  # every planned dataset
    threads = args.threads or (1 if src.embedded and src.device in ("auto", "cpu") and not args.gpus else None)
    if args.slurm is not None:
        executor = slurm_executor(args.slurm_folder, **parse_options(args.slurm, "--slurm"))
    elif args.gpus or args.workers > 1:
        executor = local_executor(args.workers, args.gpus)
    else:
        executor = None
    where = "SLURM" if args.slurm is not None else (f"GPUs {args.gpus}" if args.gpus else f"{args.workers} worker(s)")
    print(f"grid: {len(plan)} runs of notebooks {', '.join(notebooks)} on {where}; {src.label}, {src.shots} shots")
    for line in startup_lines(src, cpus=getattr(executor, "cpus_each", None)):
        print(line)
    t0 = time.perf_counter()
    try:
        records = run_jobs(grid_jobs(plan, src, threads), executor)
    finally:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown()
    for line in summary(records):
        print(line)
    failed = not all(r.ok for r in records)
    print(f"in {time.perf_counter() - t0:.1f} s; " + ("rerun the same command after fixing the failures (finished "
          "runs are reused)" if failed else "`python -m dpclab report` with the same parameters now reuses them"))
    if args.out:
        atomic_write_text(Path(args.out), json.dumps([asdict(r) for r in records], indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
