"""backbone + data -> (cached features) -> method -> train -> evaluate -> results. One function for the CLI,
the notebooks and the benchmarks: :func:`run`.

>>> from dpclab.pipeline import run
>>> from dpclab.runconfig import RunConfig
>>> result = run(RunConfig.of(method="coop", dataset="eurosat", data_root="~/data", model="ViT-B-16",
...                        pretrained="openai", shots=16, seed=1))
>>> result.metrics   # {'base': ..., 'new': ..., 'hm': ...}

A run resolves its method once (:func:`dpclab.methods.resolve`) and :func:`plan_run` turns the configuration into
its steps (two for a two-step plug-in such as DPC), each with its training settings, run directory, fingerprint and
action (train, resume, reuse, overwrite, refuse, evaluate), decided by :func:`run_action` alone. :func:`run` executes
exactly those steps: the plan ``python -m dpclab train`` prints is the one that runs.
"""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from torch import nn

from dpclab.backbones import Backbone, check_teacher_inputs, device_label
from dpclab.evaluate import append_result, ensure_result
from dpclab.experiment import Experiment
from dpclab.io import (DamagedFileError, archive_damage, atomic_torch_save, atomic_write_json, check_folder,
                       file_lock, move_aside, read_json, set_aside, torch_load)
from dpclab.methods.base import learned_state, load_learned_state
from dpclab.methods.spec import MethodSpec
from dpclab.methods.table import resolve
from dpclab.runconfig import RunConfig, step1_config, teacher_config, train_config, with_method_data
from dpclab.runkey import key_fields, run_key
from dpclab.selection import BestBaseEpoch, wants_best_base
from dpclab.train import RunDirError, checkpoint_action, fit
from dpclab.trainconfig import TrainConfig

log = logging.getLogger(__name__)


def _spec_of(cfg: RunConfig, spec: MethodSpec | None) -> MethodSpec:
    """``spec`` when given (it must be ``cfg.method``'s), else :func:`dpclab.methods.resolve` of ``cfg.method``."""
    if spec is None:
        return resolve(cfg.method)
    if spec.name != cfg.method:
        raise ValueError(f"The method spec is {spec.name!r} but the run config names {cfg.method!r}.")
    return spec


#: how a step's tuned method is handed to the next step's construction (:meth:`MethodSpec.build` keywords)
FEEDS = ("base_method", "teacher")


def step_configs(cfg: RunConfig, spec: MethodSpec | None = None) -> list[tuple[RunConfig, MethodSpec, str | None]]:
    """Every run :func:`run` makes for ``cfg``, in order, each with its spec and how its tuned method feeds the next
    step (:data:`FEEDS`; None for the last): a teacher's run (``"teacher"``), a two-step plug-in's step 1
    (``"base_method"``, with its own prerequisites), then ``cfg`` with its method's protocol data."""
    spec = _spec_of(cfg, spec)
    cfg = with_method_data(cfg, spec)
    if spec.two_step:
        *before, (c, s, _) = step_configs(step1_config(cfg, spec), spec.step1)
        return [*before, (c, s, "base_method"), (cfg, spec, None)]
    teacher = teacher_config(cfg, spec)
    if teacher is None:
        return [(cfg, spec, None)]
    *before, (c, s, _) = step_configs(teacher)
    return [*before, (c, s, "teacher"), (cfg, spec, None)]


def effective_epochs(cfg: RunConfig, spec: MethodSpec | None = None) -> dict:
    """The epochs ``cfg`` really trains: ``{"epochs": n}``, plus ``"step1_epochs"`` for a two-step plug-in's step 1
    and ``"teacher_epochs"`` for a teacher's run."""
    *before, (last, last_spec, _) = step_configs(cfg, spec)
    out = {"epochs": train_config(last, last_spec).epochs}
    for c, s, feeds in before:
        out["step1_epochs" if feeds == "base_method" else "teacher_epochs"] = train_config(c, s).epochs
    return out


def run_action(run_dir: Path, full_fingerprint: str, if_exists: str) -> tuple[str, int]:
    """What a run does with its run directory, and the epoch it resumes at: the one place this is decided.

    A finished run (``result.json``) is reused when its fingerprint matches, replaced with ``if_exists="overwrite"``
    and refused otherwise (or always with ``"error"``); an interrupted one (``checkpoint.pt``) is resumed or refused
    by :func:`dpclab.train.checkpoint_action`; with ``"overwrite"`` any leftover directory is replaced.

    A finished run whose ``result.json`` or ``model.pt`` is damaged (:func:`finished_result`) is treated as
    unfinished: the damaged file is moved aside, named in a warning, and the run resumed from its checkpoint when
    that is intact (its last epoch: nothing is trained again), else retrained."""
    done = finished_result(run_dir)
    if done is not None:
        same = done.get("config_fingerprint") == full_fingerprint
        return {"overwrite": "overwrite", "error": "refuse"}.get(if_exists, "reuse" if same else "refuse"), 0
    if if_exists == "overwrite":
        return ("overwrite" if run_dir.exists() else "train"), 0
    return checkpoint_action(run_dir / "checkpoint.pt", full_fingerprint)


