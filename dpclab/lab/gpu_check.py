"""``python -m dpclab gpu-check``: the figures docs/performance.md needs from a GPU, in one command (a few minutes on
one H100/H200), written as a markdown table.

1. every method x precision (fp32, fp16, amp): one short fit (the real ``fit`` on a probe of a few batches) at
   ViT-B/16 with random weights (no download) and ImageNet's class count (500 base classes: what its training
   sees), its step time, evaluation time and peak memory (``torch.cuda.max_memory_allocated``; on a CPU the process
   RSS, which is not per method); a precision the device refuses (``dpclab.precision.check_precision``) is said so;
2. CoOp against the reference-style loop (``dpclab.lab.speed``) at ImageNet's training shape: the epoch ratios with a
   fresh view (every epoch encodes a new augmented view) and a cached view;
3. the estimate (``dpclab.lab.estimate``) against a short measured run: a reduced ImageNet-shaped dataset (its class
   count, fewer shots and test images) end to end through the real pipeline, measured against its projection.

It composes the two measuring tools (the one module that imports both); ``--model/--classes/--steps`` make it small
enough for a test on a CPU.

    python -m dpclab gpu-check --out docs/gpu_check.md                  # on the GPU
    python -m dpclab gpu-check --model small --classes 4 --shots 2 --steps 1 --check-test 16   # a CPU smoke run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from dpclab.backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED, load_clip, resolve_device
from dpclab.data.shapes import DatasetShape
from dpclab.io import atomic_write_text
from dpclab.lab.estimate.check import check_end_to_end
from dpclab.lab.estimate.measuring import MeasureConfig, measure, measure_inputs, measure_method
from dpclab.lab.estimate.price import EVAL_BATCH
from dpclab.lab.speed import BenchConfig, ModelCase, ShapeCase, bench_shape
from dpclab.lab.timing import device_name
from dpclab.methods.spec import method_names
from dpclab.precision import PRECISIONS

#: the check's time budget on one H100/H200 (the issue's)
BUDGET_S = 8 * 60


@dataclass(frozen=True)
class CheckConfig:
    #: open_clip model; weights random (the times and memory do not depend on them)
    model: str = "ViT-B-16"
    pretrained: str | None = None
    device: str = "auto"
    #: training classes of every fit: ImageNet's base classes (1000 / 2)
    classes: int = 500
    precisions: tuple[str, ...] = PRECISIONS
    #: None: every method (``methods.method_names()``)
    methods: tuple[str, ...] | None = None
    #: timed steps per fit (after one warm-up epoch), and repeats of each timing
    steps: int = 2
    repeats: int = 2
    #: shots of the CoOp ratio's training set (ImageNet's shape: classes x 16)
    shots: int = 16
    #: the estimate's check: methods, epochs, shots and test images of the reduced ImageNet-shaped dataset
    check_methods: tuple[str, ...] = ("zeroshot", "coop", "coop+dpc", "maple")
    check_epochs: int = 1
    check_shots: int = 2
    check_test: int = 2000
    image_px: int = 400


@dataclass(frozen=True)
class Fit:
    """One method in one precision: seconds per step and per evaluation batch of 256, peak MiB; or why not."""

    method: str
    precision: str
    step_s: float | None = None
    eval_s: float | None = None
    peak_mib: float | None = None
    error: str = ""


@dataclass(frozen=True)
class Result:
    device: str
    fits: tuple[Fit, ...]
    ratios: dict = field(default_factory=dict)
    check: object = None
    seconds: float = 0.0


def fits_in(precision: str, methods: Sequence[str], cfg: CheckConfig, workdir: Path, log=print) -> list[Fit]:
    """One short fit of every method in ``precision`` (all refused, with the reason, when the device refuses it)."""
    mcfg = MeasureConfig(model=cfg.model, pretrained=cfg.pretrained, device=cfg.device, precision=precision,
                         class_counts=(cfg.classes,), steps=cfg.steps, repeats=cfg.repeats, eval_sizes=(4, 16),
                         eval_sizes_features=(16, 128), image_px=cfg.image_px, encode_images=32)
    try:
        bb = load_clip(cfg.model, cfg.pretrained, cfg.device, precision)
    except ValueError as err:  # the device refuses the precision (dpclab.precision.check_precision)
        log(f"{precision}: refused ({err})")
        return [Fit(m, precision, error=f"refused: {err}") for m in methods]
    inputs = measure_inputs(bb, mcfg, workdir)
    out = []
    for m in methods:
        try:
            t = measure_method(bb, m, (cfg.classes,), mcfg, inputs, log)
        except (RuntimeError, ValueError, NotImplementedError) as err:  # e.g. out of memory: say so, go on
            log(f"  {m:16s} {precision}: failed ({str(err)[:200]})")
            out.append(Fit(m, precision, error=f"failed: {' '.join(str(err).split())[:120]}"))
            continue
        c = float(cfg.classes)
        out.append(Fit(m, precision, t.step(c), t.eval_fixed(c) + EVAL_BATCH * t.eval_per_image(c), t.peak_mib))
    del bb
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return out


def coop_ratios(cfg: CheckConfig, workdir: Path, log=print) -> dict:
    """CoOp's epoch against the reference-style loop's at ImageNet's training shape (fp32): fresh and cached view."""
    bb = load_clip(cfg.model, cfg.pretrained, cfg.device)
    rows = bench_shape(ModelCase(cfg.model, cfg.pretrained, 0, 0, 0, 0), ShapeCase("imagenet", cfg.classes, cfg.shots),
                       "coop", bb, workdir, BenchConfig(cases=[], device=cfg.device, image_px=cfg.image_px),
                       cfg.steps + 1, log)
    return {r.metric: r.value for r in rows}


