"""The report's runs as data, in one place: what each notebook (00-06) requests, for the notebooks, ``grid`` and
``estimate`` alike.

* :func:`requests` -- the runs one notebook asks for, each with its label (``coop``, ``oracle``, an ablation row,
  a notebook-06 row such as ``coop (DePT setting)``), method options, train overrides and train classes. The
  notebooks get theirs through :meth:`dpclab.lab.notebook.Setup.planned` and run exactly these.
* :func:`report_plan` -- every notebook's requests, one entry per run key: a run asked for by several notebooks
  (03 and 05 use 02's DPC run) is listed once, with all of them in ``notebooks``; ``curve`` when any asks for the
  per-epoch evaluations. ``python -m dpclab grid`` trains it, ``python -m dpclab estimate`` prices it.
* :func:`report_spec` -- notebook 06's rows (the papers' released settings).

The plan as jobs (two-step plug-ins after their step 1) is :func:`dpclab.lab.trainjobs.grid_jobs`: the plan is data and
imports nothing that trains.

The parameters are the notebooks' (``report -p key value``): ``dataset``, ``seeds``, ``epochs``, ``quick`` here
(:class:`Scope`), the rest are the :class:`~dpclab.source.Source`. Per-dataset protocol exceptions (CoOp on
ImageNet: 50 epochs) are applied where a run's training settings are resolved (:mod:`dpclab.protocol`).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field, replace
from typing import Iterable, Mapping, Sequence

from dpclab.data.coop import DATASETS
from dpclab.lab.paper_numbers import PAPER_BASES, reproduction_runs
from dpclab.methods.table import method_names, resolve
from dpclab.runconfig import RunConfig
from dpclab.runkey import key_fields
from dpclab.source import EMBEDDED_PRETRAINED, Source, resolve_backend
from dpclab.trainconfig import TrainConfig

#: the notebooks, in order
NOTEBOOKS = ("00", "01", "02", "03", "04", "05", "06")
#: the dataset used on real CLIP when none is given
REAL_DEFAULT_DATASET = "eurosat"
#: the world dataset used on the embedded backend when none is given (one with a clear base-new trade-off)
EMBEDDED_DEFAULT_DATASET = "world_tint"
#: a notebook whose embedded default differs: 06 compares the methods' base gains, and on world_tint every method
#: sits at 98.9-99.4 base. world_shapes is not saturated (zero-shot 88, CoOp 85-87 base with 90 % of its shots
#: fitted, probe 85) and is the cheapest world dataset (8 base classes), which keeps the main job in its budget;
#: world_placement (issue 22, more room: CoOp fits about 60 % of its shots) has 18 base classes and would triple
#: 06's cost. 03's sliders study world_shapes too, where P′ changes base accuracy (the ω_b sweep rises towards P′;
#: on world_tint it dips, 03's side-by-side contrast): its DPC run is 02's side-by-side one, no run added
EMBEDDED_NOTEBOOK_DATASETS = {"03": ("world_shapes",), "06": ("world_shapes",)}
#: notebooks 02 and 03 show DPC side by side (paper and released mode) on these embedded datasets when none is
#: given: world_shapes, where CoOp leaves room and DPC lifts base (seed 1: +1.25 in both modes), and world_tint,
#: where CoOp already fits ~99 % of its shots and DPC lowers base. world_shapes is 06's dataset: the side-by-side
#: reuses 06's CoOp and released-DPC runs and adds one run (paper mode)
DPC_SIDE_BY_SIDE = ("world_shapes", "world_tint")
#: the few-shot seeds when none are given, per backend: the papers' three on real CLIP; one on the embedded backend,
#: whose main job is a tour of every notebook that must stay within minutes on a laptop (``-p seeds '1 2 3'``: all
#: three, about two and a half times the training)
DEFAULT_SEEDS = {"embedded": (1,), "open_clip": (1, 2, 3)}
#: quick mode trains each method for ``max(QUICK_MIN_EPOCHS, default // QUICK_EPOCH_DIVISOR)`` epochs at most
QUICK_EPOCH_DIVISOR = 10
QUICK_MIN_EPOCHS = 2
#: the baselines of notebook 01
BASELINES = ("coop", "kgcoop")
#: DPC's ablation (its paper's Table 4; notebook 02 and ``dpc-study``): configuration -> the DPC options that switch
#: parts off
DPC_ABLATION = {
    "two-step training only": {"loss": "ce", "negatives": "random", "omega_b": 1.0, "decouple": False},
    "+ DHNO": {"omega_b": 1.0, "decouple": False},
    "+ DHNO + weighting": {"decouple": False},
    "weighting + decoupling, no DHNO": {"loss": "ce", "negatives": "random"},
    "full DPC (DHNO + weighting + decoupling)": {},
}


def parse_seeds(seeds) -> list[int]:
    """``[1, 2]``, ``"1 2"``, ``"1,2"``, ``"[1, 2]"`` or ``3`` -> a list of ints >= 0 (``-p`` passes strings)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        seeds = [seeds]
    if isinstance(seeds, str):
        text = seeds.strip()
        seeds = ast.literal_eval(text) if text.startswith(("[", "(")) else text.replace(",", " ").split()
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError) as err:
        raise ValueError(f"seeds must be integers, e.g. seeds='1 2 3' or [1, 2, 3]; got {seeds!r}") from err
    if not out:
        raise ValueError("seeds is empty; give at least one seed, e.g. seeds='1'.")
    if min(out) < 0:
        raise ValueError(f"seeds must be >= 0 (the papers use 1 2 3), got {out}.")
    return out


