"""The notebooks' setup: turning the ``parameters`` cell into runs.

Every notebook starts with the same parameters cell (papermill overrides it with ``-p key value``)::

    backend = "auto"        # "embedded" (tiny CLIP + generated world) | "open_clip" (real CLIP) | "auto"
    model = "dpclab-tiny"   # open_clip model name, e.g. "ViT-B-16"
    pretrained = "embedded" # open_clip tag ("openai"), checkpoint path, "embedded"
    data_root = None        # folder holding the datasets (CoOp layout); None = data/world (embedded)
    dataset = None          # None = the embedded default / "eurosat" on real CLIP; "a,b" for several
    shots = 16
    seeds = "1 2 3"         # a list, or a string "1 2 3" / "[1, 2, 3]" (what `-p seeds ...` gives)
    epochs = None           # None = each method's protocol default (scaled down in quick mode)
    device = "auto"
    quick = False           # a fast smoke run: few epochs, one seed, coarse grids
    interactive = True      # widgets and progress bars; the report runs with False
    precision = "fp32"      # fp32 | fp16 (the reference trainers' half precision, GPU) | amp (autocast)

and then calls :func:`setup` with them. The returned :class:`Setup` builds :class:`~dpclab.pipeline.RunConfig`
objects and runs them through :func:`dpclab.pipeline.run`: the notebooks hold no experiment logic of their own.
Figures are in :mod:`dpclab.plots`, widgets in :mod:`dpclab.widgets`, statistics in :mod:`dpclab.evaluate`.
"""

from __future__ import annotations

import ast
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED

log = logging.getLogger(__name__)

#: the keys every notebook's ``parameters`` cell defines (tests/test_notebooks.py checks them)
PARAMETER_KEYS = ("backend", "model", "pretrained", "data_root", "dataset", "shots", "seeds", "epochs", "device",
                  "quick", "interactive", "precision")
#: the embedded world is written here when missing
EMBEDDED_DATA_ROOT = "data/world"
#: the dataset used on real CLIP when none is given
REAL_DEFAULT_DATASET = "eurosat"
#: the world dataset used on the embedded backend when none is given (one with a clear base-new trade-off)
EMBEDDED_DEFAULT_DATASET = "world_tint"
#: quick mode trains each method for ``max(QUICK_MIN_EPOCHS, default // QUICK_EPOCH_DIVISOR)`` epochs at most
QUICK_EPOCH_DIVISOR = 10
QUICK_MIN_EPOCHS = 2


def parse_seeds(seeds) -> list[int]:
    """``[1, 2]``, ``"1 2"``, ``"1,2"``, ``"[1, 2]"`` or ``3`` -> a list of ints (papermill ``-p`` passes strings)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [seeds]
    if isinstance(seeds, str):
        text = seeds.strip()
        if text.startswith(("[", "(")):
            seeds = ast.literal_eval(text)
        else:
            seeds = [s for s in text.replace(",", " ").split() if s]
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError) as err:
        raise ValueError(f"seeds must be integers, e.g. seeds='1 2 3' or [1, 2, 3]; got {seeds!r}") from err
    if not out:
        raise ValueError("seeds is empty; give at least one seed, e.g. seeds='1'.")
    return out


def parse_datasets(dataset) -> list[str]:
    """``"a"``, ``"a,b"``, ``"a b"`` or a list -> list of dataset names."""
    if isinstance(dataset, str):
        return [d for d in dataset.replace(",", " ").split() if d]
    return [str(d) for d in dataset]


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root when run from it or from ``notebooks/`` (Jupyter starts kernels in the notebook's folder)."""
    here = Path(start or os.getcwd()).resolve()
    for cand in (here, here.parent):
        if (cand / "notebooks").is_dir() and (cand / "dpclab").is_dir():
            return cand
    return here


def _resolve_backend(backend: str, pretrained: str) -> str:
    if backend in (None, "", "auto"):
        return "embedded" if str(pretrained) == EMBEDDED_PRETRAINED else "open_clip"
    if backend not in ("embedded", "open_clip"):
        raise ValueError(f"backend must be 'embedded', 'open_clip' or 'auto', not {backend!r}.")
    return backend


def ensure_world(data_root: str | os.PathLike, datasets: Sequence[str]) -> None:
    """Write the embedded world's datasets that are missing under ``data_root`` (deterministic, a few seconds);
    :func:`dpclab.data.world.ensure_world` (locked, stamped with the generator version)."""
    from .data.world import ensure_world as write_missing_world

    write_missing_world(data_root, datasets)


