"""Measuring the estimate's timings on this device: a few training steps of every method through the real ``fit``
(model shapes real, weights random), evaluation batches at two sizes, the frozen image encoder, JPEG decoding."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dpclab.backbones import load_clip
from dpclab.data.items import Datum
from dpclab.data.features import ImageList, build_transforms, default_num_workers
from dpclab.lab.estimate.model import EVAL_BATCH, Curve, DeviceTimings, MeasureConfig, MethodTimings
from dpclab.lab.synthetic import class_names, write_images
from dpclab.lab.timing import Repeat, device_name, median_time, peak_memory, probe_examples
from dpclab.methods.base import Task
from dpclab.methods.table import resolve
from dpclab.runconfig import RunConfig, train_config
from dpclab.precision import autocast, input_dtype
from dpclab.train import fit


def pick_class_counts(needed: Sequence[int], k: int) -> list[int]:
    """``k`` class counts to measure at: the smallest and largest needed, and values log-spaced between them."""
    lo, hi = min(needed), max(needed)
    if k <= 1 or lo == hi:
        return sorted({lo, hi})
    grid = np.exp(np.linspace(math.log(lo), math.log(hi), k))
    return sorted({int(round(x)) for x in grid} | {lo, hi})


@dataclass(frozen=True)
class Inputs:
    """What every method's timing shares: decoded pixels, the feature width, the I/O costs per image."""

    pixels: torch.Tensor
    dim: int
    decode_train: float
    decode_test: float
    encode: float


def measure_inputs(bb, cfg: MeasureConfig, workdir: Path) -> Inputs:
    """Decode + augment time per synthetic JPEG (one process), the frozen image encoder's time per image."""
    device = bb.device
    tf = build_transforms(bb.image_size, bb.mean, bb.std)
    items = [Datum(str(p), 0, "x") for p in write_images(workdir / "images", 8, cfg.image_px)]
    decode = {}
    for name in ("train", "test"):
        images = ImageList(items, tf[name], view_seed=1 if name == "train" else None)
        images[0]
        t = time.perf_counter()
        for i in range(len(items)):
            images[i]
        decode[name] = (time.perf_counter() - t) / len(items)
    pixels = torch.stack([ImageList(items, tf["train"], view_seed=1)[i][0] for i in range(len(items))])
    pixels = pixels.to(device, input_dtype(bb.precision))
    batch = pixels[torch.arange(cfg.encode_images, device=device) % len(pixels)]
    with torch.no_grad(), autocast(bb.precision, device):
        dim = bb.model.encode_image(batch[:2]).shape[-1]
        encode = median_time(lambda: bb.model.encode_image(batch), device, cfg.repeats) / len(batch)
    return Inputs(pixels, dim, decode["train"], decode["test"], encode)


def measure_method(bb, method_name: str, counts: Sequence[int], cfg: MeasureConfig, inputs: Inputs,
                   log=print) -> MethodTimings:
    """One method's training step (the real ``fit`` on a probe of ``cfg.steps`` batches), evaluation batches at two
    sizes and peak training memory, at each class count of ``counts``."""
    device, precision = bb.device, bb.precision
    names = class_names(max(counts))
    probe = probe_examples(cfg.steps)
    gen = torch.Generator().manual_seed(0)
    per_c: dict[str, list[float]] = {"step": [], "eval_fixed": [], "eval_per_image": []}
    kind, batch_size, peak = "features", 1, None
    for c in counts:
        task = Task(tuple(names[:c]), "a photo of a {}.", "base", "synthetic")
        method = resolve(method_name).build(bb, {}, c, seed=1).to(device)
        kind = method.input_kind
        rows = (torch.randn(64, inputs.dim, generator=gen).to(device, input_dtype(precision)) if kind == "features"
                else inputs.pixels)
        t = time.perf_counter()
        if resolve(method_name).trainable:
            tcfg = replace(train_config(RunConfig(method=method_name, progress=False), resolve(method_name)), epochs=1 + cfg.repeats, progress=False,
                           warmup_epochs=0, num_workers=0)
            batch_size = tcfg.batch_size
            n = max(c, tcfg.batch_size * cfg.steps)  # every class has an example (DPC draws negatives per class)
            data = probe(labels=torch.arange(n) % c, features=lambda v, r=Repeat(rows): r)
            with peak_memory(device) as mem:
                hist = fit(method, data, task, tcfg, precision=precision)
            peak = mem.cuda_mib if device.type == "cuda" else mem.rss_mib
            per_c["step"].append(statistics.median(h["seconds"] / max(1, h["steps"]) for h in hist[1:]))
        else:
            per_c["step"].append(0.0)
        method.eval()
        sizes = cfg.eval_sizes_features if kind == "features" else cfg.eval_sizes
        evals = []
        with torch.no_grad(), autocast(precision, device):
            for b in sizes:
                x = Repeat(rows)[torch.arange(b, device=rows.device)]
                method(x, task)
                evals.append(median_time(lambda m=method, x=x: m(x, task), device, cfg.repeats))
        (b1, b2), (e1, e2) = sizes, evals
        per_image = max(0.0, (e2 - e1) / (b2 - b1))
        per_c["eval_fixed"].append(max(0.0, e1 - b1 * per_image))
        per_c["eval_per_image"].append(per_image)
        log(f"  {method_name:16s} {c:4d} classes: step {1000 * per_c['step'][-1]:8.1f} ms (batch {batch_size}), "
            f"eval batch of {EVAL_BATCH}: {1000 * (per_c['eval_fixed'][-1] + EVAL_BATCH * per_image):8.1f} ms "
            f"[{time.perf_counter() - t:.1f}s]")
        del method
    xs = tuple(float(c) for c in counts)
    return MethodTimings(kind, *(Curve(xs, tuple(per_c[k])) for k in ("step", "eval_fixed", "eval_per_image")),
                         batch_size, peak)


def measure(methods: Sequence[str], cfg: MeasureConfig, workdir: Path, log=print,
            counts_by_method: dict[str, Sequence[int]] | None = None) -> DeviceTimings:
    """Time every method's training step and evaluation batch at ``cfg.class_counts`` (or, per method, at
    ``counts_by_method[method]``) on this device, in ``cfg.precision``."""
    t0 = time.perf_counter()
    bb = load_clip(cfg.model, cfg.pretrained, cfg.device, cfg.precision)
    load_s = time.perf_counter() - t0
    inputs = measure_inputs(bb, cfg, workdir)
    workers = default_num_workers(bb.image_size)
    name = device_name(bb.device)
    log(f"{cfg.model} ({cfg.precision}) on {name}: loaded in {load_s:.1f}s; frozen image encoder "
        f"{1000 * inputs.encode:.2f} ms/image; decode+augment {1000 * inputs.decode_train:.2f} ms/image "
        f"({workers} workers in the real pipeline)")
    counts_by_method = counts_by_method or {}
    methods_t = {m: measure_method(bb, m, tuple(counts_by_method.get(m, cfg.class_counts)), cfg, inputs, log)
                 for m in methods}
    return DeviceTimings(str(bb.device), cfg.model, load_s, inputs.encode, inputs.decode_train, inputs.decode_test,
                         workers, methods_t, cfg.precision, name)
