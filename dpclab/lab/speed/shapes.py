"""dpclab's loop against a reference-style loop at the CoOp datasets' training shapes (base classes x shots), per
method: step times, epoch ratios with a fresh or a cached view, a profile of the step, peak memory."""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from dpclab.backbones import Backbone, load_clip, resolve_device
from dpclab.data.items import Datum
from dpclab.data.features import build_transforms, default_num_workers, encode_image_list
from dpclab.data.shapes import shape_of
from dpclab.lab.speed.config import BenchConfig, ModelCase, register_tiny_model
from dpclab.lab.speed.profile import tower_profile
from dpclab.lab.speed.reference import reference_step_time
from dpclab.lab.speed.report import Row
from dpclab.lab.synthetic import class_names, write_images
from dpclab.lab.timing import peak_memory, probe_examples, sync
from dpclab.methods.base import Task
from dpclab.methods.table import resolve
from dpclab.runconfig import RunConfig, train_config
from dpclab.train import fit


@dataclass(frozen=True)
class ShapeCase:
    """A dataset's training shape: base classes x shots (``data.shapes``), possibly reduced for a CPU."""

    name: str
    classes: int
    shots: int = 16

    @property
    def label(self) -> str:
        return f"{self.name} shape ({self.classes} classes x {self.shots} shots)"


#: on a CPU the shapes are reduced to at most this many classes, at 2 shots when reduced
CPU_MAX_CLASSES = 100


def shape_cases(names: Sequence[str], reduced: bool) -> list[ShapeCase]:
    """The named CoOp datasets' base-class shapes (16 shots). ``reduced`` (a CPU): at most 100 classes at 2 shots
    (a 500-class step with 77-token prompts takes tens of seconds there)."""
    out = []
    for name in names:
        classes = shape_of(name).base_classes
        if reduced and classes > CPU_MAX_CLASSES:
            out.append(ShapeCase(name, CPU_MAX_CLASSES, 2))
        else:
            out.append(ShapeCase(name, classes, 16))
    return out



def _items(pool: Sequence[Path], n: int, classes: int, names: Sequence[str]):
    return [Datum(str(pool[i % len(pool)]), i % classes, names[i % classes]) for i in range(n)]