def estimate_check(cfg: CheckConfig, workdir: Path, log=print):
    """The estimate's projection against a short measured run of ``cfg.check_methods`` (fp32) on a reduced
    ImageNet-shaped dataset (timings measured at its class count, so no extrapolation)."""
    mcfg = MeasureConfig(model=cfg.model, pretrained=cfg.pretrained, device=cfg.device, class_counts=(cfg.classes,),
                         steps=cfg.steps, repeats=cfg.repeats, image_px=cfg.image_px, encode_images=32)
    timings = measure(cfg.check_methods, mcfg, workdir / "timings", log)
    shape = DatasetShape("imagenet", 2 * cfg.classes, cfg.check_test)
    return check_end_to_end(shape, cfg.check_methods, cfg.check_epochs, timings, mcfg, workdir / "check",
                            cfg.check_shots, log)


def run_check(cfg: CheckConfig, workdir: Path, log=print) -> Result:
    t0 = time.perf_counter()
    methods = list(cfg.methods or method_names())
    fits: list[Fit] = []
    for p in cfg.precisions:
        log(f"== {p}: {len(methods)} methods, one short fit each at {cfg.classes} classes")
        fits += fits_in(p, methods, cfg, workdir / p, log)
    log("== CoOp against the reference-style loop")
    ratios = coop_ratios(cfg, workdir / "ratios", log)
    log("== the estimate against a short measured run")
    check = estimate_check(cfg, workdir / "estimate", log)
    return Result(device_name(resolve_device(cfg.device)), tuple(fits), ratios, check, time.perf_counter() - t0)


# ------------------------------------------------------------------------------------------------ markdown
def _ms(s: float | None) -> str:
    return "—" if s is None or s == 0 else f"{1000 * s:.1f}"


def _cell(f: Fit) -> str:
    if f.error:
        return f.error
    peak = "" if f.peak_mib is None else f" / {f.peak_mib:,.0f}"
    return f"{_ms(f.step_s)} / {_ms(f.eval_s)}{peak}"


