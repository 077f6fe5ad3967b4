"""The report's runs as a grid of independent jobs, spread over workers: ``python -m dpclab grid``.

:func:`report_plan` lists every training run the notebooks do (dataset x method x seed, DPC ablations, the oracle,
which runs evaluate after every epoch), deduplicated the way the notebooks reuse each other's runs. The cost
estimate (``dpclab.estimate``) prices this plan; :func:`run_grid` executes it ahead of ``python -m dpclab report``,
which then finds every run finished in ``runs/`` and only evaluates and draws.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Sequence

#: plug-in -> the bases the reproducibility notebook (06) runs it on (the papers' tables)
REPORT_PLUGIN_BASES = {"dpc": ("coop", "maple", "promptsrc"), "dept": ("coop", "cocoop", "kgcoop", "maple")}
#: notebook 02's DPC ablation rows (method_cfg of coop+dpc); the full-DPC row is the default run
DPC_ABLATIONS = {
    "two-step training only": {"loss": "ce", "negatives": "random", "omega_b": 1.0, "decouple": False},
    "+ DHNO": {"omega_b": 1.0, "decouple": False},
    "+ DHNO + weighting": {"decouple": False},
    "weighting + decoupling, no DHNO": {"loss": "ce", "negatives": "random"},
}


@dataclass(frozen=True)
class PlannedRun:
    """One run of the report. ``curve``: evaluated on base and new test data after every epoch (notebooks 01, 02)."""

    notebook: str
    dataset: str
    method: str
    seed: int
    method_cfg: tuple = ()  # sorted (key, value) pairs
    train_classes: str = "base"
    curve: bool = False

    @property
    def key(self) -> tuple:
        return (self.dataset, self.method, self.seed, self.method_cfg, self.train_classes)


def report_methods() -> list[str]:
    """The methods of notebook 06: every method, then each plug-in on the papers' bases."""
    from .methods import METHODS, PLUGINS

    return list(METHODS) + [f"{b}+{p}" for p, bases in REPORT_PLUGIN_BASES.items() if p in PLUGINS
                            for b in bases if b in METHODS]


def report_plan(datasets: Sequence[str], seeds: Sequence[int], methods: Sequence[str] | None = None) -> list[PlannedRun]:
    """Every run of the notebooks 00-06 (the first dataset for 00-05, all of them for 06), first request first.

    A run asked for twice (02 reuses 01's CoOp, 06 reuses 02's DPC...) is listed once; when any request evaluates
    after every epoch, the listed run does."""
    if not datasets or not seeds:
        raise ValueError("report_plan needs at least one dataset and one seed.")
    main, s0 = datasets[0], seeds[0]
    wanted: list[PlannedRun] = []
    wanted += [PlannedRun("00", main, "zeroshot", s) for s in seeds]
    wanted += [PlannedRun("01", main, m, s0, curve=True) for m in ("coop", "kgcoop")]
    wanted += [PlannedRun("01", main, m, s) for m in ("coop", "kgcoop") for s in seeds]
    wanted += [PlannedRun("02", main, "coop", s0, curve=True), PlannedRun("02", main, "coop+dpc", s0, curve=True)]
    wanted += [PlannedRun("02", main, "coop+dpc", s0, tuple(sorted(cfg.items()))) for cfg in DPC_ABLATIONS.values()]
    wanted += [PlannedRun("03", main, "coop+dpc", s0)]
    wanted += [PlannedRun("04", main, m, s0) for m in ("zeroshot", "coop", "coop+dept", "coop+dpc")]
    wanted += [PlannedRun("04", main, "coop", s0, train_classes="all")]
    wanted += [PlannedRun("05", main, "coop+dpc", s0)]
    wanted += [PlannedRun("06", ds, m, s) for ds in datasets for m in (methods or report_methods()) for s in seeds]
    plan: dict[tuple, PlannedRun] = {}
    for r in wanted:
        if r.key not in plan:
            plan[r.key] = r
        elif r.curve and not plan[r.key].curve:
            first = plan[r.key]
            plan[r.key] = PlannedRun(first.notebook, first.dataset, first.method, first.seed, first.method_cfg,
                                     first.train_classes, curve=True)
    return list(plan.values())


def waves(runs: Sequence[PlannedRun]) -> list[list[PlannedRun]]:
    """[runs that need no other run, runs that reuse another run's result (two-step plug-ins)]; zero-shot
    evaluations are left out (nothing to train or store)."""
    from .methods import PLUGINS, get_method, parse_method

    first, second = [], []
    for r in runs:
        if not get_method(r.method).trainable:
            continue
        plugin = parse_method(r.method)[1]
        (second if plugin is not None and PLUGINS[plugin].two_step else first).append(r)
    return [w for w in (first, second) if w]


# ------------------------------------------------------------------------------------------------ execution
@dataclass
class GridSource:
    """What every run shares: the notebooks' parameters (see ``dpclab.notebook.setup``)."""

    model: str = "dpclab-tiny"
    pretrained: str = "embedded"
    data_root: str = "data/world"
    shots: int = 16
    epochs: int | None = None  # None: each method's default epochs (as the report without -p epochs)
    device: str = "auto"
    cache_dir: str = "data/cache"
    runs_dir: str = "runs"
    threads: int | None = None  # torch CPU threads per worker
    train: dict = field(default_factory=dict)  # extra TrainConfig overrides (e.g. num_workers)