def bench_shape(model: ModelCase, shape: ShapeCase, method_name: str, backbone: Backbone, workdir: Path,
                cfg: BenchConfig, steps: int, log=print) -> list[Row]:
    """dpclab's loop against a reference-style loop for one method at one dataset shape, both in this process:
    per-step times, epoch ratios (fresh view / cached view), a profile of dpclab's step, peak memory."""
    device = backbone.device
    pool = write_images(workdir / f"pool-{cfg.image_px}", 16, cfg.image_px)
    names = class_names(shape.classes)
    task = Task(tuple(names), "a photo of a {}.", "base", shape.name)
    n_train = shape.classes * shape.shots
    items = _items(pool, n_train, shape.classes, names)
    workers = default_num_workers(backbone.image_size)
    tf = build_transforms(backbone.image_size, backbone.mean, backbone.std)
    tcfg = replace(train_config(RunConfig(method=method_name), resolve(method_name)), epochs=2, warmup_epochs=0, progress=False,
                   num_workers=workers)
    method = resolve(method_name).build(backbone, {}, shape.classes, seed=cfg.seed)
    untruncated = {"truncate": False}
    ref = (resolve(method_name).build(backbone, {}, shape.classes, untruncated, seed=cfg.seed) if "+" in method_name
           else resolve(method_name).build(backbone, untruncated, shape.classes, seed=cfg.seed))
    labels = torch.tensor([d.label for d in items])
    kind = method.input_kind
    m, sec, where = f"{model.label} {method_name}", f"shape:{shape.name}", shape.label
    rows: list[Row] = []

    enc_per_image = float("nan")
    with peak_memory(device) as enc_mem:
        if kind == "features":  # a fresh view of the training set through the frozen encoder (+ decoding)
            sync(device)
            t = time.perf_counter()
            feats = encode_image_list(backbone.model, items, tf["train"], device, view_seed=1, num_workers=workers)
            sync(device)
            enc_per_image = (time.perf_counter() - t) / n_train
    probe = probe_examples(steps)
    data = (probe(labels=labels, features=lambda v: feats) if kind == "features"
            else probe(labels=labels, items=items, transform=tf["train"], num_workers=workers))
    with peak_memory(device) as fit_mem:
        hist = fit(method, data, task, tcfg)
    step_s = hist[-1]["seconds"] / max(1, hist[-1]["steps"])
    images_per_step = hist[-1].get("batch_images", tcfg.batch_size)  # DPC: anchors + their negatives
    with tower_profile(backbone.model, device) as prof:
        hist = fit(method, data, task, replace(tcfg, epochs=1))
    n_steps = max(1, hist[-1]["steps"])
    profile = {k: v / n_steps for k, v in prof.items()}
    profile["rest"] = max(0.0, hist[-1]["seconds"] / n_steps - sum(profile.values()))

    with peak_memory(device) as ref_mem:
        ref_s = reference_step_time(ref, task, items, tf["train"], max(1, int(round(images_per_step))), steps, device,
                                     workers)
    steps_per_epoch = n_train // tcfg.batch_size if n_train >= tcfg.batch_size else 1
    ref_epoch = steps_per_epoch * ref_s
    cached_epoch = steps_per_epoch * step_s
    fresh_epoch = cached_epoch + (n_train * enc_per_image if kind == "features" else 0.0)
    note = f"{where}, batch {tcfg.batch_size} ({images_per_step:.0f} images/step), {device}"
    rows += [Row(sec, m, "reference_step", ref_s, "s", note), Row(sec, m, "dpclab_step", step_s, "s", note),
             Row(sec, m, "speedup_fresh_view", ref_epoch / fresh_epoch, "x",
                 "reference epoch / dpclab epoch encoding a fresh view" if kind == "features"
                 else "pixel method: every epoch decodes and encodes its images in both loops")]
    if kind == "features":
        rows += [Row(sec, m, "dpclab_encode_view_per_image", enc_per_image, "s", f"{n_train} images, {workers} workers"),
                 Row(sec, m, "speedup_cached_view", ref_epoch / cached_epoch, "x",
                     "reference epoch / dpclab epoch on a cached view")]
    for k, v in profile.items():
        rows.append(Row(sec, m, f"profile_{k}", v, "s", "per dpclab step" + (
            "; encoding the fresh view adds %.4g s/step of image time" % (n_train * enc_per_image / steps_per_epoch)
            if kind == "features" and k == "image_forward" else "")))
    cuda = device.type == "cuda"
    for name, mem in (("reference", ref_mem), ("dpclab_train", fit_mem), ("dpclab_encode", enc_mem)):
        rows.append(Row(sec, m, f"peak_{'cuda' if cuda else 'rss'}_{name}", mem.cuda_mib if cuda else mem.rss_mib,
                        "MiB", "max_memory_allocated" if cuda else "process RSS"))
    ratio = ref_epoch / fresh_epoch
    log(f"[{m}] {where}: reference {ref_s * 1000:.1f} ms/step, dpclab {step_s * 1000:.1f} ms/step"
        + (f" + {enc_per_image * 1000:.2f} ms/image per fresh view" if kind == "features" else "")
        + f"; epoch speed-up fresh view {ratio:.1f}x"
        + (f", cached view {ref_epoch / cached_epoch:.1f}x" if kind == "features" else "")
        + "; profile/step " + ", ".join(f"{k} {1000 * v:.1f} ms" for k, v in profile.items()))
    return rows


def run_shapes(cfg: BenchConfig, shapes: Sequence[ShapeCase], methods: Sequence[str], steps: int,
               log=print) -> list[Row]:
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="dpclab-speed-") as tmp:
        workdir = Path(cfg.workdir) if cfg.workdir is not None else Path(tmp)
        register_tiny_model(workdir)
        for case in cfg.cases:
            backbone = load_clip(case.model, case.pretrained, resolve_device(cfg.device))
            for shape in shapes:
                for method in methods:
                    rows += bench_shape(case, shape, method, backbone, workdir, cfg, steps, log)
    return rows