#: what a run's result.json holds (checked when it is read back)
RESULT_KEYS = ("metrics", "history", "config_fingerprint")


def finished_result(run_dir: Path) -> dict | None:
    """The ``result.json`` of the finished run in ``run_dir``, or None when there is none. A damaged one (cut short,
    not the object a run writes), or one whose ``model.pt`` is missing or damaged, is moved aside
    (``<name>.damaged-<time>``, :func:`dpclab.io.set_aside`) with a warning naming it, and the run counts as
    unfinished (None)."""
    done = run_dir / "result.json"
    if not done.is_file():
        return None
    then = "the run is unfinished: resumed from its checkpoint when intact, else retrained"
    try:
        stored = read_json(done, RESULT_KEYS)
    except DamagedFileError as err:
        set_aside(err, then)
        return None
    model = run_dir / "model.pt"
    if not model.is_file():
        set_aside(DamagedFileError(done, "its model.pt is missing"), then)
        return None
    why = archive_damage(model)
    if why:
        moved = move_aside(done)
        set_aside(DamagedFileError(model, why), f"its result.json too ({moved.name if moved else 'gone'}); {then}")
        return None
    return stored


@dataclass(frozen=True)
class StepPlan:
    """What one step of :func:`run` will do, known before it starts."""

    #: 1-based position among the run's steps
    step: int
    #: the step's method name
    method: str
    #: its resolved spec (step 1 of a two-step plug-in: ``spec.step1`` of the run's, not resolved again)
    spec: MethodSpec
    #: the step's run configuration (step 1 of "coop+dpc" is a "coop" run)
    cfg: RunConfig
    #: its training settings (protocol defaults + overrides)
    train: TrainConfig
    #: its run directory (None: nothing to train, nothing stored)
    run_dir: Path | None
    #: evaluate (nothing to train) | train | resume (from ``resume_epoch``) | reuse | overwrite | refuse
    action: str
    #: the epoch an interrupted run resumes at (action "resume")
    resume_epoch: int = 0
    #: what identifies the run besides its training settings (model, data, options)
    fingerprint: dict = field(default_factory=dict)
    #: the full fingerprint (training settings included) stored with the run and compared on reuse/resume
    full_fingerprint: str = ""
    #: how its tuned method is handed to the next step: "base_method", "teacher" (:data:`FEEDS`), None for the last
    feeds: str | None = None
    #: the step's own experiment when it reads other data than the run (a teacher's few-shot run, a method's
    #: protocol data); None = the run's
    experiment: Experiment | None = None

    @property
    def epochs(self) -> int:
        return self.train.epochs

    @property
    def batch_size(self) -> int:
        return self.train.batch_size

    @property
    def lr(self) -> float:
        return self.train.lr


def plan_run(cfg: RunConfig, experiment: Experiment, spec: MethodSpec | None = None) -> list[StepPlan]:
    """The steps :func:`run` takes for ``cfg`` (two for two-step plug-ins such as DPC), each with its training
    settings and whether a finished run is reused, an interrupted one resumed, or one trained. The method is
    resolved here once (or ``spec`` is used); the images' key, the run directories and fingerprints are computed
    here once."""
    keys = {}
    plans = []
    for step, (c, s, feeds) in enumerate(step_configs(cfg, spec), 1):
        tcfg = train_config(c, s)
        own = None if _same_data(c, cfg) else Experiment.prepare(c, _same_backbone(c, cfg, experiment))
        exp = own or experiment
        if not s.trainable:
            plans.append(StepPlan(step, c.method, s, c, tcfg, None, "evaluate", feeds=feeds, experiment=own))
            continue
        if id(exp) not in keys:
            keys[id(exp)] = exp.inputs_key()
        inputs, backbone = keys[id(exp)], exp.backbone
        key = run_key(c, tcfg, backbone.key, inputs, exp.data.crop_scale, s.revision)
        run_dir, fp, full_fp = key.run_dir, key.fingerprint, key.full
        action, epoch = run_action(run_dir, full_fp, c.if_exists)
        plans.append(StepPlan(step, c.method, s, c, tcfg, run_dir, action, epoch, fp, full_fp, feeds, own))
    return plans


