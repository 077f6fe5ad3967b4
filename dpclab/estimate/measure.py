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

from ..synthetic import class_names, write_images
from ..timing import Repeat, median_time, probe_examples
from .model import EVAL_BATCH, Curve, DeviceTimings, MethodTimings, method_train_config


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
    from ..backbones import load_clip
    from ..data.coop import Datum
    from ..data.features import ImageList, build_transforms, default_num_workers
    from ..methods import get_method
    from ..methods.base import Task
    from ..pipeline import build_method
    from ..train import fit

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
        encode_s = median_time(lambda: bb.model.encode_image(batch), device, cfg.repeats) / len(batch)
    with torch.no_grad():
        dim = bb.model.encode_image(batch[:1]).shape[-1]
    workers = default_num_workers(bb.image_size)
    log(f"{cfg.model} on {device}: loaded in {load_s:.1f}s; frozen image encoder {1000 * encode_s:.2f} ms/image; "
        f"decode+augment {1000 * decode['train']:.2f} ms/image ({workers} workers in the real pipeline)")
    timings = DeviceTimings(str(device), cfg.model, load_s, encode_s, decode["train"], decode["test"], workers)
    counts_by_method = counts_by_method or {}
    most = max([*cfg.class_counts, *(c for cs in counts_by_method.values() for c in cs)])
    names = class_names(most)
    probe = probe_examples(cfg.steps)
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
                tcfg = replace(method_train_config(method_name, None), epochs=1 + cfg.repeats, progress=False,
                               warmup_epochs=0, num_workers=0)
                batch_size = tcfg.batch_size
                n = max(c, tcfg.batch_size * cfg.steps)  # every class has an example (DPC draws negatives per class)
                data = probe(labels=torch.arange(n) % c, features=lambda v, r=Repeat(rows): r)
                hist = fit(method, data, task, tcfg)
                per_c["step"].append(statistics.median(h["seconds"] / max(1, h["steps"]) for h in hist[1:]))
            else:
                per_c["step"].append(0.0)
            method.eval()
            evals = []
            sizes = cfg.eval_sizes_features if kind == "features" else cfg.eval_sizes
            with torch.no_grad():
                for b in sizes:
                    x = Repeat(rows)[torch.arange(b)]
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
        timings.methods[method_name] = MethodTimings(kind, *(Curve(xs, tuple(per_c[k])) for k in
                                                             ("step", "eval_fixed", "eval_per_image")), batch_size)
    return timings

