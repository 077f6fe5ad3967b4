"""The notebooks' setup: turning the ``parameters`` cell into runs.

Every notebook starts with the same parameters cell (papermill overrides it with ``-p key value``)::

    backend = "auto"        # "embedded" (tiny CLIP + generated world) | "open_clip" (real CLIP) | "auto"
    model = "dpclab-tiny"   # open_clip model name, e.g. "ViT-B-16"
    pretrained = "embedded" # open_clip tag ("openai"), checkpoint path, "embedded"
    data_root = None        # folder holding the datasets (CoOp layout); None = data/world (embedded)
    dataset = None          # None = the embedded default / "eurosat" on real CLIP; "a,b" for several
    shots = 16
    seeds = None            # a list, or a string "1 2 3" / "[1, 2, 3]"; None: 1 2 3 on real CLIP, 1 embedded
    epochs = None           # None = each method's protocol default (scaled down in quick mode)
    device = "auto"
    quick = False           # a fast smoke run: few epochs, one seed, coarse grids
    interactive = True      # widgets and progress bars; the report runs with False
    precision = "fp32"      # fp32 | fp16 (the reference trainers' half precision, GPU) | amp (autocast)

and then calls :func:`setup` with them. The returned :class:`Setup` holds the parameters as a
:class:`~dpclab.source.Source` and a :class:`~dpclab.lab.plan.Scope`; ``S.planned("02")`` gives the runs notebook 02
requests (:mod:`dpclab.lab.plan`, the list ``python -m dpclab grid`` trains and ``estimate`` prices) and ``S.run(r)``
trains or reuses one through :func:`dpclab.pipeline.run`: the notebooks hold no experiment logic of their own.
Figures are in :mod:`dpclab.lab.plots`, widgets in :mod:`dpclab.lab.widgets`, statistics in :mod:`dpclab.evaluate`.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd
import torch

from dpclab.backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED
from dpclab.data.world import ensure_world as write_missing_world
from dpclab.lab.alttext import enable as enable_alt_text
from dpclab.lab.matrix import run_matrix
from dpclab.lab.plan import PlannedRun, Scope, requests
from dpclab.pipeline import effective_epochs, run
from dpclab.experiment import Experiment, cached_backbone
from dpclab.runconfig import RunConfig
from dpclab.source import Source

log = logging.getLogger(__name__)

#: environment variable naming a JSON-lines file where every run a notebook requests is recorded (tests compare
#: them with the plan: tests/test_plan.py)
REQUEST_LOG_ENV = "DPCLAB_REQUEST_LOG"


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root when run from it or from ``notebooks/`` (Jupyter starts kernels in the notebook's folder)."""
    here = Path(start or os.getcwd()).resolve()
    for cand in (here, here.parent):
        if (cand / "notebooks").is_dir() and (cand / "dpclab").is_dir():
            return cand
    return here


def ensure_world(data_root: str | os.PathLike, datasets: Sequence[str]) -> None:
    """Write the embedded world's datasets that are missing under ``data_root`` (deterministic, a few seconds);
    :func:`dpclab.data.world.ensure_world` (locked, stamped with the generator version)."""
    write_missing_world(data_root, datasets)


