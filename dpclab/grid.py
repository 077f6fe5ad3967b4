"""The report's runs as a grid of independent jobs, spread over workers: ``python -m dpclab grid``.

:func:`dpclab.plan.report_plan` lists every run the notebooks request, for the notebooks' own parameters (the same
``--quick`` and ``-p key value`` as ``python -m dpclab report``, e.g. ``-p precision amp``); :func:`run_grid` trains
it ahead of the report, which then finds every run finished in ``runs/`` and only evaluates and draws.

Executors (one job = one :func:`dpclab.pipeline.run`):

* ``local`` -- a process pool on this machine, one worker per GPU (``CUDA_VISIBLE_DEVICES`` set per worker), or
  ``workers`` CPU processes;
* ``slurm`` -- submitit (``pip install dpclab[cluster]``), one SLURM job per run, the same function.

Nothing is done twice: finished runs are reused (``if_exists="reuse"``), a run directory is locked while it trains
(two workers asking for the same run: one trains, the other waits and reuses), and runs that need another run
(DPC's step 2 needs its base's step 1) go in a second wave, after the first has finished.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path
from typing import Sequence

from .plan import PlannedRun, report_plan, waves  # noqa: F401 - the plan lives in dpclab.plan
from .source import Source


# ------------------------------------------------------------------------------------------------ execution
def execute(run: PlannedRun, src: Source, threads: int | None = None) -> dict:
    """Train (or reuse) one run; returns its metrics, where it lives, whether it was reused, and the seconds.
    ``threads``: torch CPU threads in this process."""
    import torch

    from .pipeline import Experiment, run as run_pipeline

    if threads:
        torch.set_num_threads(int(threads))
    cfg = run.run_config(src, progress=False)
    t0 = time.perf_counter()
    exp = Experiment.prepare(cfg)
    on_epoch = (lambda epoch, m: exp.evaluate(m)) if run.curve else None
    res = run_pipeline(cfg, experiment=exp, on_epoch=on_epoch)
    if run.curve and res.history and "base" not in res.history[-1]:  # finished earlier without the curve
        from dataclasses import replace

        res = run_pipeline(replace(cfg, if_exists="overwrite"), experiment=exp, on_epoch=on_epoch)
    return {"run": asdict(run), "metrics": res.metrics, "run_dir": str(res.run_dir), "reused": res.reused,
            "seconds": time.perf_counter() - t0, "worker": os.environ.get("CUDA_VISIBLE_DEVICES", str(os.getpid()))}


def _init_worker(gpu_ids) -> None:
    """Pool initializer: take one GPU for this worker process (before CUDA is initialised in it)."""
    if gpu_ids is not None:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpu_ids.get())


def local_executor(workers: int, gpus: Sequence[int] | None = None, start_method: str | None = None) \
        -> ProcessPoolExecutor:
    """``workers`` processes; with ``gpus``, one worker per GPU, each seeing only its own. GPU workers are spawned
    (CUDA cannot be forked); CPU workers use the platform's default (fork on Linux: no re-import of torch)."""
    import multiprocessing as mp

    ctx = mp.get_context(start_method or ("spawn" if gpus else None))
    queue = None
    if gpus:
        workers = len(gpus)
        queue = ctx.Manager().Queue()
        for g in gpus:
            queue.put(g)
    return ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(queue,))


def slurm_executor(folder: str | os.PathLike, **parameters):
    """A submitit executor for SLURM (``cluster="local"``/``"debug"`` in ``parameters`` runs it on this machine).
    ``parameters`` go to ``update_parameters`` (e.g. ``slurm_partition="gpu", gpus_per_node=1, timeout_min=600``)."""
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError("The slurm launcher needs submitit: pip install 'dpclab[cluster]' (or pip install "
                           "submitit).") from err
    cluster = parameters.pop("cluster", None)
    ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster)
    ex.update_parameters(**parameters)
    return ex


def run_grid(runs: Sequence[PlannedRun], src: Source, executor=None, log=print, threads: int | None = None) \
        -> list[dict]:
    """Execute ``runs`` wave by wave on ``executor`` (anything with ``submit(fn, *args)`` returning an object with
    ``result()``: a process pool, a submitit executor); ``None`` runs them here, one after another."""
    results: list[dict] = []
    for i, wave in enumerate(waves(runs)):
        log(f"wave {i + 1}: {len(wave)} run(s)")
        if executor is None:
            done = [execute(r, src, threads) for r in wave]
        else:
            futures = [executor.submit(execute, r, src, threads) for r in wave]
            done = [f.result() for f in futures]
        for d in done:
            r = d["run"]
            log(f"  {r['dataset']:14s} {r['method']:16s} seed {r['seed']}  "
                f"{'reused ' if d['reused'] else 'trained'} {d['seconds']:7.1f} s  worker {d['worker']}")
        results += done
    return results


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    from .options import add_parameter_args, positive_int

    p = argparse.ArgumentParser(prog="python -m dpclab grid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parameter_args(p)
    p.add_argument("--only", nargs="+", metavar="NN", help="the runs of these notebooks only (as report --only)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads per worker")
    p.add_argument("--workers", type=positive_int, default=1, help="local worker processes (CPU)")
    p.add_argument("--gpus", type=int, nargs="+", help="local GPUs, one worker each (e.g. --gpus 0 1 2 3)")
    p.add_argument("--slurm", nargs="*", metavar="KEY=VALUE", help="run every job through submitit/SLURM with "
                   "these parameters (e.g. slurm_partition=gpu gpus_per_node=1 timeout_min=720)")
    p.add_argument("--slurm-folder", default="runs/slurm", help="submitit's log folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--out", help="write the per-run results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    from .notebook import resolve
    from .options import notebook_parameters, parse_options
    from .plan import NOTEBOOKS
    from .source import startup_lines

    args = build_parser().parse_args(argv)
    setup = resolve(notebook_parameters(args))  # the notebooks' own resolution: the same source, scope and runs
    src = setup.source
    notebooks = [nb for nb in NOTEBOOKS if not args.only or any(nb.startswith(o[:2]) for o in args.only)]
    plan = report_plan(setup.scope, notebooks)
    if args.dry_run:
        for r in plan:
            print(r.describe())
        print(f"{len(plan)} runs ({sum(len(w) for w in waves(plan))} trained)")
        return 0
    if src.embedded:  # the world's datasets are generated, as the notebooks do
        from .data.world import ensure_world

        ensure_world(src.data_root, setup.datasets)
    threads = args.threads or (1 if src.embedded and src.device in ("auto", "cpu") and not args.gpus else None)
    if args.slurm is not None:
        executor = slurm_executor(args.slurm_folder, **parse_options(args.slurm, "--slurm"))
    elif args.gpus or args.workers > 1:
        executor = local_executor(args.workers, args.gpus)
    else:
        executor = None
    where = "SLURM" if args.slurm is not None else (f"GPUs {args.gpus}" if args.gpus else f"{args.workers} worker(s)")
    print(f"grid: {len(plan)} runs of notebooks {', '.join(notebooks)} on {where}; {src.label}, {src.shots} shots")
    for line in startup_lines(src, 32 if src.embedded else None):
        print(line)
    t0 = time.perf_counter()
    try:
        results = run_grid(plan, src, executor, threads=threads)
    finally:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown()
    trained = sum(not r["reused"] for r in results)
    print(f"{len(results)} runs ({trained} trained, {len(results) - trained} reused) in "
          f"{time.perf_counter() - t0:.1f} s; `python -m dpclab report` with the same parameters now reuses them")
    if args.out:
        from .io import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
