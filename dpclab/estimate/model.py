"""The estimate's cost model: measured timings (per method, as functions of the class count) and the arithmetic
that prices a plan of runs with them. Pure: no measuring here (see ``measure.py``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import numpy as np

from ..data.shapes import DatasetShape
from ..grid import PlannedRun

#: evaluation batch size of ``evaluate.predict_logits``
EVAL_BATCH = 256
#: values of the omega grid notebook 03 evaluates DPC on (``omega.DEFAULT_OMEGAS``)
OMEGA_GRID_SIZE = 21
#: class names of realistic token lengths; the estimate appends an index to make them unique


@dataclass(frozen=True)
class Curve:
    """A time as a function of the class count, linear between the measured points (and beyond the last two)."""

    classes: tuple[float, ...]
    seconds: tuple[float, ...]

    def __call__(self, c: float) -> float:
        xs, ys = self.classes, self.seconds
        if len(xs) == 1:
            return ys[0]
        if c <= xs[0] or c >= xs[-1]:  # extrapolate along the nearest segment, never below zero
            i = 0 if c <= xs[0] else len(xs) - 2
            slope = (ys[i + 1] - ys[i]) / (xs[i + 1] - xs[i])
            return max(0.0, ys[i] + slope * (c - xs[i]))
        return float(np.interp(c, xs, ys))

    @classmethod
    def constant(cls, seconds: float) -> "Curve":
        return cls((1.0,), (float(seconds),))


@dataclass
class MethodTimings:
    kind: str  # "features" or "pixels": what the method's steps consume
    step: Curve  # seconds per training step (its SPEC batch), inputs already in memory
    eval_fixed: Curve  # seconds per evaluation batch, independent of its size (text encoding)
    eval_per_image: Curve  # seconds per evaluated example (image tower, per-image prompts)
    batch_size: int = 1


@dataclass
class DeviceTimings:
    device: str
    model: str
    load: float  # seconds to load the backbone
    encode: float  # seconds per image of the frozen image encoder (batch 128, pixels in memory)
    decode_train: float  # seconds per image to decode + augment (one process)
    decode_test: float  # seconds per image to decode + resize + crop (one process)
    workers: int  # DataLoader workers of the real pipeline on this machine
    methods: dict[str, MethodTimings] = field(default_factory=dict)

    def decode(self, images: float, compute: float, train: bool) -> float:
        """Wall time of ``compute`` seconds of model work fed ``images`` decoded images (workers overlap them)."""
        dec = images * (self.decode_train if train else self.decode_test)
        return max(compute, dec / self.workers) if self.workers > 0 else compute + dec

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "DeviceTimings":
        d = json.loads(text)
        methods = {k: MethodTimings(v["kind"], *(Curve(tuple(v[n]["classes"]), tuple(v[n]["seconds"]))
                                                 for n in ("step", "eval_fixed", "eval_per_image")), v["batch_size"])
                   for k, v in d.pop("methods").items()}
        return cls(**d, methods=methods)


@dataclass
class RunCost:
    run: PlannedRun
    train: float = 0.0
    views: float = 0.0  # encoding augmented views into the feature cache
    test_features: float = 0.0
    eval: float = 0.0
    epochs: int = 0

    @property
    def total(self) -> float:
        return self.train + self.views + self.test_features + self.eval


@dataclass
class Projection:
    runs: list[RunCost]
    notebooks_overhead: float  # backbone loads, one per notebook

    @property
    def total(self) -> float:
        return sum(r.total for r in self.runs) + self.notebooks_overhead

    def by(self, key: Callable[[PlannedRun], str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for r in self.runs:
            out[key(r.run)] = out.get(key(r.run), 0.0) + r.total
        return out


def method_train_config(method: str, epochs: int | None):
    from ..pipeline import RunConfig, train_config

    return train_config(RunConfig(method=method, train={} if epochs is None else {"epochs": epochs}, progress=False))


def _steps(n_images: int, batch_size: int) -> int:
    """Steps per epoch: full batches only (``Examples.index_batches``), one short batch when fewer images."""
    return n_images // batch_size if n_images >= batch_size else 1


def _eval_cost(t: DeviceTimings, m: MethodTimings, n_images: int, classes: int) -> float:
    total = 0.0
    for start in range(0, n_images, EVAL_BATCH):
        b = min(EVAL_BATCH, n_images - start)
        compute = m.eval_fixed(classes) + b * m.eval_per_image(classes)
        total += t.decode(b, compute, train=False) if m.kind == "pixels" else compute
    return total


def project(plan: Sequence[PlannedRun], shapes: dict[str, DatasetShape], t: DeviceTimings, shots: int = 16,
            epochs: int | None = None, notebooks: int = 7) -> Projection:
    """Price ``plan`` with the measured timings ``t`` (pure arithmetic: see the module docstring)."""
    from ..methods import PLUGINS, get_method, parse_method

    views_cached: dict[tuple, int] = {}  # (dataset, seed, train_classes) -> views encoded so far
    test_cached: set[str] = set()
    keys = {r.key for r in plan}
    out: list[RunCost] = []
    todo = list(plan)
    for run in plan:  # a two-step plug-in's step 1 that the plan does not list is trained by the plug-in's run
        base, plugin = parse_method(run.method)
        if plugin is not None and PLUGINS[plugin].two_step:
            step1 = PlannedRun(run.notebook, run.dataset, base, run.seed, (), run.train_classes)
            if step1.key not in keys:
                keys.add(step1.key)
                todo.insert(todo.index(run), step1)
    for run in todo:
        if run.method not in t.methods:
            raise ValueError(f"No timings for method {run.method!r}; measure it (--methods) or drop it from the plan.")
        shape = shapes[run.dataset]
        m = t.methods[run.method]
        cost = RunCost(run)
        c_train = shape.base_classes if run.train_classes == "base" else shape.classes
        if m.kind == "features" and run.dataset not in test_cached:
            test_cached.add(run.dataset)
            cost.test_features = t.decode(shape.test, shape.test * t.encode, train=False)
        if get_method(run.method).trainable:
            tcfg = method_train_config(run.method, epochs)
            n = shape.train_images(shots, run.train_classes)
            steps = _steps(n, tcfg.batch_size)
            compute = steps * m.step(c_train)
            per_epoch = t.decode(steps * tcfg.batch_size, compute, train=True) if m.kind == "pixels" else compute
            cost.epochs = tcfg.epochs
            cost.train = tcfg.epochs * per_epoch
            if m.kind == "features":
                vkey = (run.dataset, run.seed, run.train_classes)
                have = views_cached.get(vkey, 0)
                need = tcfg.views()
                if need > have:
                    cost.views = (need - have) * t.decode(n, n * t.encode, train=True)
                    views_cached[vkey] = need
        one_eval = _eval_cost(t, m, shape.test_base, shape.base_classes) + \
            _eval_cost(t, m, shape.test_new, shape.new_classes)
        cost.eval = one_eval * (1 + (cost.epochs if run.curve else 0))
        if run.notebook == "03" and parse_method(run.method)[1] == "dpc":  # the omega grid and its validation pick
            val = shape.val_images(shots)
            cost.eval += OMEGA_GRID_SIZE * (one_eval + _eval_cost(t, m, val, shape.base_classes))
        out.append(cost)
    return Projection(out, notebooks * t.load)