def run_config(run: PlannedRun, src: GridSource):
    """The :class:`~dpclab.pipeline.RunConfig` a notebook builds for ``run`` (same run directory, so the report
    reuses it)."""
    from .methods import PLUGINS, get_method, parse_method
    from .pipeline import RunConfig

    train, base_train = dict(src.train), {}
    base, plugin = parse_method(run.method)
    if src.epochs is not None and get_method(run.method).trainable:
        train["epochs"] = int(src.epochs)
        if plugin is not None and PLUGINS[plugin].two_step:
            base_train["epochs"] = int(src.epochs)
    return RunConfig(method=run.method, dataset=run.dataset, data_root=src.data_root, model=src.model,
                     pretrained=str(src.pretrained), shots=src.shots, seed=run.seed, device=src.device,
                     cache_dir=src.cache_dir, runs_dir=src.runs_dir,
                     results=None if run.train_classes == "all" else str(Path(src.runs_dir) / "results.csv"),
                     train=train, base_train=base_train, method_cfg=dict(run.method_cfg),
                     train_classes=run.train_classes, progress=False)


def execute(run: PlannedRun, src: GridSource) -> dict:
    """Train (or reuse) one run; returns its metrics, where it lives, whether it was reused, and the seconds."""
    import torch

    from .pipeline import Experiment, run as run_pipeline

    if src.threads:
        torch.set_num_threads(int(src.threads))
    cfg = run_config(run, src)
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


def run_grid(runs: Sequence[PlannedRun], src: GridSource, executor=None, log=print) -> list[dict]:
    """Execute ``runs`` wave by wave on ``executor`` (anything with ``submit(fn, *args)`` returning an object with
    ``result()``: a process pool, a submitit executor); ``None`` runs them here, one after another."""
    results: list[dict] = []
    for i, wave in enumerate(waves(runs)):
        log(f"wave {i + 1}: {len(wave)} run(s)")
        if executor is None:
            done = [execute(r, src) for r in wave]
        else:
            futures = [executor.submit(execute, r, src) for r in wave]
            done = [f.result() for f in futures]
        for d in done:
            r = d["run"]
            log(f"  {r['dataset']:14s} {r['method']:16s} seed {r['seed']}  "
                f"{'reused ' if d['reused'] else 'trained'} {d['seconds']:7.1f} s  worker {d['worker']}")
        results += done
    return results


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dpclab grid", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--datasets", nargs="+", default=["world_tint"], help="the report's datasets (the first one is "
                   "the notebooks' main dataset)")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--methods", nargs="+", help="notebook 06's methods (default: all, as the notebook)")
    p.add_argument("--model", default="dpclab-tiny")
    p.add_argument("--pretrained", default="embedded")
    p.add_argument("--data-root", default="data/world")
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, help="every method's epochs (as report -p epochs N); default SPEC")
    p.add_argument("--device", default="auto")
    p.add_argument("--cache-dir", default="data/cache")
    p.add_argument("--runs-dir", default="runs")
    p.add_argument("--threads", type=int, help="torch CPU threads per worker")
    p.add_argument("--workers", type=int, default=1, help="local worker processes (CPU)")
    p.add_argument("--gpus", type=int, nargs="+", help="local GPUs, one worker each (e.g. --gpus 0 1 2 3)")
    p.add_argument("--slurm", nargs="*", metavar="KEY=VALUE", help="run every job through submitit/SLURM with "
                   "these parameters (e.g. slurm_partition=gpu gpus_per_node=1 timeout_min=720)")
    p.add_argument("--slurm-folder", default="runs/slurm", help="submitit's log folder")
    p.add_argument("--dry-run", action="store_true", help="print the plan and stop")
    p.add_argument("--out", help="write the per-run results as JSON here")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    plan = report_plan(args.datasets, args.seeds, args.methods)
    if args.dry_run:
        for r in plan:
            extra = f" {dict(r.method_cfg)}" if r.method_cfg else ""
            print(f"{r.notebook} {r.dataset:14s} {r.method:16s} seed {r.seed} {r.train_classes}"
                  f"{' curve' if r.curve else ''}{extra}")
        print(f"{len(plan)} runs ({sum(len(w) for w in waves(plan))} trained)")
        return 0
    if args.pretrained == "embedded":  # the world's datasets are generated, as the notebooks do
        from .data.world import ensure_world

        ensure_world(args.data_root, args.datasets)
    src = GridSource(model=args.model, pretrained=args.pretrained, data_root=args.data_root, shots=args.shots,
                     epochs=args.epochs, device=args.device, cache_dir=args.cache_dir, runs_dir=args.runs_dir,
                     threads=args.threads or (1 if args.pretrained == "embedded" and args.device in ("auto", "cpu")
                                              and not args.gpus else None))  # as the notebooks: 1 for the tiny model
    if args.slurm is not None:
        from .cli import parse_options

        executor = slurm_executor(args.slurm_folder, **parse_options(args.slurm, "--slurm"))
    elif args.gpus or args.workers > 1:
        executor = local_executor(args.workers, args.gpus)
    else:
        executor = None
    t0 = time.perf_counter()
    try:
        results = run_grid(plan, src, executor)
    finally:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown()
    trained = sum(not r["reused"] for r in results)
    print(f"{len(results)} runs ({trained} trained, {len(results) - trained} reused) in "
          f"{time.perf_counter() - t0:.1f} s; `python -m dpclab report` now reuses them")
    if args.out:
        from .io import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps(results, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
