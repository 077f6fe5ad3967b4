"""Pricing the report's plan with a device's timings: pure arithmetic, per run and per notebook, for one process and
for N GPUs.

Per planned run (the first request of a run key pays for it; later requests reuse it):

* training: ``epochs x steps x step(C_train)``, ``steps = train images // batch`` (the method's own data when its
  protocol fixes it: PromptKD trains on every training image of all classes; the batch after the protocol's rules,
  e.g. PromptKD on ImageNet 256, a pixel method's step scaled from its timed batch by :func:`step_cost`); pixel
  methods add the decode + augment time of their batch over the DataLoader workers (``max(compute, decode /
  workers)``);
* feature caches (features-kind methods): each augmented view of a training set is encoded once per dataset, seed
  and class set (the first run that needs view ``v`` pays for it), the test set once per dataset;
* evaluation: base and new test sets in batches of :data:`EVAL_BATCH`, ``fixed(C) + B x per_image(C)`` per batch;
  runs that plot curves (notebooks 01, 02) evaluate after every epoch;
* a two-step plug-in's run that finds its step 1 missing from the plan trains it first (same job);
* a run several notebooks request is paid for by the first (the others reuse it: ``per_notebook``);
* the notebooks' own work after training (:data:`NOTEBOOK_WORK`: 03's ω grid and ω_b pick, 05's invariance study),
  done by the report, not the grid.

On N GPUs the grid runs the trained runs as its jobs (``dpclab.lab.jobs``: a job starts on the first free GPU once the
jobs it needs have finished, DPC's step 2 after its step 1), then the report (one process) reuses them and does the
rest.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Sequence

from dpclab.data.shapes import DatasetShape
from dpclab.lab.estimate.model import EVAL_BATCH, DeviceTimings, MethodTimings
from dpclab.lab.jobs import makespan, waves
from dpclab.methods.table import resolve
from dpclab.runconfig import RunConfig, train_config

@dataclass(frozen=True)
class NotebookWork:
    """What a notebook computes on its DPC run after training (the report does it; the grid does not)."""

    #: ω values whose prompts are encoded and evaluated on the base and new test sets
    omegas: int
    #: ω values evaluated on the base validation set (notebook 03's ω_b pick)
    val_omegas: int = 0
    #: further encodings of the base and new class prompts (notebook 05: 3 prompt pairs x its ω values)
    text_passes: int = 0
    #: one line for the summary
    what: str = ""


#: notebook -> (full mode, quick mode) work on its DPC run; 03's grid is ``omega.DEFAULT_OMEGAS`` (21 values)
NOTEBOOK_WORK: dict[str, tuple[NotebookWork, NotebookWork]] = {
    "03": (NotebookWork(21, 21, 0, "ω grid of 21 values + ω_b picked on validation"),
           NotebookWork(11, 11, 0, "ω grid of 11 values + ω_b picked on validation")),
    "05": (NotebookWork(11, 0, 33, "invariance study: 3 prompt pairs x 11 ω + ω grid of 11"),
           NotebookWork(6, 0, 18, "invariance study: 3 prompt pairs x 6 ω + ω grid of 6")),
}
#: the run the notebooks of NOTEBOOK_WORK study
NOTEBOOK_WORK_METHOD = "coop+dpc"


@dataclass(frozen=True)
class RunCost:
    """What one planned run costs (seconds). ``job``: the run key of the grid job that pays for it (``None``: the
    report does it: zero-shot evaluations, reused runs' notebook work)."""

    run: object
    job: tuple | None = None
    train: float = 0.0
    views: float = 0.0
    test_features: float = 0.0
    eval: float = 0.0
    notebook_work: float = 0.0
    epochs: int = 0
    reused: bool = False

    @property
    def trained(self) -> float:
        return self.train + self.views + self.test_features + self.eval

    @property
    def total(self) -> float:
        return self.trained + self.notebook_work


@dataclass(frozen=True)
class WallTime:
    """The report's wall time on ``gpus`` GPUs: the grid (its jobs in dependency waves, each started on the first
    free GPU once the jobs it needs have finished: ``dpclab.lab.jobs.makespan``), then the report in one process."""

    gpus: int
    #: jobs per dependency wave
    waves: tuple[int, ...]
    grid: float
    report: float

    @property
    def total(self) -> float:
        return self.grid + self.report


@dataclass(frozen=True)
class Projection:
    runs: tuple[RunCost, ...]
    #: backbone loads, one per notebook
    loads: float

    @property
    def total(self) -> float:
        return sum(r.total for r in self.runs) + self.loads

    def by(self, key: Callable[[object], str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.runs:
            out[key(r.run)] = out.get(key(r.run), 0.0) + r.total
        return out

    def jobs(self) -> dict[tuple, float]:
        """Seconds per grid job (run key), its inserted step 1 included."""
        out: dict[tuple, float] = {}
        for r in self.runs:
            if r.job is not None:
                out[r.job] = out.get(r.job, 0.0) + r.trained
        return out

    def wall(self, gpus: int, jobs: Sequence, job_key: dict[tuple, str]) -> WallTime:
        """Wall time on ``gpus`` GPUs when the grid runs ``jobs`` (``dpclab.lab.jobs.Job`` s of the plan's trained runs;
        ``job_key``: planned run key -> job key) and the report does the rest."""
        if gpus < 1:
            raise ValueError(f"gpus must be >= 1, got {gpus}.")
        seconds = {job_key[k]: s for k, s in self.jobs().items()}
        missing = [j.key for j in jobs if j.key not in seconds]
        if missing:
            raise ValueError(f"{len(missing)} grid jobs have no price (first: {missing[0]}).")
        grid = makespan(jobs, seconds, gpus)
        return WallTime(gpus, tuple(len(w) for w in waves(jobs)), grid, self.total - sum(seconds.values()))


# ------------------------------------------------------------------------------------------------ per run
def as_dict(value) -> dict:
    """A planned run's options (a dict or sorted (key, value) pairs) as a dict."""
    return dict(value or ())


def run_train_config(run, epochs: int | None = None, shots: int = 16):
    """The :class:`~dpclab.train.TrainConfig` ``run`` trains with: the method's defaults, the dataset's and shot
    count's protocol exceptions and the run's own overrides (``runconfig.train_config``), ``epochs`` on top when
    given."""

    train = {**as_dict(getattr(run, "train", ())), **({} if epochs is None else {"epochs": int(epochs)})}
    cfg = RunConfig.of(method=run.method, dataset=run.dataset, shots=shots, train=train, progress=False)
    return train_config(cfg, resolve(run.method))


def _like(template, d: dict):
    """``d`` in the form of ``template``: sorted (key, value) pairs or a dict."""
    return tuple(sorted(d.items())) if isinstance(template, tuple) else dict(d)


def step_one(run):
    """The base run a two-step plug-in's run trains first (``None`` for other methods)."""
    spec = resolve(run.method)
    if not spec.two_step:
        return None
    kw = {"method": spec.base, "method_cfg": _like(run.method_cfg, as_dict(getattr(run, "base_method_cfg", ()))),
          "curve": False}
    if hasattr(run, "base_train"):
        kw.update(train=run.base_train, base_train=_like(run.base_train, {}),
                  base_method_cfg=_like(run.base_method_cfg, {}))
    return replace(run, **kw)


def steps_per_epoch(n_images: int, batch_size: int) -> int:
    """Full batches only (``Examples.index_batches``), one short batch when fewer images."""
    return n_images // batch_size if n_images >= batch_size else 1


def step_cost(m: MethodTimings, classes: float, batch_size: int) -> float:
    """Seconds of one training step at ``batch_size``: the timed step (at ``m.batch_size``), scaled by the batch
    ratio for pixel methods (their step is the image encoder's forward and backward, linear in the images: PromptKD
    on ImageNet at batch 256, timed at 8); a features method's step is dominated by its text encoding, whatever the
    batch, and is taken as timed."""
    step = m.step(classes)
    if m.kind == "pixels" and batch_size != m.batch_size and m.batch_size > 0:
        return step * batch_size / m.batch_size
    return step


def eval_cost(t: DeviceTimings, m: MethodTimings, n_images: int, classes: int) -> float:
    total = 0.0
    for start in range(0, n_images, EVAL_BATCH):
        b = min(EVAL_BATCH, n_images - start)
        compute = m.eval_fixed(classes) + b * m.eval_per_image(classes)
        total += t.decode(b, compute, train=False) if m.kind == "pixels" else compute
    return total


def work_cost(t: DeviceTimings, m: MethodTimings, shape: DatasetShape, shots: int, work: NotebookWork) -> float:
    """Seconds of a notebook's own work on a run of ``shape``."""
    test = eval_cost(t, m, shape.test_base, shape.base_classes) + eval_cost(t, m, shape.test_new, shape.new_classes)
    val = eval_cost(t, m, shape.val_images(shots), shape.base_classes)
    text = m.eval_fixed(shape.base_classes) + m.eval_fixed(shape.new_classes)
    return work.omegas * test + work.val_omegas * val + work.text_passes * text


def per_notebook(plan: Sequence) -> list:
    """One entry per (run, requesting notebook): a plan lists a run once with every notebook that requests it
    (``requested_by``: 03 and 05 request 02's DPC run); the first request pays for the run, later ones reuse it.
    A plan without ``requested_by`` that files 03's and 05's run under an earlier notebook gets their entries
    added (that run, requested again under their name)."""
    out = [replace(r, notebook=nb) for r in plan for nb in getattr(r, "requested_by", (r.notebook,))]
    earlier = [r for r in plan if r.method == NOTEBOOK_WORK_METHOD and not as_dict(r.method_cfg)
               and r.notebook < min(NOTEBOOK_WORK)]
    for nb in NOTEBOOK_WORK:
        if earlier and not any(r.notebook == nb for r in out):
            out.append(replace(earlier[0], notebook=nb, curve=False))
    return out


def project(plan: Sequence, shapes: dict[str, DatasetShape], t: DeviceTimings, shots: int = 16,
            epochs: int | None = None, notebooks: int = 7, quick: bool = False) -> Projection:
    """Price ``plan`` (planned runs: notebook, dataset, method, seed, method_cfg, train, train_classes, curve, key)
    with the measured timings ``t``; see the module docstring."""
    views_cached: dict[tuple, int] = {}  # (dataset, seed, train_classes) -> views encoded so far
    test_cached: set[str] = set()
    entries = per_notebook(plan)
    planned = {r.key for r in entries}
    priced: set[tuple] = set()
    worked: set[str] = set()
    out: list[RunCost] = []

    def price(run, job) -> RunCost:
        if run.method not in t.methods:
            raise ValueError(f"No timings for method {run.method!r}; measure it (--methods) or drop it from the plan.")
        shape, m = shapes[run.dataset], t.methods[run.method]
        data = resolve(run.method).data  # a method whose protocol fixes its data (PromptKD: every image, all classes)
        n_shots, classes = int(data.get("shots", shots)), data.get("train_classes", run.train_classes)
        c_train = shape.base_classes if classes == "base" else shape.classes
        test = views = train = 0.0
        n_epochs = 0
        if m.kind == "features" and run.dataset not in test_cached:
            test_cached.add(run.dataset)
            test = t.decode(shape.test, shape.test * t.encode, train=False)
        trainable = resolve(run.method).trainable
        if trainable:
            tcfg = run_train_config(run, epochs, shots)
            n = shape.train if n_shots == 0 else shape.train_images(n_shots, classes)
            steps = steps_per_epoch(n, tcfg.batch_size)
            compute = steps * step_cost(m, c_train, tcfg.batch_size)
            n_epochs = tcfg.epochs
            train = n_epochs * (t.decode(steps * tcfg.batch_size, compute, train=True) if m.kind == "pixels"
                                else compute)
            if m.kind == "features":
                vkey = (run.dataset, run.seed, classes, n_shots)
                have, need = views_cached.get(vkey, 0), tcfg.views()
                if need > have:
                    views = (need - have) * t.decode(n, n * t.encode, train=True)
                    views_cached[vkey] = need
        one_eval = eval_cost(t, m, shape.test_base, shape.base_classes) + \
            eval_cost(t, m, shape.test_new, shape.new_classes)
        return RunCost(run, job if trainable else None, train, views, test,
                       one_eval * (1 + (n_epochs if run.curve else 0)), epochs=n_epochs)

    for run in entries:
        cost = RunCost(run, reused=True) if run.key in priced else None
        if cost is None:
            first = step_one(run)
            if first is not None and first.key not in planned and first.key not in priced:
                priced.add(first.key)
                out.append(price(first, run.key))
            priced.add(run.key)
            cost = price(run, run.key)
        work = NOTEBOOK_WORK.get(run.notebook)
        if work is not None and run.notebook not in worked and run.method == NOTEBOOK_WORK_METHOD \
                and not as_dict(run.method_cfg):
            worked.add(run.notebook)
            cost = replace(cost, notebook_work=work_cost(t, t.methods[run.method], shapes[run.dataset], shots,
                                                         work[1 if quick else 0]))
        out.append(cost)
    return Projection(tuple(out), notebooks * t.load)


__all__ = ["NotebookWork", "NOTEBOOK_WORK", "RunCost", "WallTime", "Projection",
           "run_train_config", "step_one", "steps_per_epoch", "step_cost", "eval_cost", "work_cost", "per_notebook",
           "project"]
