"""Cross-dataset and domain-generalisation evaluation (the two other settings of CoCoOp/KgCoOp/MaPLe/DePT).

Both train once on a *source* dataset with all its classes (few-shot, ``train_classes="all"``) and then test the
same learned model elsewhere, on all classes of each target's test split:

* **cross-dataset** (:func:`cross_dataset`): targets are other datasets with other classes (ImageNet -> Caltech,
  Pets, ...). Their tasks are ``split="new"``: classes never trained on, so DePT answers with its ITM head only.
* **domain generalisation** (:func:`domain_generalization`): targets show the source's classes in another
  domain (ImageNet -> -V2/-Sketch/-A/-R, or the embedded world's restyled datasets); their classes must be
  source classes (a subset is fine, e.g. ImageNet-A's 200). Tasks are ``split="all"``, so DePT fuses its linear
  head (the rows of the target's classes) with the ITM head, as the reference code does.

Each returns a table: setting, method, source, target, role (source | target), seed, accuracy. The source run
itself goes through :func:`dpclab.pipeline.run` (reused when finished) and is recorded in ``cfg.source.results`` with
``train_classes="all"`` (it has seen all classes: never averaged with base-to-new rows).

>>> from dpclab.pipeline import RunConfig
>>> from dpclab.transfer import cross_dataset
>>> cross_dataset(RunConfig.of(method="coop+dept", dataset="imagenet", data_root="~/data", model="ViT-B-16",
...                            pretrained="openai"), targets=["caltech101", "oxford_pets"])
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Sequence

import pandas as pd
from torch import nn

from dpclab.backbones import Backbone
from dpclab.data.coop import load_dataset
from dpclab.evaluate import accuracy, append_result, predict_logits
from dpclab.methods.base import Task
from dpclab.pipeline import RunResult, run
from dpclab.experiment import Experiment, dataset_specs
from dpclab.runconfig import RunConfig
from dpclab.protocol import setting_overrides


def source_config(cfg: RunConfig, setting: str | None = None) -> RunConfig:
    """``cfg`` trained on all classes, with ``setting``'s released configuration of its method
    (:func:`dpclab.protocol.setting_overrides`: MaPLe 2 epochs, lr 0.0026, depth 3; PromptSRC depth 3, GPA 6/10)
    under the run's own ``train`` / ``method_cfg``."""
    train, method_cfg = setting_overrides(setting, cfg.method, cfg.dataset) if setting else ({}, {})
    return replace(cfg, train_classes="all", train={**train, **cfg.train}, method_cfg={**method_cfg, **cfg.method_cfg})


def train_source(cfg: RunConfig, backbone: Backbone | None = None, setting: str | None = None) -> RunResult:
    """Train (or reuse) ``cfg.method`` on all classes of ``cfg.dataset`` (:func:`source_config`); its row in
    ``cfg.source.results`` says ``train_classes="all"``."""
    return run(source_config(cfg, setting), backbone=backbone)


def target_experiment(cfg: RunConfig, dataset: str, backbone: Backbone) -> Experiment:
    """A target dataset's test data (no few-shot sampling: only its test split is used)."""
    data = load_dataset(cfg.source.data_root, dataset, specs=dataset_specs())
    return Experiment(backbone, data, cfg.seed, cfg.source.cache_dir, "all", cfg.progress)


def task_accuracy(method: nn.Module, exp: Experiment, task: Task) -> float:
    ex = exp.test_examples("all", method.input_kind)
    return accuracy(predict_logits(method, ex, task), ex.labels)


def _evaluate_targets(setting: str, cfg: RunConfig, targets: Sequence[str], backbone: Backbone | None,
                      results: str | os.PathLike | None) -> pd.DataFrame:
    if not targets:
        raise ValueError(f"{setting}: give at least one target dataset.")
    src = train_source(cfg, backbone, setting)
    method, src_exp = src.method, src.experiment
    source_task = src_exp.tasks["all"]
    row = {"setting": setting, "method": cfg.method, "source": cfg.dataset, "model": cfg.source.model,
           "pretrained": cfg.source.pretrained, "shots": cfg.source.shots, "seed": cfg.seed}
    rows = [{**row, "target": cfg.dataset, "role": "source",
             "accuracy": task_accuracy(method, src_exp, source_task)}]
    for name in targets:
        exp = target_experiment(cfg, name, src_exp.backbone)
        classes = tuple(exp.data.classnames)
        if setting == "domain_generalization":
            missing = sorted(set(classes) - set(source_task.classnames))
            if missing:
                raise ValueError(f"Domain generalisation needs the target's classes to be source classes; "
                                 f"{name!r} has {len(missing)} others (e.g. {missing[:3]}). Use cross_dataset "
                                 f"for targets with other classes.")
            task = Task(classes, exp.data.template, "all", name)
        else:
            task = Task(classes, exp.data.template, "new", name)
        rows.append({**row, "target": name, "role": "target", "accuracy": task_accuracy(method, exp, task)})
    if results:
        for r in rows:
            append_result(results, r)
    return pd.DataFrame(rows)


def cross_dataset(cfg: RunConfig, targets: Sequence[str], backbone: Backbone | None = None,
                  results: str | os.PathLike | None = None) -> pd.DataFrame:
    """Train on all classes of ``cfg.dataset``, test on all classes of each target dataset (as new classes)."""
    return _evaluate_targets("cross_dataset", cfg, targets, backbone, results)


def domain_generalization(cfg: RunConfig, targets: Sequence[str], backbone: Backbone | None = None,
                          results: str | os.PathLike | None = None) -> pd.DataFrame:
    """Train on all classes of ``cfg.dataset``, test on target domains whose classes are source classes."""
    return _evaluate_targets("domain_generalization", cfg, targets, backbone, results)


def summarize_transfer(table: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds per (setting, method, target), plus the targets' average per (setting, method)."""
    by = ["setting", "method", "source", "role", "target"]
    per = table.groupby(by, sort=False).agg(accuracy=("accuracy", "mean"), runs=("accuracy", "size")).reset_index()
    avg = (per[per["role"] == "target"].groupby(["setting", "method", "source"], sort=False)
           .agg(accuracy=("accuracy", "mean")).reset_index().assign(role="target", target="average"))
    return pd.concat([per, avg], ignore_index=True)


__all__ = ["source_config", "train_source", "cross_dataset", "domain_generalization", "target_experiment",
           "task_accuracy", "summarize_transfer"]
