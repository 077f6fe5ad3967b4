"""Training runs as :mod:`dpclab.lab.jobs` jobs: what ``grid`` and ``report`` hand to :func:`dpclab.lab.jobs.run_jobs`.

* :func:`job_key_of` -- what identifies a training run in a job list (:func:`dpclab.runkey.job_key` of it);
* :func:`train_run` -- one job: train (or reuse, or resume) one run, in a worker process;
* :func:`training_jobs` -- (label, RunConfig, curve) -> jobs, each needing the listed runs it builds on (DPC's
  step 1, PromptKD's teacher), in the order :func:`dpclab.lab.jobs.needed_first` gives;
* :func:`grid_jobs` / :func:`waves` -- the report's plan (:mod:`dpclab.lab.plan`) as those jobs, and in dependency
  waves.
"""

from __future__ import annotations

import json
import os
import socket
from dataclasses import replace
from typing import Sequence

import torch

from dpclab.backbones import WEIGHTS_FILES_ENV, device_label
from dpclab.cpus import allocated_cpus
from dpclab.lab.jobs import Job, needed_first, waves as job_waves, worker_name
from dpclab.lab.plan import PlannedRun, needs_training, run_label
from dpclab.methods.table import resolve
from dpclab.pipeline import plan_run, run as run_pipeline, step_configs
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig, with_method_data
from dpclab.runkey import job_key
from dpclab.source import Source, startup_lines


def job_key_of(cfg: RunConfig) -> str:
    """What identifies a training run in a job list (:func:`dpclab.runkey.job_key`: two configs with the same key
    train the same run); the training data a method's protocol fixes is applied first, so PromptKD asked for on 16
    shots is its all-images run."""
    return job_key(with_method_data(cfg, resolve(cfg.method)))


def job_startup_lines(cfg, log=print) -> None:
    """A job's own start-up lines (host, the device it really got, precision, loader workers from the CPUs it was
    allocated), to ``log`` as they come (the host line first: a device the job cannot use raises after it), for the
    job's log: on SLURM the driver's lines describe the login node and the request, not the node."""

    cpus = allocated_cpus()
    log(f"job {worker_name()} on host {socket.gethostname()} ({cpus} CPUs allocated), asked for device "
        f"{cfg.source.device}")
    try:
        lines = startup_lines(cfg.source, cpus=cpus)
    except ValueError:  # a device this node cannot give (no CUDA GPU visible): the job fails, in one line
        raise
    except Exception as err:  # noqa: BLE001 - the lines are for the log; they never fail a job themselves
        lines = [f"(start-up lines incomplete: {type(err).__name__}: {err})"]
    for line in lines:
        log(line)


def train_run(cfg, curve: bool = False, threads: int | None = None, weights: dict | None = None) -> dict:
    """Train (or reuse, or resume) one run; its metrics, where it lives, what was done (``note``) and the device it
    ran on. ``weights``: the local weights files the driver resolved (``{"model/tag": file}``; loaded instead of a
    download, the runs' keys unchanged). Under submitit (SLURM) the job first writes its start-up lines to its log."""

    if weights:
        os.environ[WEIGHTS_FILES_ENV] = json.dumps(weights)
    if os.environ.get("SUBMITIT_EXECUTOR"):  # its own log (stdout of the job): what this node gave it
        job_startup_lines(cfg, lambda line: print(line, flush=True))
    if threads:
        torch.set_num_threads(int(threads))
    exp = Experiment.prepare(cfg)
    steps = plan_run(cfg, exp)
    on_epoch = (lambda epoch, m: exp.evaluate(m)) if curve else None
    res = run_pipeline(cfg, experiment=exp, on_epoch=on_epoch, plan=steps)  # the steps planned above
    if curve and res.history and "base" not in res.history[-1]:  # finished earlier without the curve
        res = run_pipeline(replace(cfg, if_exists="overwrite"), experiment=exp, on_epoch=on_epoch)
    resumed = [s.resume_epoch for s in steps if s.action == "resume"]
    note = "reused" if res.reused else (f"resumed from epoch {resumed[-1]}" if resumed else "trained")
    return {"metrics": res.metrics, "run_dir": str(res.run_dir), "reused": res.reused, "note": note,
            "resumed_from": resumed[-1] if resumed else None, "device": device_label(exp.backbone.device)}


def with_weights(jobs: Sequence[Job], weights: dict[str, str]) -> list[Job]:
    """``jobs`` with the driver's resolved weights files handed to every :func:`train_run` (same keys and needs)."""
    if not weights:
        return list(jobs)
    return [replace(j, args=tuple(j.args[:3]) + (dict(weights),)) if j.fn is train_run else j for j in jobs]


def training_jobs(runs: Sequence[tuple[str, object, bool]], threads: int | None = None) -> list[Job]:
    """(label, RunConfig, curve) -> one :func:`train_run` job per trainable run (zero-shot evaluations have
    nothing to train or store). A run built on another run (DPC's step 2 on its step 1, PromptKD on its teacher)
    needs the jobs that train those runs when they are in the list; otherwise it trains them itself. Jobs that others
    need come first, so the longest chains start early."""
    listed = {job_key_of(c) for _, c, _ in runs if resolve(c.method).trainable}
    jobs: list[Job] = []
    keys: set[str] = set()
    for label, cfg, curve in runs:
        if not resolve(cfg.method).trainable:
            continue
        key = job_key_of(cfg)
        if key in keys:
            raise ValueError(f"Run {label!r} is listed twice.")
        keys.add(key)
        before = [job_key_of(c) for c, _, feeds in step_configs(cfg) if feeds]
        jobs.append(Job(key, train_run, (cfg, bool(curve), threads), tuple(k for k in before if k in listed), label))
    return needed_first(jobs)


def grid_jobs(runs: Sequence[PlannedRun], source=None, threads: int | None = None) -> list:
    """The trained runs of ``runs`` as :class:`dpclab.lab.jobs.Job` s (one :func:`train_run` each, a
    two-step plug-in after its step 1 when that is planned too); ``source``: a :class:`~dpclab.source.Source`
    (default: the embedded one); ``threads``: torch CPU threads per worker."""
    src = source or Source()
    return training_jobs([(run_label(r), r.run_config(src, progress=False), r.curve) for r in runs
                          if needs_training(r)], threads=threads)


def waves(runs: Sequence[PlannedRun], source=None) -> list[list[PlannedRun]]:
    """The trained runs in dependency waves (:func:`dpclab.lab.jobs.waves`): [runs that need no other run, runs that
    reuse another planned run's result (two-step plug-ins after their step 1)]; zero-shot evaluations are left out
    (nothing to train or store)."""
    src = source or Source()
    trained = [r for r in runs if needs_training(r)]
    jobs = grid_jobs(trained, src)
    by_key = {job_key_of(r.run_config(src, progress=False)): r for r in trained}
    return [[by_key[j.key] for j in w] for w in job_waves(jobs)]


__all__ = ["job_key_of", "train_run", "training_jobs", "grid_jobs", "waves", "with_weights", "job_startup_lines"]
