"""What the full report costs on this device, before launching it: ``python -m dpclab estimate``.

It times a few training steps and evaluation batches of every method the report runs, with the model's real shapes
(its weights are irrelevant to the time: ``--pretrained random`` needs no download) on synthetic images, at a few
class counts spanning the datasets', and prices the report's plan (``dpclab.grid.report_plan``: every notebook's
runs, the datasets' sizes from ``dpclab.data.shapes``) with this cost model, per run:

* training: ``epochs x steps x step(C_train)``, ``steps = train images // batch``; a step's time is measured on
  preloaded inputs, and pixel methods add the decode + augment time of their batch, divided over the DataLoader
  workers (``max(compute, decode / workers)``: workers decode while the model runs);
* feature caches (features-kind methods): each augmented view of a training set is encoded once per dataset, seed
  and class set (the first run that needs view ``v`` pays for it; later methods reuse it), the test set once per
  dataset;
* evaluation: base and new test sets in batches of 256 (``evaluate.predict_logits``), ``fixed(C) + B x
  per_image(C)`` per batch (pixel methods also decode); runs that plot curves (notebooks 01, 02) evaluate after
  every epoch; notebook 03 evaluates DPC on its 21-value omega grid;
* every notebook loads the backbone once.

Step and evaluation times are measured at a few class counts and interpolated linearly in between (the text
tower's cost grows with the number of class prompts). ``--check DATASET`` runs a reduced version end to end (real
pipeline, synthetic images of that dataset's shape) and compares the wall time with the projection.

    python -m dpclab estimate                                   # ViT-B-16 (random weights), 11 datasets, 3 seeds
    python -m dpclab estimate --quick --model small             # CPU smoke mode: embedded model, 2 class counts
    python -m dpclab estimate --quick --model small --check eurosat --check-epochs 2
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from .data.shapes import COOP_SHAPES, DatasetShape
from .plan import PlannedRun, report_plan

#: evaluation batch size of ``evaluate.predict_logits``
EVAL_BATCH = 256
#: values of the omega grid notebook 03 evaluates DPC on (``omega.DEFAULT_OMEGAS``)
OMEGA_GRID_SIZE = 21
#: class names of realistic token lengths; the estimate appends an index to make them unique
WORDS = ["annual crop land", "forest", "herbaceous vegetation land", "highway or road", "industrial buildings",
         "golden retriever", "aircraft carrier", "sea lion", "boeing 747-400", "red velvet cake",
         "playing the cello", "banded texture", "tabby cat", "sunflower", "mountain bike", "pasture land"]


# ------------------------------------------------------------------------------------------------ the model
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


def _train_config(method: str, epochs: int | None):
    from .pipeline import RunConfig, train_config

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
    from .methods import PLUGINS, get_method, parse_method

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
            tcfg = _train_config(run.method, epochs)
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
        if "03" in run.requested_by and parse_method(run.method)[1] == "dpc":  # the omega grid and its validation pick
            val = shape.val_images(shots)
            cost.eval += OMEGA_GRID_SIZE * (one_eval + _eval_cost(t, m, val, shape.base_classes))
        out.append(cost)
    return Projection(out, notebooks * t.load)


# ------------------------------------------------------------------------------------------------ measuring
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class _Repeat:
    """``rows[idx]`` of a few stored rows, cycled: inputs for any number of examples without the memory."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __getitem__(self, idx):
        return self.rows[torch.as_tensor(idx) % len(self.rows)]


def _probe_examples(max_batches: int):
    from .train import Examples

    @dataclass
    class ProbeExamples(Examples):
        """Examples whose epochs stop after ``max_batches`` batches (a timing probe through the real ``fit``)."""

        max_batches: int = 1

        def index_batches(self, batch_size, generator):
            return super().index_batches(batch_size, generator)[:self.max_batches]

    return lambda **kw: ProbeExamples(max_batches=max_batches, **kw)


