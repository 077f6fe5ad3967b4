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

4. PromptKD with its released teacher's shape: a ViT-L/14 PromptSRC teacher (random weights) scoring a ViT-B/16
   student's training batches, where the GPU's free memory allows (else said so).

It refuses to start without a CUDA GPU (a driver older than the torch wheel needs would otherwise run every fit on
the CPU, silently): ``--allow-cpu`` runs it on the CPU anyway (tests, smoke runs). It prints the start-up lines
(device, precision, loader workers), then writes the markdown as it goes: the header first, each phase's section as
soon as that phase finishes; a phase that fails is recorded in its section (the error, one line) and the next one
runs; the time budget (``--budget-min``, :data:`BUDGET_S`) is enforced between phases and between precisions (a phase
that has started runs to its end): what is left when it runs out is skipped, and the file says so.

It composes the two measuring tools (the one module that imports both); ``--model/--classes/--steps`` make it small
enough for a test on a CPU.

    python -m dpclab gpu-check --out docs/gpu_check.md                  # on the GPU
    python -m dpclab gpu-check --allow-cpu --model small --classes 4 --shots 2 --steps 1 --check-test 16  # CPU smoke
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

import torch

from dpclab.backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED, load_clip, resolve_device
from dpclab.data.shapes import DatasetShape
from dpclab.io import atomic_write_text
from dpclab.lab.estimate.check import check_end_to_end
from dpclab.lab.estimate.measuring import measure, measure_inputs, measure_method
from dpclab.lab.estimate.model import EVAL_BATCH, MeasureConfig
from dpclab.lab.speed.config import BenchConfig, ModelCase
from dpclab.lab.speed.shapes import ShapeCase, bench_shape
from dpclab.lab.synthetic import class_names
from dpclab.methods.table import method_names, resolve
from dpclab.lab.timing import Repeat, device_name, peak_memory, probe_examples
from dpclab.methods.base import Task
from dpclab.runconfig import RunConfig, train_config
from dpclab.precision import PRECISIONS
from dpclab.source import Source, startup_lines
from dpclab.train import fit

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
    #: PromptKD's teacher model (released: a ViT-L/14 PromptSRC; random weights here) and the free GPU memory it needs
    teacher_model: str = "ViT-L-14"
    teacher_min_free_gib: float = 8.0
    #: the time budget in seconds: phases (and precisions) left when it runs out are skipped
    budget_s: float = BUDGET_S


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
    #: PromptKD with the ViT-L/14-shaped teacher: step_s, peak_mib, teacher (or ``error``)
    teacher: dict = field(default_factory=dict)
    #: phase title -> why it did not give its figures ("failed: ...", "skipped: ...")
    problems: dict = field(default_factory=dict)


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