@dataclass
class Setup:
    """A notebook's resolved parameters: its :class:`~dpclab.source.Source`, its :class:`~dpclab.lab.plan.Scope`
    (datasets, seeds, epochs, quick), and the runs they describe. ``S.model``, ``S.shots``... read the source."""

    source: Source
    scope: Scope
    #: widgets and progress bars (the report runs with False)
    interactive: bool = True
    _experiments: dict = field(default_factory=dict, repr=False)
    _notebook: str = field(default="", repr=False)

    def __getattr__(self, name: str):  # the source's fields and label: S.model, S.shots, S.precision, S.label...
        source = self.__dict__.get("source")
        if source is None or name.startswith("_"):
            raise AttributeError(name)
        return getattr(source, name)

    @property
    def datasets(self) -> list[str]:
        return list(self.scope.datasets)

    @property
    def dataset(self) -> str:
        """The first (main) dataset."""
        return self.scope.datasets[0]

    @property
    def seeds(self) -> list[int]:
        return list(self.scope.seeds)

    @property
    def epochs(self) -> int | None:
        return self.scope.epochs

    @property
    def quick(self) -> bool:
        return self.scope.quick

    @property
    def progress(self) -> bool:
        return self.interactive

    def backbone(self):
        return cached_backbone(self.model, self.pretrained, self.device, self.precision)

    def train_overrides(self, method: str) -> tuple[dict, dict]:
        """(train, base_train) overrides for ``method``: :meth:`dpclab.lab.plan.Scope.train_overrides`."""
        return self.scope.train_overrides(method)

    def config(self, method: str, seed: int | None = None, dataset: str | None = None, **overrides):
        """A :class:`~dpclab.runconfig.RunConfig` for ``method`` with this notebook's parameters.

        ``overrides`` are RunConfig fields (the source's too); ``train``/``base_train`` dicts are merged over the epoch settings.
        """
        train, base_train = self.train_overrides(method)
        overrides["train"] = {**train, **overrides.get("train", {})}
        overrides["base_train"] = {**base_train, **overrides.get("base_train", {})}
        return RunConfig.of(self.source, method=method, dataset=dataset or self.dataset,
                            seed=self.seeds[0] if seed is None else seed, **{"progress": self.progress, **overrides})

    def effective_epochs(self, method: str) -> dict:
        """The epochs ``method`` really trains with these parameters (:func:`dpclab.pipeline.effective_epochs`):
        ``{"epochs": n}`` plus ``"step1_epochs"`` for two-step plug-ins (DPC)."""
        return effective_epochs(self.config(method))

    def experiment(self, seed: int | None = None, dataset: str | None = None, train_classes: str = "base"):
        """The (memoised) :class:`~dpclab.experiment.Experiment` of one dataset and few-shot seed."""
        cfg = self.config("zeroshot", seed, dataset, train_classes=train_classes)
        key = (cfg.dataset, cfg.seed, train_classes)
        if key not in self._experiments:
            self._experiments[key] = Experiment.prepare(cfg, self.backbone())
        return self._experiments[key]

    def planned(self, notebook: str) -> dict[str, list[PlannedRun]]:
        """The runs notebook ``notebook`` requests (:func:`dpclab.lab.plan.requests`: what ``grid`` trains for it), by
        label (``"coop"``, ``"oracle"``, an ablation row...), each label's runs over datasets and seeds."""
        self._notebook = str(notebook)[:2]
        own = self.scope.for_notebook(self._notebook)
        if own.datasets != self.scope.datasets:  # the notebook's own embedded default (dpclab.lab.plan)
            self.scope = own
            ensure_world(self.data_root, self.datasets)
        if self.source.embedded:
            ensure_world(self.data_root, self.scope.side_by_side())
        out: dict[str, list[PlannedRun]] = {}
        for r in requests(notebook, self.scope):
            out.setdefault(r.label, []).append(r)
        return out

    def run(self, method, seed: int | None = None, dataset: str | None = None, on_epoch: Callable | None = None,
            **overrides):
        """Train (or reuse a finished run) and evaluate: :func:`dpclab.pipeline.run`. ``method``: a
        :class:`~dpclab.lab.plan.PlannedRun` (with its ``curve``: base and new accuracy after every epoch, kept in
        ``result.history``) or a method name with ``seed``, ``dataset`` and RunConfig ``overrides``."""
        if isinstance(method, PlannedRun):
            cfg = method.run_config(self.source, progress=self.progress, **overrides)
            label = method.label
        else:
            cfg, label = self.config(method, seed, dataset, **overrides), method
        if getattr(method, "curve", False) and on_epoch is None:
            res = self._run_with_curve(cfg)
        else:
            res = run(cfg, experiment=self.experiment(cfg.seed, cfg.dataset, cfg.train_classes), on_epoch=on_epoch)
        self._record(label, res.run_dir, res.reused)
        return res

    def _run_with_curve(self, cfg):
        """Run ``cfg`` evaluating after every epoch; a finished run trained without these evaluations is retrained
        once (deterministic, so its final numbers do not change)."""
        exp = self.experiment(cfg.seed, cfg.dataset, cfg.train_classes)
        res = run(cfg, experiment=exp, on_epoch=lambda epoch, m: exp.evaluate(m))
        if res.history and "base" not in res.history[-1]:
            res = run(replace(cfg, if_exists="overwrite"), experiment=exp, on_epoch=lambda epoch, m: exp.evaluate(m))
        return res

    def run_with_curve(self, method: str, seed: int | None = None, dataset: str | None = None, **overrides):
        """Like :meth:`run`, evaluating base and new accuracy after every epoch (kept in ``result.history``)."""
        res = self._run_with_curve(self.config(method, seed, dataset, **overrides))
        self._record(method, res.run_dir, res.reused)
        return res

    def _record(self, label: str, run_dir, reused: bool) -> None:
        """Append a request to the JSON-lines file named by $DPCLAB_REQUEST_LOG, if set (tests compare them with
        the plan)."""
        path = os.environ.get(REQUEST_LOG_ENV)
        if path:
            with open(path, "a") as f:
                f.write(json.dumps({"notebook": self._notebook, "label": label, "run_dir": str(run_dir or ""),
                                    "reused": bool(reused)}) + "\n")

    def seed_metrics(self, runs) -> "pd.DataFrame":
        """One row per planned run of ``runs`` (a label's runs from :meth:`planned`): its seed and base / new / HM."""
        return pd.DataFrame([{"seed": r.seed, **self.run(r).metrics} for r in runs])

    def grid(self, planned: dict[str, list[PlannedRun]]) -> "pd.DataFrame":
        """Notebook 06's rows (``planned``: :meth:`planned`, label -> runs) over its datasets x seeds through
        :func:`dpclab.lab.matrix.run_matrix`, one table row per run, each with exactly its planned options."""
        spec = {}
        for label, runs in planned.items():
            spec[label] = (runs[0].method, runs[0].overrides())
            if any(r.overrides() != spec[label][1] for r in runs):
                raise ValueError(f"the planned runs of {label!r} differ between datasets or seeds; run them one by "
                                 f"one with Setup.run")
        return run_matrix(self.source, self.datasets, list(spec), self.seeds, backbone=self.backbone(),
                          progress=self.progress, spec=spec,
                          on_row=lambda row: self._record(row["method"], row["run_dir"], row["reused"]))