def markdown(r: Result, cfg: CheckConfig) -> str:
    cuda = "cuda" in r.device or "(cuda" in r.device
    mem = "peak `torch.cuda.max_memory_allocated` (MiB)" if cuda else "peak process RSS (MiB; a CPU: not per method)"
    precisions = list(dict.fromkeys(f.precision for f in r.fits))
    lines = [f"GPU check on **{r.device}**, {cfg.model} (random weights), torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; took {r.seconds / 60:.1f} min (budget {BUDGET_S // 60} min).", "",
             f"### Every method x precision: one short fit at {cfg.classes} classes ({cfg.steps} timed steps)", "",
             f"Each cell: ms per training step (the method's batch) / ms per evaluation batch of 256 / {mem}. "
             f"A precision the device refuses (`dpclab.precision.check_precision`) says so"
             + ("." if cuda else "; on a CPU, amp autocasts to bfloat16 and fp16 runs where torch has the CPU half "
                "kernels (a CPU's fp16 times say nothing about a GPU's)."), "",
             "| method | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
    for m in dict.fromkeys(f.method for f in r.fits):
        cells = {f.precision: _cell(f) for f in r.fits if f.method == m}
        lines.append(f"| {m} | " + " | ".join(cells.get(p, "") for p in precisions) + " |")
    q = r.ratios
    lines += ["", f"### CoOp against the reference-style loop (ImageNet's shape: {cfg.classes} classes x {cfg.shots} "
              f"shots, fp32)", "",
              "| reference ms/step | dpclab ms/step | **epoch speed-up, fresh view** | epoch speed-up, cached view |",
              "|---|---|---|---|",
              f"| {_ms(q.get('reference_step'))} | {_ms(q.get('dpclab_step'))} | "
              f"**{q.get('speedup_fresh_view', float('nan')):.1f}x** | {q.get('speedup_cached_view', float('nan')):.1f}x |"]
    c = r.check
    if c is not None:
        lines += ["", f"### The estimate against a short measured run ({2 * cfg.classes} classes, {cfg.check_shots} "
                  f"shots, {cfg.check_test} test images, {cfg.check_epochs} epoch(s), fp32)", "",
                  "| run | measured (s) | projected (s) |", "|---|---|---|"]
        lines += [f"| {m} | {c.per_run_measured[m]:.1f} | {c.per_run_projected.get(m, 0.0):.1f} |"
                  for m in c.per_run_measured]
        lines.append(f"| **all, end to end** | **{c.measured:.1f}** | **{c.projected:.1f}** (measured / projected = "
                     f"{c.ratio:.2f}) |")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------- CLI
def build_parser() -> argparse.ArgumentParser:
    d = CheckConfig()
    p = argparse.ArgumentParser(prog="python -m dpclab gpu-check", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=d.model, help="open_clip model, random weights ('small': the embedded model)")
    p.add_argument("--device", default=d.device)
    p.add_argument("--classes", type=int, default=d.classes, help="training classes of every fit (default: "
                   "ImageNet's 500 base classes)")
    p.add_argument("--precisions", nargs="+", choices=PRECISIONS, default=list(d.precisions))
    p.add_argument("--methods", nargs="+", help="default: every method and plug-in pair")
    p.add_argument("--steps", type=int, default=d.steps, help="timed steps per fit")
    p.add_argument("--repeats", type=int, default=d.repeats)
    p.add_argument("--shots", type=int, default=d.shots, help="shots of the CoOp ratio's training set")
    p.add_argument("--check-methods", nargs="+", default=list(d.check_methods))
    p.add_argument("--check-epochs", type=int, default=d.check_epochs)
    p.add_argument("--check-shots", type=int, default=d.check_shots)
    p.add_argument("--check-test", type=int, default=d.check_test)
    p.add_argument("--image-px", type=int, default=d.image_px, help="side of the synthetic JPEGs (decode cost)")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--out", default="reports/gpu_check.md", help="where the markdown table goes")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, pretrained = (EMBEDDED_MODEL, EMBEDDED_PRETRAINED) if args.model == "small" else (args.model, None)
    cfg = CheckConfig(model=model, pretrained=pretrained, device=args.device, classes=args.classes,
                      precisions=tuple(args.precisions), methods=tuple(args.methods) if args.methods else None,
                      steps=args.steps, repeats=args.repeats, shots=args.shots,
                      check_methods=tuple(args.check_methods), check_epochs=args.check_epochs,
                      check_shots=args.check_shots, check_test=args.check_test, image_px=args.image_px)
    with tempfile.TemporaryDirectory(prefix="dpclab-gpu-check-") as tmp:
        result = run_check(cfg, Path(tmp))
    text = markdown(result, cfg)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, text)
    print(f"\n{text}\nwrote {out} ({result.seconds / 60:.1f} min"
          f"{'; over the ' + str(BUDGET_S // 60) + '-minute budget' if result.seconds > BUDGET_S else ''})")
    return 0 if not any(f.error.startswith("failed") for f in result.fits) else 1


__all__ = ["CheckConfig", "Fit", "Result", "fits_in", "coop_ratios", "estimate_check", "run_check", "markdown",
           "build_parser", "main"]