def promptkd_teacher(cfg: CheckConfig, workdir: Path, log=print) -> dict:
    """PromptKD's training step with a ``cfg.teacher_model`` PromptSRC teacher (the released ViT-L/14 shape, random
    weights) over a ``cfg.model`` student, at ``cfg.classes`` classes: ``{"step_s", "peak_mib", "teacher", "batch"}``,
    or ``{"skipped": why}`` when the GPU's free memory is under ``cfg.teacher_min_free_gib``."""

    device = resolve_device(cfg.device)
    if device.type == "cuda":
        free = torch.cuda.mem_get_info(device)[0] / 2**30
        if free < cfg.teacher_min_free_gib:
            return {"skipped": f"{free:.1f} GiB free on the GPU, the {cfg.teacher_model} teacher needs "
                               f"{cfg.teacher_min_free_gib:.0f}"}
    bb = load_clip(cfg.model, cfg.pretrained, cfg.device)
    teacher_bb = load_clip(cfg.teacher_model, None, cfg.device)
    mcfg = MeasureConfig(model=cfg.model, pretrained=cfg.pretrained, device=cfg.device, steps=cfg.steps,
                         repeats=cfg.repeats, image_px=cfg.image_px, encode_images=8)
    pixels = measure_inputs(bb, mcfg, workdir).pixels
    task = Task(tuple(class_names(cfg.classes)), "a photo of a {}.", "base", "synthetic")
    teacher = resolve("promptsrc").build(teacher_bb, {}, cfg.classes, seed=1).to(device)
    student = resolve("promptkd").build(bb, {}, cfg.classes, seed=1, teacher=teacher).to(device)
    tcfg = replace(train_config(RunConfig(method="promptkd", progress=False), resolve("promptkd")), epochs=1 + cfg.repeats,
                   warmup_epochs=0, num_workers=0, progress=False)
    n = max(cfg.classes, tcfg.batch_size * cfg.steps)
    data = probe_examples(cfg.steps)(labels=torch.arange(n) % cfg.classes, features=lambda v, r=Repeat(pixels): r)
    with peak_memory(device) as mem:
        hist = fit(student, data, task, tcfg)
    step = statistics.median(h["seconds"] / max(1, h["steps"]) for h in hist[1:])
    log(f"  promptkd with a {cfg.teacher_model} teacher: {1000 * step:.1f} ms per step (batch {tcfg.batch_size})")
    del student, teacher, teacher_bb, bb
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"step_s": step, "peak_mib": mem.cuda_mib if device.type == "cuda" else mem.rss_mib,
            "teacher": cfg.teacher_model, "batch": tcfg.batch_size}


def require_cuda(device: str, allow_cpu: bool) -> torch.device:
    """The device the check runs on: a CUDA GPU, or with ``allow_cpu`` whatever ``device`` resolves to; without a
    GPU a ValueError in one line naming the check (the driver against the torch wheel's CUDA)."""

    dev = resolve_device(device)
    if dev.type == "cuda" and torch.cuda.is_available():
        return dev
    if allow_cpu:
        return dev if dev.type != "cuda" else torch.device("cpu")
    raise ValueError(f"gpu-check needs a CUDA GPU and torch sees none (device={device!r}, torch {torch.__version__}, "
                     f"built for CUDA {torch.version.cuda or 'none'}): check `nvidia-smi` (its driver must support "
                     f"that CUDA version) and `python -c \"import torch; print(torch.cuda.is_available())\"`, install "
                     f"the torch wheel matching the driver, or pass --allow-cpu to time the CPU.")


#: the phases, in order: (title, what ``run_check`` calls)
PHASES = ("Every method x precision", "CoOp against the reference-style loop", "The estimate against a short measured "
          "run", "PromptKD with a ViT-L/14-shaped teacher")


def run_check(cfg: CheckConfig, workdir: Path, log=print, out: Path | None = None,
              startup: Sequence[str] = ()) -> Result:
    """Every phase in order; with ``out``, the markdown is (re)written after each (header first). A phase that
    raises is recorded in ``Result.problems`` and the next one runs; once ``cfg.budget_s`` has passed, what is left
    is skipped (said in ``problems``)."""
    t0 = time.perf_counter()
    methods = list(cfg.methods or method_names())
    state = {"device": device_name(resolve_device(cfg.device)), "fits": [], "ratios": {}, "check": None,
             "teacher": {}, "problems": {}}

    def result() -> Result:
        return Result(state["device"], tuple(state["fits"]), state["ratios"], state["check"],
                      time.perf_counter() - t0, state["teacher"], dict(state["problems"]))

    def write() -> None:
        if out is not None:
            atomic_write_text(out, markdown(result(), cfg, startup))

    def over_budget() -> str:
        spent = time.perf_counter() - t0
        return (f"skipped: the {cfg.budget_s / 60:g}-minute budget ran out ({spent / 60:.1f} min spent)"
                if spent > cfg.budget_s else "")

    def fits_phase() -> None:
        for p in cfg.precisions:
            why = over_budget()
            if why:
                state["fits"] += [Fit(m, p, error=why) for m in methods]
                continue
            log(f"== {p}: {len(methods)} methods, one short fit each at {cfg.classes} classes")
            state["fits"] += fits_in(p, methods, cfg, workdir / p, log)
            write()

    def set_(key, fn):
        return lambda: state.__setitem__(key, fn())

    phases = (fits_phase, set_("ratios", lambda: coop_ratios(cfg, workdir / "ratios", log)),
              set_("check", lambda: estimate_check(cfg, workdir / "estimate", log)),
              set_("teacher", lambda: promptkd_teacher(cfg, workdir / "teacher", log)))
    write()
    for title, phase in zip(PHASES, phases):
        why = over_budget()
        if why:
            log(f"== {title}: {why}")
            state["problems"][title] = why
        else:
            log(f"== {title}")
            try:
                phase()
            except Exception as err:  # noqa: BLE001 - any failure: recorded in the table, the next phase runs
                msg = f"failed: {type(err).__name__}: {' '.join(str(err).split())[:300]}"
                log(f"   {msg}")
                state["problems"][title] = msg
        write()
    return result()