def setup(backend: str = "auto", model: str = EMBEDDED_MODEL, pretrained: str = EMBEDDED_PRETRAINED,
          data_root: str | None = None, dataset=None, shots: int = 16, seeds=None, epochs: int | None = None,
          device: str = "auto", quick: bool = False, interactive: bool = True, precision: str = "fp32",
          chdir: bool = True,
          quick_seeds: int = 1, threads: int | None = None) -> Setup:
    """Validate a notebook's parameters and resolve the defaults of its backend (:func:`resolve`), then:

    * embedded: write the missing world datasets under ``data_root`` (default ``data/world``);
    * ``threads``: torch CPU threads. The embedded model's matrices are too small for threads to pay off, and on a
      busy machine several threads spin-wait on each other (measured: 40x slower with 2 threads than with 1 on a
      loaded 2-core box), so the tiny embedded model on CPU uses 1 unless told otherwise.
    * With ``chdir``, a kernel started in ``notebooks/`` moves to the repository root so ``runs/``, ``data/``
      and ``figures/`` are the same folders the CLI uses.
    """
    enable_alt_text()  # every figure the notebook shows carries alt text (screen readers, nbconvert's reports)
    if chdir:
        root = project_root()
        if root != Path.cwd().resolve():
            os.chdir(root)
    s = resolve(dict(backend=backend, model=model, pretrained=pretrained, data_root=data_root, dataset=dataset,
                     shots=shots, seeds=seeds, epochs=epochs, device=device, quick=quick, interactive=interactive,
                     precision=precision), quick_seeds=quick_seeds)
    if threads is None and s.model == EMBEDDED_MODEL and str(s.device) in ("auto", "cpu"):
        threads = 1
    if threads:
        torch.set_num_threads(int(threads))
    if s.source.embedded:
        ensure_world(s.data_root, s.datasets)
    return s


def resolve(parameters: dict, quick_seeds: int = 1) -> Setup:
    """The :class:`Setup` of the notebooks' ``parameters`` (no side effects; missing keys take their defaults):
    ``backend="auto"`` is ``embedded`` for ``pretrained="embedded"``, else ``open_clip``; ``data_root`` defaults
    to ``data/world`` on the embedded backend and is required on real CLIP; ``quick`` keeps the first
    ``quick_seeds`` seeds and scales epochs down (:meth:`dpclab.lab.plan.Scope.epochs_for`)."""
    return Setup(Source.from_parameters(parameters), Scope.from_parameters(parameters, quick_seeds),
                 interactive=str(parameters.get("interactive", True)).lower() in ("true", "1", "yes"))


def class_table(exp) -> "pd.DataFrame":
    """One row per class: its label, whether it is a base or a new class, and its hand-crafted prompt."""
    rows = []
    for split in ("base", "new"):
        task = exp.tasks[split]
        for i, name in enumerate(task.classnames):
            rows.append({"split": split, "label in split": i, "class": name, "prompt": task.template.format(name)})
    return pd.DataFrame(rows)


__all__ = ["Setup", "setup", "resolve", "ensure_world", "project_root", "class_table"]
