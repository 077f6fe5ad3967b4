"""The one training loop: SGD + momentum, 1 warm-up epoch at constant lr, cosine decay, a checkpoint per epoch (and
every ``checkpoint_steps`` steps or ``checkpoint_minutes`` minutes inside one), exact resume, NaN guard. Every method
(and the DPC/DePT plug-ins) trains through :func:`fit`.

Every method is a :class:`~dpclab.methods.base.PromptMethod`; the loop calls its four hooks (no subclassing of
a trainer; the base class's defaults are one parameter group, the plain shuffled batches, the SGD step and nothing):
  * ``param_groups(lr) -> list[dict]``  e.g. DePT's head at 6.5x the prompt lr;
  * ``batches(data, epoch, cfg, generator) -> iterable of (x, y)``  e.g. DPC's hard-negative batches
    (``data.task`` names the classes the labels index, so a method can score images before it builds a batch);
  * ``step(loss, optimizer, scaler)``  one update from the method's :class:`~dpclab.methods.base.Loss` (its total
    and named terms; a method that changes the update, e.g. projects one term's gradient, reads them there);
  * ``on_epoch_end(epoch, cfg)``  e.g. PromptSRC's Gaussian prompt aggregation.

The settings are :class:`~dpclab.trainconfig.TrainConfig`, the data :class:`~dpclab.data.examples.Examples`
(both re-exported here). Whether a run directory's checkpoint is resumed or refused is decided by
:func:`checkpoint_action` alone (the pipeline's plan reads the same function).

Determinism: the batch order of epoch ``e`` comes from a generator seeded by ``(seed, e)``, so a run resumed from
its epoch checkpoint continues exactly as the uninterrupted run would (tested, including kill -9). A mid-epoch
checkpoint also holds the steps done in its epoch and their loss sums: the resumed epoch draws its batches again from
the same generator and skips those steps (the plain batches pass over them without loading their images,
``Examples.skip_batches``; a method's own batches, DPC's, are rebuilt, not trained on: exact either way), then goes
on as the uninterrupted run. (A method's
``batches`` may depend on its frozen parts and the generator, never on what it has learned: DPC scores with P, PromptKD
with its teacher.)
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import replace
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from dpclab.data.examples import Examples
from dpclab.data.items import Task
from dpclab.io import DamagedFileError, atomic_torch_save, set_aside, torch_load
from dpclab.methods.base import Loss, PromptMethod, learned_state, load_learned_state, trainable_parameters
from dpclab.precision import autocast, autocast_iter, grad_scaler
from dpclab.progress import progress_bar
from dpclab.runkey import full_fingerprint
from dpclab.trainconfig import CHECKPOINT_OPTIONS, TrainConfig, lr_at_epoch

log = logging.getLogger(__name__)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


class RunDirError(RuntimeError):
    pass


#: what an epoch checkpoint holds (checked when it is read back)
CHECKPOINT_KEYS = ("epoch", "state", "optimizer", "history", "fingerprint")


def checkpoint_action(ckpt_path: Path, fingerprint: str) -> tuple[str, int]:
    """What the epoch checkpoint at ``ckpt_path`` means for a run whose :func:`dpclab.runkey.full_fingerprint` is
    ``fingerprint``: ``("train", 0)`` when there is none, ``("resume", the epoch to (re)start)`` when it is this run's
    (an unfinished epoch's mid-epoch checkpoint resumes inside that epoch), and
    ``("refuse", 0)`` when it belongs to another configuration (never overwritten silently). A damaged one (cut
    short, corrupted) is moved aside with a warning naming it (:func:`dpclab.io.set_aside`): ``("train", 0)``."""
    if not ckpt_path.is_file():
        return "train", 0
    try:
        ckpt = torch_load(ckpt_path, map_location="cpu", keys=CHECKPOINT_KEYS)
    except DamagedFileError as err:
        set_aside(err, "training starts from epoch 0")
        return "train", 0
    return ("resume", ckpt["epoch"] + 1) if ckpt.get("fingerprint") == fingerprint else ("refuse", 0)


def fit(method: PromptMethod, data: Examples, task: Task, cfg: TrainConfig, run_dir: str | os.PathLike | None = None,
        fingerprint: dict | None = None, on_epoch: Callable[[int, nn.Module], dict] | None = None,
        stop_after: int | None = None, precision: str = "fp32") -> list[dict]:
    """Train ``method`` on ``data`` for ``task``; return per-epoch history (loss, acc, lr, seconds, + on_epoch logs).

    With ``run_dir``, a checkpoint is written atomically after every epoch (and every ``cfg.checkpoint_steps`` steps
    or ``cfg.checkpoint_minutes`` minutes inside one) and an unfinished run with the same
    configuration (``cfg`` + ``fingerprint``) resumes from it. A checkpoint from a *different* configuration is
    never overwritten silently: that raises :class:`RunDirError`. ``stop_after`` ends early after that many epochs
    (to simulate an interruption in tests and notebooks). ``precision`` (:mod:`dpclab.precision`): ``amp`` runs
    batch building and the loss under autocast (with a gradient scaler for float16); fp16 needs nothing here (the
    model, the prompts and the inputs are already half).
    """
    device = next(method.clip.parameters()).device
    data = replace(data, task=task)
    params = trainable_parameters(method)
    if not params:
        raise ValueError(f"{type(method).__name__} has no trainable parameters; nothing to train.")
    groups = method.param_groups(cfg.lr)
    for g in groups:
        g["base_lr"] = g["lr"]
    opt = torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    scaler = grad_scaler(precision, device)
    history: list[dict] = []
    start = 0
    partial: dict | None = None  # the unfinished epoch of a mid-epoch checkpoint: its epoch, steps done, loss sums
    ckpt_path = Path(run_dir) / "checkpoint.pt" if run_dir is not None else None
    fp = full_fingerprint(cfg, fingerprint or {})
    if ckpt_path is not None:
        ckpt_path.parent.mkdir(parents=True, exist_ok=True)
        action, _ = checkpoint_action(ckpt_path, fp)
        if action == "refuse":
            raise RunDirError(
                f"{ckpt_path} holds a run with a different configuration. Use another output directory, or "
                f"delete it / pass overwrite=True to start over."
            )
        if action == "resume":
            ckpt = torch_load(ckpt_path, map_location=device, keys=CHECKPOINT_KEYS)  # saved on any device
            load_learned_state(method, ckpt["state"], str(ckpt_path))
            opt.load_state_dict(ckpt["optimizer"])
            if "scaler" in ckpt:
                scaler.load_state_dict(ckpt["scaler"])
            history, start, partial = ckpt["history"], ckpt["epoch"] + 1, ckpt.get("partial")
            log.info("resuming %s from epoch %d%s", ckpt_path, start,
                     f", step {partial['steps']}" if partial else "")

    def save(epoch_done: int, part: dict | None = None) -> None:
        atomic_torch_save({"epoch": epoch_done, "state": learned_state(method), "optimizer": opt.state_dict(),
                           "history": history, "fingerprint": fp,
                           **({"scaler": scaler.state_dict()} if scaler.is_enabled() else {}),
                           **({"partial": part} if part else {})}, ckpt_path)

    every_s = 60.0 * cfg.checkpoint_minutes
    method.train()
    method.clip.eval()
    bar = progress_bar(range(start, cfg.epochs), enabled=cfg.progress, desc=f"train {type(method).__name__}",
                       initial=start, total=cfg.epochs)
    for epoch in bar:
        if stop_after is not None and epoch >= stop_after:
            break
        t0 = time.perf_counter()
        for g in opt.param_groups:
            g["lr"] = lr_at_epoch(epoch, g["base_lr"], cfg)
        gen = epoch_generator(cfg.seed, epoch)
        sums: dict[str, float] = {}
        steps = skip = 0
        if partial is not None and partial["epoch"] == epoch:  # resume inside this epoch: its first steps are done
            sums, steps, skip = dict(partial["sums"]), partial["steps"], partial["steps"]
        partial = None
        # the plain batches pass over the done ones without loading them; a method's own batches are rebuilt
        epoch_data = replace(data, skip_batches=skip) if skip else data
        batches = autocast_iter(method.batches(epoch_data, epoch, cfg, gen), precision, device)
        last_save = time.monotonic()
        for x, y in batches:
            if skip:
                skip -= 1
                continue
            with autocast(precision, device):
                result = method.loss(x.to(device, non_blocking=True), y.to(device, non_blocking=True), task)
            if not isinstance(result, Loss):
                raise TypeError(f"{type(method).__name__}.loss returned a {type(result).__name__}; it must return a "
                                f"dpclab.methods.Loss(total, terms, logs, output), whose named terms step() receives.")
            loss, logs = result.total, result.logs
            if not torch.isfinite(loss):
                where = (f"the last good checkpoint ({ckpt_path}, epoch {history[-1]['epoch']}) is kept"
                         if ckpt_path is not None and history else "no checkpoint was written")
                raise FloatingPointError(
                    f"Loss became {loss.item()} at epoch {epoch}, step {steps}. Training stopped; {where}. "
                    f"Lower the learning rate or check the inputs."
                )
            method.step(result, opt, scaler)  # the Loss, with its named terms
            steps += 1
            for k, v in logs.items():
                sums[k] = sums.get(k, 0.0) + float(v)
            due = (cfg.checkpoint_steps and steps % cfg.checkpoint_steps == 0) or \
                (every_s and time.monotonic() - last_save >= every_s)
            if ckpt_path is not None and due:
                save(epoch - 1, {"epoch": epoch, "steps": steps, "sums": sums})
                last_save = time.monotonic()
        method.on_epoch_end(epoch, cfg)
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "steps": steps, "seconds": time.perf_counter() - t0,
               **{k: v / max(steps, 1) for k, v in sums.items()}}
        if on_epoch is not None:
            method.eval()
            row.update(on_epoch(epoch, method))
            method.train()
            method.clip.eval()
        history.append(row)
        bar.set_postfix({k: round(v, 4) for k, v in row.items() if k in ("loss", "acc")})
        if ckpt_path is not None:
            save(epoch)
    method.eval()
    return history


__all__ = ["fit", "checkpoint_action", "epoch_generator", "RunDirError", "TrainConfig", "CHECKPOINT_OPTIONS",
           "Examples", "lr_at_epoch"]