def _same_data(a: RunConfig, b: RunConfig) -> bool:
    """Whether runs ``a`` and ``b`` read the same images the same way (one Experiment serves both)."""
    return key_fields(a, "data") == key_fields(b, "data")


def _same_backbone(a: RunConfig, b: RunConfig, experiment: Experiment) -> Backbone | None:
    """``experiment``'s backbone when run ``a`` uses the same model as ``b`` (else None: ``a`` loads its own)."""
    same = all(getattr(a.source, k) == getattr(b.source, k) for k in ("model", "pretrained", "device", "precision"))
    return experiment.backbone if same else None


@dataclass
class RunResult:
    metrics: dict
    history: list
    run_dir: Path | None
    method: nn.Module
    experiment: Experiment
    reused: bool = False


def run(cfg: RunConfig, backbone: Backbone | None = None, experiment: Experiment | None = None,
        method: nn.Module | None = None, on_epoch=None, plan: list[StepPlan] | None = None,
        spec: MethodSpec | None = None) -> RunResult:
    """Train (unless zero-shot) and evaluate one method on one dataset/seed; append the result to the table.

    Executes the steps of ``plan`` (default: :func:`plan_run` of ``cfg``; the CLI passes the plan it printed).
    ``method``: an already built method for the last step (earlier steps are then skipped); ``on_epoch`` is passed to
    the last step's training."""
    check_output_folders(cfg)
    exp = experiment or Experiment.prepare(cfg, backbone)
    backbone = exp.backbone
    if backbone.precision != cfg.source.precision:
        raise ValueError(f"RunConfig.precision={cfg.source.precision!r} but the backbone was loaded with "
                         f"precision={backbone.precision!r}; load it with load_clip(..., "
                         f"precision={cfg.source.precision!r}).")
    steps = plan if plan is not None else plan_run(cfg, exp, spec)
    if steps[-1].cfg != with_method_data(cfg, steps[-1].spec):
        raise ValueError(f"The plan is for {steps[-1].cfg.method!r} with other settings than this run's; make it "
                         f"with plan_run(cfg, experiment).")
    *before, last = steps
    last_exp = last.experiment or exp
    if method is None:
        if before:  # bad options fail before the earlier steps train
            last.spec.config(last.cfg.method_cfg, len(last_exp.train_task.classnames))
        fed: dict = {}
        for step in before:  # each earlier step's tuned method is built into the next (FEEDS)
            done = _run_step(step, step.experiment or exp, None, None, fed)
            if step.feeds == "teacher":  # it scores the student's augmented images: the same input, or refused
                check_teacher_inputs(last_exp.backbone, done.experiment.backbone)
            fed = {step.feeds: done.method}
        method = _build(last, last_exp, fed)
    return _run_step(last, last_exp, method, on_epoch)


def check_output_folders(cfg: RunConfig) -> None:
    """Check the folders a run writes to (runs, the results table's, the cache) before anything is trained: one that
    cannot be a folder (a file on its path) is a one-line error naming it (:func:`dpclab.io.check_folder`)."""
    src = cfg.source
    check_folder(src.runs_dir, "runs folder")
    if src.results:
        check_folder(Path(src.results).parent, f"folder of the results table {Path(src.results).name},")
    if src.cache_dir:
        check_folder(src.cache_dir, "cache folder")


def _build(step: StepPlan, exp: Experiment, fed: dict) -> nn.Module:
    """The step's method, with what the previous step feeds it (its tuned base or teacher)."""
    c = step.cfg
    return step.spec.build(exp.backbone, c.method_cfg, len(exp.train_task.classnames), c.base_method_cfg,
                           seed=c.seed, **fed)


def _run_step(step: StepPlan, exp: Experiment, method: nn.Module | None, on_epoch, fed: dict | None = None
              ) -> RunResult:
    """Execute one planned step (building its method when not given). The run directory is locked first (parallel
    notebooks wait for, then reuse, each other's runs), and the step's action is re-read under the lock by
    :func:`run_action` (another process may have finished the run since the plan was made)."""
    cfg = step.cfg
    if method is None:
        method = _build(step, exp, fed or {})
    if step.run_dir is None:
        return _train_and_record(step, exp, method, on_epoch)
    with file_lock(step.run_dir.parent / f".{step.run_dir.name}.lock"):
        action, epoch = run_action(step.run_dir, step.full_fingerprint, cfg.if_exists)
        return _train_and_record(replace(step, action=action, resume_epoch=epoch), exp, method, on_epoch)