# ------------------------------------------------------------------------------------------------ markdown
def _ms(s: float | None) -> str:
    return "—" if s is None or s == 0 else f"{1000 * s:.1f}"


def _cell(f: Fit) -> str:
    if f.error:
        return f.error
    peak = "" if f.peak_mib is None else f" / {f.peak_mib:,.0f}"
    return f"{_ms(f.step_s)} / {_ms(f.eval_s)}{peak}"


def _problem(r: Result, title: str) -> list[str]:
    why = r.problems.get(title)
    return [f"**{why}**", ""] if why else []


def markdown(r: Result, cfg: CheckConfig, startup: Sequence[str] = ()) -> str:
    """The check's markdown: the header (with ``startup``, the start-up lines) and every phase's section so far (a
    failed or skipped phase says so)."""
    cuda = "cuda" in r.device or "(cuda" in r.device
    mem = "peak `torch.cuda.max_memory_allocated` (MiB)" if cuda else "peak process RSS (MiB; a CPU: not per method)"
    precisions = list(dict.fromkeys(f.precision for f in r.fits)) or list(cfg.precisions)
    lines = [f"GPU check on **{r.device}**, {cfg.model} (random weights), torch {torch.__version__}, "
             f"{time.strftime('%Y-%m-%d')}; {r.seconds / 60:.1f} min so far (budget {cfg.budget_s / 60:g} min).", ""]
    if startup:
        lines += ["Start-up: " + "; ".join(startup) + ".", ""]
    lines += [f"### {PHASES[0]}: one short fit at {cfg.classes} classes ({cfg.steps} timed steps)", "",
              *_problem(r, PHASES[0]),
              f"Each cell: ms per training step (the method's batch) / ms per evaluation batch of 256 / {mem}. "
              f"A precision the device refuses (`dpclab.precision.check_precision`) says so"
              + ("." if cuda else "; on a CPU, amp autocasts to bfloat16 and fp16 runs where torch has the CPU half "
                 "kernels (a CPU's fp16 times say nothing about a GPU's)."), "",
              "| method | " + " | ".join(precisions) + " |", "|---|" + "---|" * len(precisions)]
    for m in dict.fromkeys(f.method for f in r.fits):
        cells = {f.precision: _cell(f) for f in r.fits if f.method == m}
        lines.append(f"| {m} | " + " | ".join(cells.get(p, "") for p in precisions) + " |")
    lines += ["", f"### {PHASES[1]} (ImageNet's shape: {cfg.classes} classes x {cfg.shots} shots, fp32)", "",
              *_problem(r, PHASES[1])]
    q = r.ratios
    if q:
        lines += ["| reference ms/step | dpclab ms/step | **epoch speed-up, fresh view** | epoch speed-up, cached "
                  "view |", "|---|---|---|---|",
                  f"| {_ms(q.get('reference_step'))} | {_ms(q.get('dpclab_step'))} | "
                  f"**{q.get('speedup_fresh_view', float('nan')):.1f}x** | "
                  f"{q.get('speedup_cached_view', float('nan')):.1f}x |"]
    lines += ["", f"### {PHASES[2]} ({2 * cfg.classes} classes, {cfg.check_shots} shots, {cfg.check_test} test "
              f"images, {cfg.check_epochs} epoch(s), fp32)", "", *_problem(r, PHASES[2])]
    c = r.check
    if c is not None:
        lines += ["| run | measured (s) | projected (s) |", "|---|---|---|"]
        lines += [f"| {m} | {c.per_run_measured[m]:.1f} | {c.per_run_projected.get(m, 0.0):.1f} |"
                  for m in c.per_run_measured]
        lines.append(f"| **all, end to end** | **{c.measured:.1f}** | **{c.projected:.1f}** (measured / projected = "
                     f"{c.ratio:.2f}) |")
    lines += ["", f"### {PHASES[3]} ({cfg.teacher_model} PromptSRC teacher, {cfg.model} student, {cfg.classes} "
              f"classes, fp32)", "", *_problem(r, PHASES[3])]
    k = r.teacher
    if k.get("skipped"):
        lines.append(f"**skipped: {k['skipped']}**")
    elif k:
        lines += ["| teacher | student batch | ms per step | peak MiB |", "|---|---|---|---|",
                  f"| {k['teacher']} | {k['batch']} | {_ms(k['step_s'])} | {k['peak_mib']:,.0f} |"]
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
    p.add_argument("--teacher-model", default=d.teacher_model, help="PromptKD's teacher (released: ViT-L/14; random "
                   "weights)")
    p.add_argument("--budget-min", type=float, default=BUDGET_S / 60, help="time budget in minutes: what is left "
                   "when it runs out is skipped")
    p.add_argument("--allow-cpu", action="store_true", help="run without a CUDA GPU (tests, smoke runs); otherwise "
                   "refused")
    p.add_argument("--out", default="reports/gpu_check.md", help="where the markdown table goes (written as it goes)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    device = require_cuda(args.device, args.allow_cpu)  # before anything else: no silent CPU run
    if args.threads:
        torch.set_num_threads(args.threads)
    model, pretrained = (EMBEDDED_MODEL, EMBEDDED_PRETRAINED) if args.model == "small" else (args.model, None)
    cfg = CheckConfig(model=model, pretrained=pretrained, device=str(device), classes=args.classes,
                      precisions=tuple(args.precisions), methods=tuple(args.methods) if args.methods else None,
                      steps=args.steps, repeats=args.repeats, shots=args.shots,
                      check_methods=tuple(args.check_methods), check_epochs=args.check_epochs,
                      check_shots=args.check_shots, check_test=args.check_test, image_px=args.image_px,
                      teacher_model=args.teacher_model, budget_s=60.0 * args.budget_min)
    startup = startup_lines(Source(model=model, pretrained=pretrained or "random", device=str(device)), workers=0)
    for line in startup:
        print(line)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="dpclab-gpu-check-") as tmp:
        result = run_check(cfg, Path(tmp), out=out, startup=startup)
    text = markdown(result, cfg, startup)
    atomic_write_text(out, text)
    skipped = any(w.startswith("skipped") for w in result.problems.values()) or \
        any(f.error.startswith("skipped") for f in result.fits)
    over = (f"; over the {cfg.budget_s / 60:g}-minute budget" + (": what was left is skipped" if skipped else
                                                                 " (the last phase ran to its end)")) \
        if result.seconds > cfg.budget_s else ""
    print(f"\n{text}\nwrote {out} ({result.seconds / 60:.1f} min{over})")
    failed = any(why.startswith("failed") for why in result.problems.values()) or \
        any(f.error.startswith("failed") for f in result.fits)
    return 1 if failed else 0


__all__ = ["CheckConfig", "Fit", "Result", "PHASES", "fits_in", "coop_ratios", "estimate_check", "promptkd_teacher",
           "require_cuda", "run_check", "markdown", "build_parser", "main"]