@dataclass
class Setup:
    """The resolved parameters of a notebook, and the runs they describe."""

    backend: str
    model: str
    pretrained: str
    data_root: str
    datasets: list[str]
    shots: int
    seeds: list[int]
    epochs: int | None
    device: str
    quick: bool
    interactive: bool
    precision: str = "fp32"
    runs_dir: str = "runs"
    cache_dir: str = "data/cache"
    _experiments: dict = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> str:
        """The first (main) dataset."""
        return self.datasets[0]

    @property
    def progress(self) -> bool:
        return self.interactive

    @property
    def label(self) -> str:
        """How results are labelled: which backend produced them."""
        if self.backend == "embedded":
            return f"embedded backend ({self.model}, generated world)"
        return f"open_clip backend ({self.model} / {self.pretrained})"

    def backbone(self):
        from .pipeline import cached_backbone

        return cached_backbone(self.model, str(self.pretrained), self.device, self.precision)

    def epochs_for(self, default: int) -> int:
        """The epochs actually trained for a method whose protocol default is ``default``."""
        if self.epochs is not None:
            return int(self.epochs)
        if self.quick:
            return min(default, max(QUICK_MIN_EPOCHS, default // QUICK_EPOCH_DIVISOR))
        return default

    def train_overrides(self, method: str) -> tuple[dict, dict]:
        """(train, base_train) overrides for ``method``: the ``epochs``/``quick`` parameters applied to the
        pipeline's defaults (:func:`dpclab.pipeline.default_train`); none for a method that does not train."""
        from .methods import PLUGINS, get_method, parse_method
        from .pipeline import default_train

        if (self.epochs is None and not self.quick) or not get_method(method).trainable:
            return {}, {}  # the protocol defaults: the same run directories as `python -m dpclab train`
        base_name, plugin = parse_method(method)
        train = {"epochs": self.epochs_for(_default_epochs(default_train(method)))}
        if plugin is None or not PLUGINS[plugin].two_step:
            return train, {}
        return train, {"epochs": self.epochs_for(_default_epochs(default_train(base_name)))}

    def config(self, method: str, seed: int | None = None, dataset: str | None = None, **overrides):
        """A :class:`~dpclab.pipeline.RunConfig` for ``method`` with this notebook's parameters.

        ``overrides`` are RunConfig fields; ``train``/``base_train`` dicts are merged over the epoch settings.
        """
        from .pipeline import RunConfig

        train, base_train = self.train_overrides(method)
        fields = dict(method=method, dataset=dataset or self.dataset, data_root=self.data_root, model=self.model,
                      pretrained=str(self.pretrained), shots=self.shots, seed=self.seeds[0] if seed is None else seed,
                      device=self.device, precision=self.precision, cache_dir=self.cache_dir, runs_dir=self.runs_dir,
                      results=self.results, progress=self.progress)
        fields["train"] = {**train, **overrides.pop("train", {})}
        fields["base_train"] = {**base_train, **overrides.pop("base_train", {})}
        return RunConfig(**{**fields, **overrides})

    @property
    def results(self) -> str:
        """The results table every run appends to."""
        return str(Path(self.runs_dir) / "results.csv")

    def effective_epochs(self, method: str) -> dict:
        """The epochs ``method`` really trains with these parameters (:func:`dpclab.pipeline.effective_epochs`):
        ``{"epochs": n}`` plus ``"step1_epochs"`` for two-step plug-ins (DPC)."""
        from .pipeline import effective_epochs

        return effective_epochs(self.config(method))

    def experiment(self, seed: int | None = None, dataset: str | None = None, train_classes: str = "base"):
        """The (memoised) :class:`~dpclab.pipeline.Experiment` of one dataset and few-shot seed."""
        from .pipeline import Experiment

        cfg = self.config("zeroshot", seed, dataset, train_classes=train_classes)
        key = (cfg.dataset, cfg.seed, train_classes)
        if key not in self._experiments:
            self._experiments[key] = Experiment.prepare(cfg, self.backbone())
        return self._experiments[key]

    def run(self, method: str, seed: int | None = None, dataset: str | None = None,
            on_epoch: Callable | None = None, **overrides):
        """Train (or reuse a finished run) and evaluate ``method``: :func:`dpclab.pipeline.run`."""
        from .pipeline import run

        cfg = self.config(method, seed, dataset, **overrides)
        exp = self.experiment(cfg.seed, cfg.dataset, cfg.train_classes)
        return run(cfg, experiment=exp, on_epoch=on_epoch)

    def run_with_curve(self, method: str, seed: int | None = None, dataset: str | None = None, **overrides):
        """Like :meth:`run`, evaluating base and new accuracy after every epoch (kept in ``result.history``).

        A finished run that was trained without these per-epoch evaluations is retrained once (deterministic,
        so its final numbers do not change)."""
        cfg = self.config(method, seed, dataset, **overrides)
        exp = self.experiment(cfg.seed, cfg.dataset, cfg.train_classes)
        res = self.run(method, seed, dataset, on_epoch=lambda epoch, m: exp.evaluate(m), **overrides)
        if res.history and "base" not in res.history[-1]:
            res = self.run(method, seed, dataset, on_epoch=lambda epoch, m: exp.evaluate(m),
                           **{**overrides, "if_exists": "overwrite"})
        return res

    def seed_metrics(self, method: str, dataset: str | None = None) -> "pd.DataFrame":
        """One row per seed of this notebook: the seed and the base / new / HM of ``method`` (run or reused)."""
        import pandas as pd

        return pd.DataFrame([{"seed": seed, **self.run(method, seed, dataset).metrics} for seed in self.seeds])

    def grid(self, methods: Sequence[str], spec: dict | None = None) -> "pd.DataFrame":
        """Every dataset x method x seed of this notebook through :func:`dpclab.benchmark.run_matrix` (one row per
        run), each method trained with the epochs :meth:`config` gives it. ``spec``: row labels -> (method, run
        overrides), e.g. :func:`dpclab.paper_numbers.reproduction_runs`."""
        from .benchmark import run_matrix

        return run_matrix(self.datasets, methods, self.seeds, data_root=self.data_root, model=self.model,
                        pretrained=self.pretrained, shots=self.shots, train_for=self.train_overrides,
                        runs_dir=self.runs_dir, cache_dir=self.cache_dir, results=self.results, device=self.device,
                        backbone=self.backbone(), progress=self.progress, precision=self.precision, spec=spec)


def _default_epochs(train: dict) -> int:
    from .train import TrainConfig

    return int(train.get("epochs", TrainConfig.epochs))


def setup(backend: str = "auto", model: str = EMBEDDED_MODEL, pretrained: str = EMBEDDED_PRETRAINED,
          data_root: str | None = None, dataset=None, shots: int = 16, seeds="1 2 3", epochs: int | None = None,
          device: str = "auto", quick: bool = False, interactive: bool = True, precision: str = "fp32", chdir: bool = True,
          quick_seeds: int = 1, threads: int | None = None) -> Setup:
    """Validate a notebook's parameters and resolve the defaults of its backend.

    * ``backend="auto"`` is ``embedded`` for ``pretrained="embedded"``, else ``open_clip``.
    * Embedded: ``data_root`` defaults to ``data/world`` and missing world datasets are written there.
      Real CLIP: ``data_root`` is required (the folder with ``eurosat/``, ``dtd/``... in the CoOp layout).
    * ``quick`` keeps the first ``quick_seeds`` seeds and scales epochs down (see :meth:`Setup.epochs_for`).
    * ``threads``: torch CPU threads. The embedded model's matrices are too small for threads to pay off, and on a
      busy machine several threads spin-wait on each other (measured: 40x slower with 2 threads than with 1 on a
      loaded 2-core box), so the tiny embedded model on CPU uses 1 unless told otherwise.
    * With ``chdir``, a kernel started in ``notebooks/`` moves to the repository root so ``runs/``, ``data/``
      and ``figures/`` are the same folders the CLI uses.
    """
    from .alttext import enable as enable_alt_text

    enable_alt_text()  # every figure the notebook shows carries alt text (screen readers, nbconvert's reports)
    if chdir:
        root = project_root()
        if root != Path.cwd().resolve():
            os.chdir(root)
    backend = _resolve_backend(backend, pretrained)
    if threads is None and model == EMBEDDED_MODEL and str(device) in ("auto", "cpu"):
        threads = 1
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if backend == "embedded" and (model != EMBEDDED_MODEL or str(pretrained) != EMBEDDED_PRETRAINED):
        raise ValueError(f"backend='embedded' runs model={EMBEDDED_MODEL!r}, pretrained='embedded'; got "
                         f"model={model!r}, pretrained={pretrained!r}. For real CLIP use backend='open_clip' "
                         f"(or 'auto').")
    if dataset in (None, ""):
        dataset = EMBEDDED_DEFAULT_DATASET if backend == "embedded" else REAL_DEFAULT_DATASET
    datasets = parse_datasets(dataset)
    if data_root in (None, ""):
        if backend != "embedded":
            raise ValueError("data_root is required on real CLIP: pass the folder holding the CoOp-layout datasets, "
                             "e.g. papermill -p data_root ~/data (it should contain eurosat/, dtd/, ...).")
        data_root = EMBEDDED_DATA_ROOT
    data_root = str(Path(data_root).expanduser())
    if backend == "embedded":
        ensure_world(data_root, datasets)
    seeds = parse_seeds(seeds)
    if quick:
        seeds = seeds[:max(1, quick_seeds)]
    if shots is None or int(shots) < 1:
        raise ValueError(f"shots must be a positive integer (16 in the papers), got {shots!r}.")
    if epochs is not None and int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0 or None (method default), got {epochs!r}.")
    return Setup(backend=backend, model=model, pretrained=str(pretrained), data_root=data_root, datasets=datasets,
                 shots=int(shots), seeds=seeds, epochs=None if epochs is None else int(epochs), device=device,
                 quick=bool(quick), interactive=bool(interactive), precision=str(precision))


def class_table(exp) -> "pd.DataFrame":
    """One row per class: its label, whether it is a base or a new class, and its hand-crafted prompt."""
    import pandas as pd

    rows = []
    for split in ("base", "new"):
        task = exp.tasks[split]
        for i, name in enumerate(task.classnames):
            rows.append({"split": split, "label in split": i, "class": name, "prompt": task.template.format(name)})
    return pd.DataFrame(rows)


__all__ = ["PARAMETER_KEYS", "Setup", "setup", "parse_seeds", "parse_datasets", "ensure_world", "project_root",
           "class_table"]
