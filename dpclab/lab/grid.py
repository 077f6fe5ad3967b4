"""The report's runs as a grid of independent jobs, spread over workers: ``python -m dpclab grid``.

:func:`dpclab.lab.plan.report_plan` lists every run the notebooks request, for the notebooks' own parameters (the same
``--quick`` and ``-p key value`` as ``python -m dpclab report``, e.g. ``-p precision amp``). This command trains it
ahead of the report (``dpclab.lab.trainjobs.grid_jobs``), which then finds every run finished in ``runs/`` and only
evaluates and draws. ``--dry-run`` lists the plan: each run with the notebooks that request it.

The runs are executed by :mod:`dpclab.lab.jobs` (one job = one :func:`dpclab.lab.trainjobs.train_run`): here, a local process
pool (``--workers``, ``--gpus``) or SLURM through submitit job arrays (``--slurm``; ``pip install -e ".[cluster]"``),
one line per run as it finishes, failures reported at the end (exit status 1) while the other runs go on.

Nothing is done twice: finished runs are reused (``if_exists="reuse"``), a run directory is locked while it trains
(two workers asking for the same run: one trains, the other waits and reuses), and runs that need another run
(DPC's step 2 needs its base's step 1) start after it has finished.

Before anything starts or is submitted, a pre-flight (:mod:`dpclab.lab.preflight`) reads every planned dataset from
the data root and resolves every pretrained tag to its local file, handed to the jobs (``--slurm`` refuses a tag
with no local copy unless ``--allow-download``). With ``--slurm``, ``-p device cuda`` is the jobs' device (this
host's is neither used nor checked); the start-up lines say what each job asks for, and every job writes its own to
its log. The driver survives: refused submissions are retried with backoff, then recorded as failed while the rest
goes on; its state (``runs/grid-state.json``: job ids, arrays, finished and failed runs) lets the same command,
run again after a crash or a logout, re-attach to the SLURM jobs still queued or running and submit only what is
missing.
"""

from __future__ import annotations

import argparse
import json
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from dpclab.data.world import ensure_world
from dpclab.io import atomic_write_text
from dpclab.lab.jobs import GridState, local_executor, run_jobs, slurm_executor, slurm_request, summary
from dpclab.lab.options import add_parameter_args, notebook_parameters, parse_options, positive_int
from dpclab.lab.plan import NOTEBOOKS, report_plan
from dpclab.lab.preflight import preflight
from dpclab.lab.trainjobs import grid_jobs, waves, with_weights
from dpclab.source import Source, startup_lines

#: the driver's state (job ids, arrays, finished and failed runs: dpclab.lab.jobs.GridState), under the runs folder
STATE_FILE = "grid-state.json"


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
    p.add_argument("--allow-download", action="store_true", help="let SLURM jobs download pretrained weights a tag "
                   "names when this host has no local copy (only if the compute nodes have internet)")
    p.add_argument("--no-preflight", action="store_true", help="skip the checks before the jobs start (data readable "
                   "from the data root, weights resolved to a local file): jobs then fail one by one")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--out", help="write the per-run results as JSON here")
    return p


def slurm_lines(request: dict) -> list[str]:
    """What each SLURM job asks for, and what this host is (it only submits and follows the jobs)."""

    r = request
    part = r.get("slurm_partition", "the default partition")
    return [f"jobs: SLURM job arrays on {part}, each {r.get('gpus_per_node', 0)} GPU(s), {r.get('cpus_per_task')} "
            f"CPUs, {r.get('mem_gb')} GB, {r.get('timeout_min')} min (requeued at the limit)",
            f"this host: {socket.gethostname()} submits and follows the jobs (its own device is not used or checked)"]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    params = notebook_parameters(args)  # resolved as the notebooks resolve them: the same source, scope and runs
    src = Source.from_parameters(params)
    notebooks = [nb for nb in NOTEBOOKS if not args.only or any(nb.startswith(o[:2]) for o in args.only)]
    plan = report_plan(params, notebooks)
    if args.dry_run:
        for r in plan:
            print(r.describe())
        print(f"{len(plan)} runs ({sum(len(w) for w in waves(plan, src))} trained)")
        return 0
    if src.embedded:  # the world's datasets are generated, as the notebooks do
        ensure_world(src.data_root, list(dict.fromkeys(r.dataset for r in plan)))  # every planned dataset
    slurm = parse_options(args.slurm, "--slurm") if args.slurm is not None else None
    weights = {}
    if not args.no_preflight:  # before any job starts or is submitted: the data and the weights, as the jobs see them
        checked = preflight(src, [r.run_config(src, progress=False) for r in plan], remote=slurm is not None,
                            allow_download=args.allow_download)
        weights = checked.weights
        for line in checked.lines:
            print(f"pre-flight: {line}")
    threads = args.threads or (1 if src.embedded and src.device in ("auto", "cpu") and not args.gpus else None)
    if slurm is not None:
        request = slurm_request(**{k: v for k, v in slurm.items() if k != "cluster"})
        executor = slurm_executor(args.slurm_folder, **slurm)
    elif args.gpus or args.workers > 1:
        executor = local_executor(args.workers, args.gpus, device=src.device)
    else:
        executor = None
    where = "SLURM" if slurm is not None else (f"GPUs {args.gpus}" if args.gpus else f"{args.workers} worker(s)")
    print(f"grid: {len(plan)} runs of notebooks {', '.join(notebooks)} on {where}; {src.label}, {src.shots} shots")
    if slurm is not None:  # the jobs' device and CPUs, not this login node's
        lines = slurm_lines(request) + startup_lines(src, cpus=int(request["cpus_per_task"]), remote=True)
    else:
        lines = startup_lines(src, cpus=getattr(executor, "cpus_each", None))
    for line in lines:
        print(line, flush=True)
    state = GridState(Path(src.runs_dir) / STATE_FILE)
    print(f"grid state: {state.path} (run the same command again to re-attach, or after a failure to run only what "
          f"is missing)", flush=True)
    t0 = time.perf_counter()
    try:
        with state.driving():  # one driver per runs folder
            records = run_jobs(with_weights(grid_jobs(plan, src, threads), weights), executor, state=state)
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