def _train_and_record(step: StepPlan, exp: Experiment, method: nn.Module, on_epoch) -> RunResult:
    """Do what ``step.action`` says: refuse, reuse the finished run, or (after removing an old one) train, evaluate
    and record the result."""
    cfg, run_dir = step.cfg, step.run_dir
    tcfg = step.train
    if "num_workers" not in cfg.train:  # image decoding in parallel on the real backend (not in the fingerprint)
        tcfg = replace(tcfg, num_workers=exp.num_workers)
    if step.action == "refuse":
        if not (run_dir / "result.json").is_file():
            raise RunDirError(f"{run_dir / 'checkpoint.pt'} holds a run with a different configuration. Use another "
                              f"output directory, or pass if_exists='overwrite' (CLI: --overwrite) to start over.")
        stored = read_json(run_dir / "result.json", RESULT_KEYS).get("config_fingerprint")
        why = "with a different configuration" if stored != step.full_fingerprint else ""
        raise FileExistsError(
            f"{run_dir} already holds a finished run {why}. Pass if_exists='overwrite' (CLI: --overwrite) "
            f"to replace it, or choose another runs_dir."
        )
    if step.action == "reuse":
        stored = read_json(run_dir / "result.json", RESULT_KEYS)
        saved = torch_load(run_dir / "model.pt", map_location="cpu", keys=("state",))  # any device's
        load_learned_state(method, saved["state"], str(run_dir / "model.pt"))
        method.eval()
        log.info("reusing finished run %s", run_dir)
        if cfg.source.results:  # its row, when it was lost (killed before it was written, a damaged table repaired)
            done = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime((run_dir / "result.json").stat().st_mtime))
            ensure_result(cfg.source.results, _result_row(step, tcfg, stored["metrics"], done, RESTORED_DEVICE))
        return RunResult(stored["metrics"], stored["history"], run_dir, method, exp, reused=True)
    if step.action == "overwrite":
        shutil.rmtree(run_dir)
    history: list = []
    t0 = time.time()
    if step.spec.trainable and tcfg.epochs > 0:
        best = BestBaseEpoch(lambda m: exp.accuracy(m, "base"), run_dir, on_epoch) if wants_best_base(method) else None
        history = fit(method, exp.train_examples(method.input_kind), exp.train_task, tcfg, run_dir,
                      step.fingerprint, best or on_epoch, precision=exp.backbone.precision)
        if best is not None:  # the released PromptKD: the epoch with the best base *test* accuracy
            best.restore(method)
    metrics = exp.evaluate(method)
    if run_dir is not None:
        atomic_torch_save({"state": learned_state(method), "method": cfg.method, "fingerprint": step.fingerprint},
                          run_dir / "model.pt")
        atomic_write_json(run_dir / "result.json",
                          {"metrics": metrics, "history": history, "config_fingerprint": step.full_fingerprint,
                           "train": asdict(tcfg), "config": asdict(cfg), "seconds": time.time() - t0},
                          indent=1, default=str)
    if cfg.source.results:
        append_result(cfg.source.results, _result_row(step, tcfg, metrics, time.strftime("%Y-%m-%d %H:%M:%S"),
                                                      device_label(exp.backbone.device)))
    return RunResult(metrics, history, run_dir, method, exp)


#: the device column of a row restored for a reused run (result.json does not say where the run was made)
RESTORED_DEVICE = "unknown (row restored on reuse)"


def _result_row(step: StepPlan, tcfg: TrainConfig, metrics: dict, when: str, device: str) -> dict:
    """The results-table row of a step's run, made at ``when`` on ``device``."""
    cfg, src = step.cfg, step.cfg.source
    return {"dataset": cfg.dataset, "method": cfg.method, "model": src.model, "pretrained": src.pretrained,
            "shots": src.shots, "train_classes": cfg.train_classes, "seed": cfg.seed, **metrics,
            "epochs": tcfg.epochs if step.spec.trainable else 0, "precision": src.precision,
            "device": device,  # the device it really ran on (auto resolved, GPU named)
            "run_dir": str(step.run_dir or ""), "backend": "embedded" if src.pretrained == "embedded" else "open_clip",
            "time": when}


__all__ = ["RunResult", "run", "plan_run", "run_action", "StepPlan", "step_configs", "effective_epochs", "FEEDS",
           "RESTORED_DEVICE", "check_output_folders", "finished_result"]
