"""The report's runs as a grid of independent jobs, spread over workers: ``python -m dpclab grid``.

:func:`report_plan` lists every training run the notebooks do (dataset x method x seed, DPC ablations, the oracle,
which runs evaluate after every epoch), deduplicated the way the notebooks reuse each other's runs. The cost
estimate (``dpclab.estimate``) prices this plan; :func:`run_grid` executes it ahead of ``python -m dpclab report``,
which then finds every run finished in ``runs/`` and only evaluates and draws.

The runs are executed by :mod:`dpclab.jobs` (one job = one :func:`dpclab.jobs.train_run`): here, a local process
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


def waves(runs: Sequence[PlannedRun], src: "GridSource | None" = None) -> list[list[PlannedRun]]:
    """The trained runs in dependency waves (:func:`dpclab.jobs.waves`): [runs that need no other run, runs that
    reuse another run's result (two-step plug-ins whose step 1 is in the plan)]; zero-shot evaluations are left
    out (nothing to train or store)."""
    from .jobs import waves as job_waves

    jobs = grid_jobs(runs, src or GridSource())
    by_key = {j.key: r for j, r in zip(jobs, _trained(runs))}
    return [[by_key[j.key] for j in w] for w in job_waves(jobs)]


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


def run_label(run: PlannedRun) -> str:
    """``06 eurosat coop+dpc seed 1 decouple=False``: what the per-run lines call a run."""
    opts = " ".join(f"{k}={v}" for k, v in run.method_cfg)
    extra = (" all classes" if run.train_classes == "all" else "") + (" curve" if run.curve else "")
    return f"{run.notebook} {run.dataset} {run.method} seed {run.seed}{extra}{' ' + opts if opts else ''}"


def _trained(runs: Sequence[PlannedRun]) -> list[PlannedRun]:
    from .methods import get_method

    return [r for r in runs if get_method(r.method).trainable]


def grid_jobs(runs: Sequence[PlannedRun], src: GridSource) -> list:
    """The plan's trained runs as :class:`dpclab.jobs.Job` s (one :func:`dpclab.jobs.train_run` each)."""
    from .jobs import training_jobs

    return training_jobs([(run_label(r), run_config(r, src), r.curve) for r in runs], threads=src.threads)


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
    from .jobs import local_executor, run_jobs, slurm_executor, summary

    if args.slurm is not None:
        from .cli import parse_options

        executor = slurm_executor(args.slurm_folder, **parse_options(args.slurm, "--slurm"))
    elif args.gpus or args.workers > 1:
        executor = local_executor(args.workers, args.gpus)
    else:
        executor = None
    t0 = time.perf_counter()
    try:
        records = run_jobs(grid_jobs(plan, src), executor)
    finally:
        if isinstance(executor, ProcessPoolExecutor):
            executor.shutdown()
    for line in summary(records):
        print(line)
    failed = not all(r.ok for r in records)
    print(f"in {time.perf_counter() - t0:.1f} s; " + ("rerun the same command after fixing the failures (finished "
          "runs are reused)" if failed else "`python -m dpclab report` now reuses the finished runs"))
    if args.out:
        from .io import atomic_write_text

        atomic_write_text(Path(args.out), json.dumps([asdict(r) for r in records], indent=1, default=str))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