def write_images(folder: Path, n: int, px: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of ``px`` x ``3/4 px`` smooth random colour (a photo's decode cost, not its content)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((px, px * 3 // 4), Image.BICUBIC)
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-12, 12, (px * 3 // 4, px, 3)), 0, 255)
        paths.append(folder / f"img_{i}.jpg")
        Image.fromarray(arr.astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def _median_time(fn, device: torch.device, repeats: int) -> float:
    """The median of ``repeats`` calls (on a shared machine the runs will see the same load: not the minimum)."""
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pick_class_counts(needed: Sequence[int], k: int) -> list[int]:
    """``k`` class counts to measure at: the smallest and largest needed, and values log-spaced between them."""
    lo, hi = min(needed), max(needed)
    if k <= 1 or lo == hi:
        return sorted({lo, hi})
    grid = np.exp(np.linspace(math.log(lo), math.log(hi), k))
    return sorted({int(round(x)) for x in grid} | {lo, hi})


@dataclass
class MeasureConfig:
    model: str = "ViT-B-16"
    pretrained: str | None = None  # None/"random": random weights (same shapes, same time, no download)
    device: str = "auto"
    class_counts: tuple[int, ...] = (5, 50, 200, 500)
    steps: int = 3  # timed steps per epoch probe (after one warm-up epoch)
    eval_sizes: tuple[int, int] = (16, 64)  # two evaluation batch sizes (fixed + per-image cost), pixel methods
    eval_sizes_features: tuple[int, int] = (16, 128)  # the same for features-kind methods (cheap per example)
    repeats: int = 3
    image_px: int = 400
    encode_images: int = 128


def measure(methods: Sequence[str], cfg: MeasureConfig, workdir: Path, log=print,
            counts_by_method: dict[str, Sequence[int]] | None = None) -> DeviceTimings:
    """Time every method's training step and evaluation batch at ``cfg.class_counts`` (or, per method, at
    ``counts_by_method[method]``) on this device."""
    from .backbones import load_clip
    from .data.coop import Datum
    from .data.features import ImageList, build_transforms, default_num_workers
    from .methods import get_method
    from .methods.base import Task
    from .pipeline import build_method
    from .train import fit

    t0 = time.perf_counter()
    bb = load_clip(cfg.model, cfg.pretrained, cfg.device)
    load_s = time.perf_counter() - t0
    device = bb.device
    tf = build_transforms(bb.image_size, bb.mean, bb.std)
    paths = write_images(workdir / "images", 8, cfg.image_px)
    items = [Datum(str(p), 0, "x") for p in paths]
    decode = {}
    for name in ("train", "test"):
        images = ImageList(items, tf[name], view_seed=1 if name == "train" else None)
        images[0]
        t = time.perf_counter()
        for i in range(len(items)):
            images[i]
        decode[name] = (time.perf_counter() - t) / len(items)
    pixels = torch.stack([ImageList(items, tf["train"], view_seed=1)[i][0] for i in range(len(items))])
    batch = pixels[torch.arange(cfg.encode_images) % len(pixels)].to(device)
    with torch.no_grad():
        bb.model.encode_image(batch[:2])
        encode_s = _median_time(lambda: bb.model.encode_image(batch), device, cfg.repeats) / len(batch)
    with torch.no_grad():
        dim = bb.model.encode_image(batch[:1]).shape[-1]
    workers = default_num_workers(bb.image_size)
    log(f"{cfg.model} on {device}: loaded in {load_s:.1f}s; frozen image encoder {1000 * encode_s:.2f} ms/image; "
        f"decode+augment {1000 * decode['train']:.2f} ms/image ({workers} workers in the real pipeline)")
    timings = DeviceTimings(str(device), cfg.model, load_s, encode_s, decode["train"], decode["test"], workers)
    counts_by_method = counts_by_method or {}
    most = max([*cfg.class_counts, *(c for cs in counts_by_method.values() for c in cs)])
    names = [f"{WORDS[i % len(WORDS)]} {i}" for i in range(most)]
    probe = _probe_examples(cfg.steps)
    gen = torch.Generator().manual_seed(0)
    for method_name in methods:
        spec = get_method(method_name)
        per_c: dict[str, list[float]] = {"step": [], "eval_fixed": [], "eval_per_image": []}
        kind, batch_size = "features", 1
        counts = tuple(counts_by_method.get(method_name, cfg.class_counts))
        for c in counts:
            task = Task(tuple(names[:c]), "a photo of a {}.", "base", "synthetic")
            method = build_method(method_name, bb, {}, c, seed=1).to(device)
            kind = method.input_kind
            rows = (torch.randn(64, dim, generator=gen) if kind == "features" else pixels).to(device)
            t = time.perf_counter()
            if spec.trainable:
                tcfg = replace(_train_config(method_name, None), epochs=1 + cfg.repeats, progress=False,
                               warmup_epochs=0, num_workers=0)
                batch_size = tcfg.batch_size
                n = max(c, tcfg.batch_size * cfg.steps)  # every class has an example (DPC draws negatives per class)
                data = probe(labels=torch.arange(n) % c, features=lambda v, r=_Repeat(rows): r)
                hist = fit(method, data, task, tcfg)
                per_c["step"].append(statistics.median(h["seconds"] / max(1, h["steps"]) for h in hist[1:]))
            else:
                per_c["step"].append(0.0)
            method.eval()
            evals = []
            sizes = cfg.eval_sizes_features if kind == "features" else cfg.eval_sizes
            with torch.no_grad():
                for b in sizes:
                    x = _Repeat(rows)[torch.arange(b)]
                    method(x, task)
                    evals.append(_median_time(lambda: method(x, task), device, cfg.repeats))
            (b1, b2), (e1, e2) = sizes, evals
            per_image = max(0.0, (e2 - e1) / (b2 - b1))
            per_c["eval_fixed"].append(max(0.0, e1 - b1 * per_image))
            per_c["eval_per_image"].append(per_image)
            log(f"  {method_name:16s} {c:4d} classes: step {1000 * per_c['step'][-1]:8.1f} ms (batch {batch_size}), "
                f"eval batch of {EVAL_BATCH}: {1000 * (per_c['eval_fixed'][-1] + EVAL_BATCH * per_image):8.1f} ms "
                f"[{time.perf_counter() - t:.1f}s]")
            del method
        xs = tuple(float(c) for c in counts)
        timings.methods[method_name] = MethodTimings(kind, *(Curve(xs, tuple(per_c[k])) for k in
                                                             ("step", "eval_fixed", "eval_per_image")), batch_size)
    return timings


# --------------------------------------------------------------------------------------------- end-to-end check
def write_shape_dataset(root: Path, shape: DatasetShape, shots: int, image_px: int, seed: int = 0):
    """A CoOp-layout dataset of ``shape`` (its class count and test size) with ``shots`` training and
    ``min(shots, 4)`` validation images per class; returns its :class:`~dpclab.data.coop.DatasetSpec`."""
    from .data.coop import DatasetSpec

    name = f"{shape.name}-synthetic"
    base = root / name
    pool = write_images(base / "pool", 16, image_px, seed)
    split = {"train": [], "val": [], "test": []}
    per_test = [shape.test // shape.classes + (1 if c < shape.test % shape.classes else 0)
                for c in range(shape.classes)]
    k = 0
    for c in range(shape.classes):
        cname = f"{WORDS[c % len(WORDS)]} {c}"
        for part, n in (("train", shots), ("val", min(shots, 4)), ("test", per_test[c])):
            for _ in range(n):
                split[part].append([f"pool/{pool[k % len(pool)].name}", c, cname])
                k += 1
    (base / "split.json").write_text(json.dumps(split))
    return DatasetSpec(name, name, "json", "", "split.json")


def check_end_to_end(shape: DatasetShape, methods: Sequence[str], epochs: int, timings: DeviceTimings,
                     mcfg: MeasureConfig, workdir: Path, shots: int = 16, log=print) -> dict:
    """Run ``methods`` (seed 1, ``epochs`` epochs) through the real pipeline on a synthetic dataset of ``shape``;
    return the measured wall time next to the projection of the same runs."""
    from .backbones import load_clip
    from .pipeline import Experiment, run
    from .plan import Scope
    from .source import Source

    spec = write_shape_dataset(workdir / "data", shape, shots, mcfg.image_px)
    src = Source(model=mcfg.model, pretrained=str(mcfg.pretrained), data_root=str(workdir / "data"), shots=shots,
                 device=mcfg.device, cache_dir=str(workdir / "cache"), runs_dir=str(workdir / "runs"))
    scope = Scope((spec.name,), (1,), epochs)
    plan = [PlannedRun("check", spec.name, m, 1) for m in methods]
    projected = project(plan, {spec.name: shape}, timings, shots=shots, epochs=epochs, notebooks=1)
    t0 = time.perf_counter()
    bb = load_clip(mcfg.model, mcfg.pretrained, mcfg.device)
    measured_runs = {}
    exp = None
    for planned in plan:
        m = planned.method
        train, base_train = scope.train_overrides(m)
        cfg = planned.run_config(src, train=train, base_train=base_train, results=None, progress=False)
        t = time.perf_counter()
        exp = exp or Experiment.prepare(cfg, bb, specs={spec.name: spec})
        run(cfg, experiment=exp)
        measured_runs[m] = time.perf_counter() - t
    wall = time.perf_counter() - t0
    per_run = {r.run.method: r.total for r in projected.runs}
    for m in methods:
        log(f"  {m:16s} measured {measured_runs[m]:7.1f} s   projected {per_run.get(m, 0.0):7.1f} s")
    ratio = wall / projected.total
    log(f"end to end ({shape.name} shape, {shape.classes} classes, {shape.test} test images, {epochs} epochs, "
        f"{len(methods)} methods): measured {wall:.1f} s, projected {projected.total:.1f} s "
        f"(measured / projected = {ratio:.2f})")
    return {"measured_s": wall, "projected_s": projected.total, "ratio": ratio, "per_run_measured": measured_runs,
            "per_run_projected": per_run}


# -------------------------------------------------------------------------------------------------- printing
def hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def summary(p: Projection, t: DeviceTimings, datasets: Sequence[str], seeds: Sequence[int]) -> str:
    lines = [f"Projected wall time of the full report on {t.device} ({t.model}), datasets {' '.join(datasets)}, "
             f"seeds {' '.join(map(str, seeds))}: **{hours(p.total)}** (one process; `python -m dpclab grid` "
             f"spreads the runs over GPUs)", ""]
    for title, key in (("notebook", lambda r: r.notebook), ("dataset", lambda r: r.dataset),
                       ("method", lambda r: r.method)):
        parts = sorted(p.by(key).items(), key=lambda kv: -kv[1])
        lines.append(f"| {title} | projected | share |")
        lines.append("|---|---|---|")
        lines += [f"| {k} | {hours(v)} | {100 * v / p.total:.1f}% |" for k, v in parts]
        lines.append("")
    parts = {k: sum(getattr(r, k) for r in p.runs) for k in ("train", "views", "test_features", "eval")}
    parts["backbone loads"] = p.notebooks_overhead
    lines.append("| part | projected | share |")
    lines.append("|---|---|---|")
    lines += [f"| {k} | {hours(v)} | {100 * v / p.total:.1f}% |" for k, v in parts.items()]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dpclab estimate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="ViT-B-16", help="open_clip model (weights random unless --pretrained); "
                   "'small' = the embedded tiny CLIP")
    p.add_argument("--pretrained", help="weights to load (default: random; the time does not depend on them)")
    p.add_argument("--device", default="auto")
    p.add_argument("--datasets", nargs="+", default=list(COOP_SHAPES), help="the report's datasets (the first is "
                   "the main dataset of notebooks 00-05); default: the 11 CoOp datasets")
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2, 3])
    p.add_argument("--shots", type=int, default=16)
    p.add_argument("--epochs", type=int, help="every method's epochs, as report -p epochs N (default: SPEC)")
    p.add_argument("--methods", nargs="+", help="notebook 06's methods (default: all, as the notebook)")
    p.add_argument("--quick", action="store_true", help="reduced measurement (2 class counts, 2 steps, small "
                   "evaluation batches): for CPUs")
    p.add_argument("--class-counts", type=int, nargs="+", help="class counts to measure at (default: 4 spanning "
                   "the datasets'; --quick: 2)")
    p.add_argument("--image-px", type=int, default=400, help="side of the synthetic JPEGs (decode cost)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--timings", help="reuse timings saved by --save-timings (no measuring)")
    p.add_argument("--save-timings", help="write the measured timings (JSON) here")
    p.add_argument("--check", metavar="DATASET", help="also run a reduced end-to-end check on a synthetic dataset "
                   "of this shape and compare it with the projection")
    p.add_argument("--check-methods", nargs="+", default=["zeroshot", "coop", "kgcoop", "coop+dpc", "maple"])
    p.add_argument("--check-epochs", type=int, default=2)
    p.add_argument("--check-test", type=int, help="test images of the check's dataset (default: the real size)")
    p.add_argument("--markdown", help="write the summary (markdown) here")
    return p


def main(argv: list[str] | None = None) -> int:
    from .backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED
    from .plan import waves

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, pretrained = args.model, args.pretrained
    if model == "small":
        model, pretrained = EMBEDDED_MODEL, EMBEDDED_PRETRAINED
    unknown = [d for d in args.datasets if d not in COOP_SHAPES]
    if unknown:
        raise SystemExit(f"error: no shape known for {unknown}; the CoOp datasets are {', '.join(COOP_SHAPES)}.")
    plan = report_plan({"dataset": ",".join(args.datasets), "seeds": args.seeds, "epochs": args.epochs})
    if args.methods:  # notebook 06's rows of these methods only
        plan = [r for r in plan if r.method in args.methods or r.requested_by != ("06",)]
    methods = list(dict.fromkeys(r.method for r in plan))
    if args.check:
        methods += [m for m in args.check_methods if m not in methods]
    shapes = {d: COOP_SHAPES[d] for d in args.datasets}
    needed: dict[str, set[int]] = {m: set() for m in methods}  # class counts each method is trained / evaluated at
    for r in plan:
        s = shapes[r.dataset]
        needed[r.method] |= {s.base_classes, s.new_classes, s.classes if r.train_classes == "all" else s.base_classes}
    if args.check:
        cs = COOP_SHAPES[args.check]
        for m in args.check_methods:
            needed[m] |= {cs.base_classes, cs.new_classes}
    k = 2 if args.quick else 4
    by_method = {m: pick_class_counts(sorted(c), k) for m, c in needed.items()}
    if args.class_counts:
        by_method = {m: list(args.class_counts) for m in methods}
    counts = tuple(sorted({c for cs in by_method.values() for c in cs}))
    mcfg = MeasureConfig(model=model, pretrained=None if pretrained in (None, "random") else pretrained,
                         device=args.device, class_counts=counts, steps=2 if args.quick else 3,
                         eval_sizes=(4, 16) if args.quick else (16, 64),
                         eval_sizes_features=(8, 64) if args.quick else (16, 128), image_px=args.image_px,
                         encode_images=32 if args.quick else 128)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dpclab-estimate-") as tmp:
        if args.timings:
            timings = DeviceTimings.from_json(Path(args.timings).read_text())
        else:
            print(f"measuring {len(methods)} methods at {k if not args.class_counts else len(counts)} class counts "
                  f"each, between {min(counts)} and {max(counts)}", flush=True)
            timings = measure(methods, mcfg, Path(tmp), counts_by_method=by_method)
        if args.save_timings:
            from .io import atomic_write_text

            atomic_write_text(Path(args.save_timings), timings.to_json())
        projection = project(plan, shapes, timings, shots=args.shots, epochs=args.epochs)
        text = summary(projection, timings, args.datasets, args.seeds)
        trained = sum(len(w) for w in waves(plan))
        print(f"\nmeasured in {time.perf_counter() - t0:.0f} s; plan: {len(plan)} runs ({trained} trained)\n")
        print(text)
        if args.check:
            shape = COOP_SHAPES[args.check]
            if args.check_test:
                shape = replace(shape, test=args.check_test)
            check = check_end_to_end(shape, args.check_methods, args.check_epochs, timings, mcfg, Path(tmp),
                                     args.shots)
            text += (f"\nEnd-to-end check ({args.check} shape, {shape.test} test images, {args.check_epochs} epochs, "
                     f"{', '.join(args.check_methods)}): measured {check['measured_s']:.1f} s, projected "
                     f"{check['projected_s']:.1f} s, measured / projected = {check['ratio']:.2f}\n")
    if args.markdown:
        from .io import atomic_write_text

        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.markdown), text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