def parse_datasets(dataset) -> list[str]:
    """``"a"``, ``"a,b"``, ``"a b"`` or a list -> list of dataset names."""
    if isinstance(dataset, str):
        return [d for d in dataset.replace(",", " ").split() if d]
    return [str(d) for d in dataset]


@dataclass(frozen=True)
class Scope:
    """What the notebooks' parameters decide besides the source: which datasets and seeds, and how long to train."""

    #: the datasets (the first is the main one, used by notebooks 00-05)
    datasets: tuple[str, ...]
    #: few-shot seeds (quick mode keeps the first; default :data:`DEFAULT_SEEDS`)
    seeds: tuple[int, ...]
    #: every trained method's epochs (None: each method's protocol default, scaled down when quick)
    epochs: int | None = None
    #: the fast smoke mode of the notebooks
    quick: bool = False
    #: the datasets are the embedded backend's defaults (no ``dataset`` parameter): notebooks may use their own
    embedded_default: bool = False

    @classmethod
    def from_parameters(cls, parameters: Mapping, quick_seeds: int = 1) -> "Scope":
        """The scope of the notebooks' ``parameters`` (missing keys take the notebooks' defaults)."""
        p = {k: v for k, v in parameters.items() if v is not None}
        quick = str(p.get("quick", False)).lower() in ("true", "1", "yes")
        backend = resolve_backend(p.get("backend"), str(p.get("pretrained", EMBEDDED_PRETRAINED)))
        dataset = p.get("dataset") or (EMBEDDED_DEFAULT_DATASET if backend == "embedded" else REAL_DEFAULT_DATASET)
        seeds = parse_seeds(p.get("seeds", DEFAULT_SEEDS[backend]))
        epochs = p.get("epochs")
        if epochs is not None:
            epochs = int(epochs)
            if epochs < 1:
                raise ValueError(f"epochs must be >= 1 (or None: each method's protocol default), got {epochs}; "
                                 f"zero-shot CLIP needs no epochs setting.")
        embedded_default = not p.get("dataset") and dataset == EMBEDDED_DEFAULT_DATASET
        return cls(tuple(parse_datasets(dataset)), tuple(seeds[:max(1, quick_seeds)] if quick else seeds), epochs,
                   quick, embedded_default)

    def for_notebook(self, notebook: str) -> "Scope":
        """This scope as notebook ``notebook`` uses it: its own embedded default datasets
        (:data:`EMBEDDED_NOTEBOOK_DATASETS`) when no dataset was given."""
        own = EMBEDDED_NOTEBOOK_DATASETS.get(str(notebook)[:2])
        return replace(self, datasets=own) if own and self.embedded_default else self

    def side_by_side(self) -> tuple[str, ...]:
        """The datasets notebooks 02 and 03 compare DPC on: :data:`DPC_SIDE_BY_SIDE` by default, else the given
        datasets (the first two)."""
        return DPC_SIDE_BY_SIDE if self.embedded_default else self.datasets[:2]

    def epochs_for(self, default: int) -> int:
        """The epochs actually trained for a method whose protocol default is ``default``."""
        if self.epochs is not None:
            return self.epochs
        if self.quick:
            return min(default, max(QUICK_MIN_EPOCHS, default // QUICK_EPOCH_DIVISOR))
        return default

    def train_overrides(self, method: str) -> tuple[dict, dict]:
        """(train, base_train) overrides of ``method``: ``epochs``/``quick`` applied to the method's defaults; none
        for a method that does not train, nor without ``epochs``/``quick`` (the protocol defaults, with their
        per-dataset exceptions: the same run directories as ``python -m dpclab train``)."""
        spec = resolve(method)
        if (self.epochs is None and not self.quick) or not spec.trainable:
            return {}, {}
        train = {"epochs": self.epochs_for(_default_epochs(spec.train))}
        return train, ({"epochs": self.epochs_for(_default_epochs(spec.step1.train))} if spec.two_step else {})


def _default_epochs(train) -> int:
    return int(train.get("epochs", TrainConfig.epochs))


class _FrozenDict(dict):
    """A dict option value inside a run key (PromptKD's ``teacher_train``): still a dict to its reader, hashable."""

    def __hash__(self):
        return hash(tuple(sorted(self.items())))


def _items(d: Mapping | None) -> tuple:
    return tuple(sorted((k, _FrozenDict(v) if isinstance(v, dict) else v) for k, v in (d or {}).items()))


#: metadata of a PlannedRun field that identifies the run (:mod:`dpclab.runkey`, role "job")
_JOB = {"key": ("job",)}


@dataclass(frozen=True)
class PlannedRun:
    """One run a notebook requests. Dict-valued options are sorted (key, value) tuples (hashable)."""

    #: the (first) notebook requesting it: "00" ... "06"
    notebook: str
    #: the dataset's name
    dataset: str = field(metadata=_JOB)
    #: the method's name
    method: str = field(metadata=_JOB)
    #: the few-shot seed
    seed: int = field(metadata=_JOB)
    #: RunConfig.method_cfg
    method_cfg: tuple = field(default=(), metadata=_JOB)
    #: base (all base-to-new classes trained on) | all (the oracle)
    train_classes: str = field(default="base", metadata=_JOB)
    #: evaluated on base and new test data after every epoch (notebooks 01, 02)
    curve: bool = False
    #: RunConfig.base_method_cfg, .train and .base_train
    base_method_cfg: tuple = field(default=(), metadata=_JOB)
    #: RunConfig.train
    train: tuple = field(default=(), metadata=_JOB)
    #: RunConfig.base_train
    base_train: tuple = field(default=(), metadata=_JOB)
    #: what the notebook calls it (a method name, "oracle", an ablation row, a notebook-06 row label)
    label: str = ""
    #: every notebook requesting it (report_plan); () = just ``notebook``
    notebooks: tuple = ()

    @property
    def key(self) -> tuple:
        """Equal keys, same run directory (for one source): the fields :func:`dpclab.runkey.key_fields` reads."""
        return tuple(key_fields(self, "job").items())

    @property
    def requested_by(self) -> tuple:
        return self.notebooks or (self.notebook,)

    def overrides(self) -> dict:
        """The RunConfig fields of this run besides the source, method, dataset and seed."""
        return dict(method_cfg=dict(self.method_cfg), base_method_cfg=dict(self.base_method_cfg),
                    train=dict(self.train), base_train=dict(self.base_train), train_classes=self.train_classes)

    def run_config(self, source: Source, **overrides) -> RunConfig:
        """Its :class:`~dpclab.runconfig.RunConfig` from ``source``; ``overrides`` are RunConfig fields."""
        return RunConfig(self.method, self.dataset, self.seed, source=source, **{**self.overrides(), **overrides})

    def describe(self) -> str:
        opts = {k: dict(v) for k, v in (("opt", self.method_cfg), ("base_opt", self.base_method_cfg),
                                         ("train", self.train), ("base_train", self.base_train)) if v}
        extra = "".join(f" {k}={v}" for k, v in opts.items())
        return (f"{','.join(self.requested_by):8s} {self.dataset:14s} {self.method:16s} seed {self.seed} "
                f"{self.train_classes}{' curve' if self.curve else ''}{extra}")


def _run(nb: str, scope: Scope, method: str, seed: int, dataset: str | None = None, label: str | None = None,
         curve: bool = False, train_classes: str = "base", **over) -> PlannedRun:
    """A request of notebook ``nb``: ``over`` are RunConfig overrides (method_cfg, train, ...) over the scope's
    epochs."""
    train, base_train = scope.train_overrides(method)
    over = _teacher_epochs(scope, method, over)
    two_step = resolve(method).two_step
    return PlannedRun(nb, dataset or scope.datasets[0], method, seed, _items(over.get("method_cfg")), train_classes,
                      curve, _items(over.get("base_method_cfg")), _items({**train, **over.get("train", {})}),
                      _items({**base_train, **over.get("base_train", {})}) if two_step else (), label or method)


def _teacher_epochs(scope: Scope, method: str, over: dict) -> dict:
    """``epochs``/``quick`` reach a distilling method's teacher run too (PromptKD's ``teacher_epochs``): its teacher is
    then the very run of the notebooks' own row of the teacher method (PromptSRC)."""
    spec = resolve(method)
    key = "base_method_cfg" if spec.plugin else "method_cfg"
    own = dict(over.get(key) or {})
    teacher = spec.teacher_epochs_option(own)  # (its method, the option setting its epochs), from the table entry
    if teacher is None or (scope.epochs is None and not scope.quick):
        return over
    own.setdefault(teacher[1], scope.epochs_for(_default_epochs(dict(resolve(teacher[0]).train))))
    return {**over, key: own}


def _n00(s: Scope) -> list[PlannedRun]:
    return [_run("00", s, "zeroshot", seed, label="zero-shot") for seed in s.seeds]


def _n01(s: Scope) -> list[PlannedRun]:
    out = [_run("01", s, "zeroshot", s.seeds[0], label="zero-shot")]
    return out + [_run("01", s, m, seed, curve=seed == s.seeds[0]) for m in BASELINES if m in method_names()
                  for seed in s.seeds]


def _side_by_side(nb: str, s: Scope) -> list[PlannedRun]:
    """CoOp, DPC in ``paper`` mode and in ``released`` mode on each of :meth:`Scope.side_by_side`'s datasets, labelled
    ``"<dataset>: coop"``, ``"<dataset>: coop+dpc"``, ``"<dataset>: coop+dpc[released]"``."""
    s0 = s.seeds[0]
    return [_run(nb, s, method, s0, dataset=d, label=f"{d}: {label}", method_cfg=cfg)
            for d in s.side_by_side() for method, label, cfg in (("coop", "coop", None), ("coop+dpc", "coop+dpc", None),
                                                               ("coop+dpc", "coop+dpc[released]", {"mode": "released"}))]


def _n02(s: Scope) -> list[PlannedRun]:
    s0 = s.seeds[0]
    out = [_run("02", s, "zeroshot", s0, label="zero-shot"), _run("02", s, "coop", s0, curve=True),
           _run("02", s, "coop+dpc", s0, curve=True)]
    out += [_run("02", s, "coop+dpc", s0, label=name, method_cfg=cfg) for name, cfg in DPC_ABLATION.items()]
    return out + _side_by_side("02", s)


def _n03(s: Scope) -> list[PlannedRun]:
    return [_run("03", s, "coop+dpc", s.seeds[0])] + _side_by_side("03", s)


def _n04(s: Scope) -> list[PlannedRun]:
    s0 = s.seeds[0]
    return [_run("04", s, "zeroshot", s0, label="zero-shot"), _run("04", s, "coop", s0, label="CoOp"),
            _run("04", s, "coop", s0, label="oracle", train_classes="all"),
            _run("04", s, "coop+dept", s0, label="CoOp + DePT"), _run("04", s, "coop+dpc", s0, label="CoOp + DPC")]


def _n05(s: Scope) -> list[PlannedRun]:
    return [_run("05", s, "coop+dpc", s.seeds[0])]


def report_spec(real_clip: bool = False) -> dict[str, tuple[str, dict]]:
    """Notebook 06's rows: :func:`dpclab.lab.paper_numbers.reproduction_runs` of every method of this installation plus
    each plug-in on its papers' bases (:data:`~dpclab.lab.paper_numbers.PAPER_BASES`) where the tables admit the pair
    (``real_clip``: on the 11 CoOp datasets with real CLIP, where PromptKD takes its released ViT-L/14 teacher)."""
    names = method_names()
    methods = [n for n in names if "+" not in n] + [f"{b}+{p}" for p, bases in PAPER_BASES.items() for b in bases
                                                     if f"{b}+{p}" in names]
    return reproduction_runs(methods, real_clip)


def _n06(s: Scope) -> list[PlannedRun]:
    """:func:`report_spec`'s rows on every dataset and seed: the released settings (DePT's
    own baselines of its ``+dept`` rows, DPC's released mode) and, on the 11 CoOp datasets (real CLIP), PromptKD's
    released ViT-L/14 teacher."""

    specs = {real: report_spec(real_clip=real) for real in (False, True)}
    return [_run("06", s, specs[d in DATASETS][label][0], seed, d, label, **specs[d in DATASETS][label][1])
            for label in specs[False] for d in s.datasets for seed in s.seeds]


_REQUESTS = {"00": _n00, "01": _n01, "02": _n02, "03": _n03, "04": _n04, "05": _n05, "06": _n06}


def requests(notebook: str, scope: Scope) -> list[PlannedRun]:
    """The runs notebook ``notebook`` ("00" ... "06", or a file stem such as "06_reproducibility_report") asks for,
    in its order."""
    nb = str(notebook)[:2]
    if nb not in _REQUESTS:
        raise ValueError(f"No plan for notebook {notebook!r}; the notebooks are {', '.join(NOTEBOOKS)}.")
    return _REQUESTS[nb](scope.for_notebook(nb))


def deduplicate(runs: Iterable[PlannedRun]) -> list[PlannedRun]:
    """One entry per run key, first request first, with every requesting notebook and ``curve`` if any wants it."""
    plan: dict[tuple, PlannedRun] = {}
    for r in runs:
        first = plan.get(r.key)
        if first is None:
            plan[r.key] = replace(r, notebooks=(r.notebook,))
        else:
            nbs = first.notebooks + ((r.notebook,) if r.notebook not in first.notebooks else ())
            plan[r.key] = replace(first, notebooks=nbs, curve=first.curve or r.curve)
    return list(plan.values())


def report_plan(parameters: Mapping | Scope | None = None, notebooks: Sequence[str] = NOTEBOOKS) -> list[PlannedRun]:
    """Every run of ``notebooks`` under the notebooks' ``parameters`` (as ``report -p``: dataset, seeds, epochs,
    quick, backend/pretrained for the default dataset), each run once (:func:`deduplicate`)."""
    scope = parameters if isinstance(parameters, Scope) else Scope.from_parameters(parameters or {})
    return deduplicate(r for nb in notebooks for r in requests(nb, scope))


def planned_datasets(parameters: Mapping) -> tuple[list[str], list[int]]:
    """The datasets and seeds the notebooks use under ``parameters``: every planned run's (06 and DPC's side-by-side
    have their own), for the report's provenance; the given ``dataset`` and ``seeds`` when the parameters make no
    plan (a dataset the plan does not know)."""
    try:
        scope = Scope.from_parameters(parameters)
        return list(dict.fromkeys(r.dataset for r in report_plan(scope))), list(scope.seeds)
    except ValueError:
        return [str(parameters.get("dataset"))], parameters.get("seeds")


def needs_training(run: PlannedRun) -> bool:
    return resolve(run.method).trainable


def run_label(run: PlannedRun) -> str:
    """``02,03 world_tint coop+dpc seed 1 decouple=False``: what the grid's per-run lines call a run (the notebooks
    requesting it, its row label when that is not the method, its options)."""
    opts = " ".join(f"{k}={v}" for k, v in run.method_cfg + run.base_method_cfg)
    extra = (" all classes" if run.train_classes == "all" else "") + (" curve" if run.curve else "")
    label = f" [{run.label}]" if run.label and run.label != run.method else ""
    return (f"{','.join(run.requested_by)} {run.dataset} {run.method}{label} seed {run.seed}{extra}"
            f"{' ' + opts if opts else ''}")


__all__ = ["NOTEBOOKS", "DEFAULT_SEEDS", "DPC_ABLATION", "BASELINES", "Scope", "PlannedRun", "requests", "deduplicate",
           "report_plan", "report_spec", "planned_datasets", "needs_training", "run_label", "parse_seeds", "parse_datasets"]
