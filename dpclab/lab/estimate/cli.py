"""``python -m dpclab estimate``: the command line and the summary it prints."""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import torch

from dpclab.backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED
from dpclab.data.shapes import COOP_SHAPES
from dpclab.io import atomic_write_text
from dpclab.lab.estimate.check import check_end_to_end
from dpclab.lab.estimate.measuring import measure, pick_class_counts
from dpclab.lab.estimate.model import DeviceTimings, MeasureConfig
from dpclab.lab.estimate.price import NOTEBOOK_WORK, Projection, WallTime, project
from dpclab.lab.options import add_parameter_args, notebook_parameters, positive_int
from dpclab.lab.plan import Scope, report_plan
from dpclab.lab.preflight import PreflightError, check_data, resolve_weights
from dpclab.lab.trainjobs import grid_jobs as plan_jobs, job_key_of
from dpclab.source import Source


def hours(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds:.1f} s"


def _table(title: str, parts: dict[str, float], total: float) -> list[str]:
    rows = sorted(parts.items(), key=lambda kv: -kv[1])
    return [f"| {title} | projected | share |", "|---|---|---|",
            *(f"| {k} | {hours(v)} | {100 * v / total:.1f}% |" for k, v in rows), ""]


def notebook_lines(p: Projection, quick: bool = False) -> list[str]:
    """One line per notebook: runs it requests, how many it trains (first request) or reuses, its own work."""
    total = p.total
    lines = ["| notebook | runs requested | trained here | reused | its own work | projected | share |",
             "|---|---|---|---|---|---|---|"]
    for nb in sorted({r.run.notebook for r in p.runs}):
        runs = [r for r in p.runs if r.run.notebook == nb]
        seconds = sum(r.total for r in runs)
        work = NOTEBOOK_WORK[nb][1 if quick else 0].what if nb in NOTEBOOK_WORK else ""
        lines.append(f"| {nb} | {len({r.run.key for r in runs})} | {sum(not r.reused for r in runs)} | "
                     f"{sum(r.reused for r in runs)} | {work} | {hours(seconds)} | {100 * seconds / total:.1f}% |")
    lines.append(f"| backbone loads | | | | one per notebook | {hours(p.loads)} | {100 * p.loads / total:.1f}% |")
    return lines + [""]


def summary(p: Projection, t: DeviceTimings, datasets: Sequence[str], seeds: Sequence[int],
            wall: WallTime | None = None, quick: bool = False) -> str:
    """The projection as markdown: the headline (device, precision, one process, N GPUs), per notebook, dataset,
    method and part."""
    lines = [f"Projected wall time of the full report ({t.model}, precision **{t.precision}**) on "
             f"**{t.device_name or t.device}**, datasets {' '.join(datasets)}, seeds {' '.join(map(str, seeds))}:",
             "", f"* one process: **{hours(p.total)}**"]
    if wall is not None:
        waves = " + ".join(str(n) for n in wall.waves)
        lines.append(f"* on {wall.gpus} GPU{'s' if wall.gpus > 1 else ''} (`python -m dpclab grid`, then the report): "
                     f"**{hours(wall.total)}** (the grid: {sum(wall.waves)} runs in {len(wall.waves)} dependency "
                     f"waves ({waves}), {hours(wall.grid)}; then the report: {hours(wall.report)})")
    lines.append("")
    lines += notebook_lines(p, quick)
    lines += _table("dataset", p.by(lambda r: r.dataset), p.total)
    lines += _table("method", p.by(lambda r: r.method), p.total)
    parts = {k: sum(getattr(r, k) for r in p.runs) for k in ("train", "views", "test_features", "eval",
                                                           "notebook_work")}
    parts["backbone loads"] = p.loads
    return "\n".join(lines + _table("part", parts, p.total)).rstrip() + "\n"


# ---------------------------------------------------------------------------------------------------- CLI
@dataclass(frozen=True)
class Settings:
    """What the estimate prices: the report's source and scope (its parameters, as ``report -p``), and the weights
    the measurement loads (random: same shapes, same time, no download)."""

    source: Source
    scope: Scope
    #: None: random weights; the embedded checkpoint for the embedded model
    weights: str | None = None

    @property
    def datasets(self) -> tuple[str, ...]:
        return self.scope.datasets

    @property
    def seeds(self) -> tuple[int, ...]:
        return self.scope.seeds


def settings(args: argparse.Namespace) -> Settings:
    """The report's parameters from ``-p KEY VALUE`` and the shared options (``dpclab.lab.options``: ``-p`` wins), with
    the estimate's defaults: ViT-B/16 (``--model small``: the embedded model) on the 11 CoOp datasets."""
    params = notebook_parameters(args)
    if params.get("model", "ViT-B-16") == "small":
        params.update(model=EMBEDDED_MODEL, pretrained=EMBEDDED_PRETRAINED)
    params.setdefault("model", "ViT-B-16")
    params.setdefault("pretrained", EMBEDDED_PRETRAINED if params["model"] == EMBEDDED_MODEL else "random")
    params.setdefault("dataset", ",".join(COOP_SHAPES))
    scope = Scope.from_parameters(params)
    unknown = [d for d in scope.datasets if d not in COOP_SHAPES]
    if unknown:
        raise ValueError(f"no shape known for {unknown}; the CoOp datasets are {', '.join(COOP_SHAPES)}.")
    source = Source(model=str(params["model"]), pretrained=str(params["pretrained"]),
                    shots=int(params.get("shots", 16)), precision=str(params.get("precision", "fp32")),
                    device=str(params.get("device", "auto")))
    return Settings(source, scope, EMBEDDED_PRETRAINED if source.embedded else None)


def report_runs(s: Settings, methods: Sequence[str] | None = None) -> list:
    """The report's planned runs, every notebook's (``dpclab.lab.plan.report_plan``); ``methods``: notebook 06's rows
    of these methods only."""
    return [r for r in report_plan(s.scope) if not methods or r.method in methods or r.requested_by != ("06",)]


def grid_jobs(plan: Sequence, s: Settings) -> tuple[list, dict]:
    """The grid's jobs for ``plan`` (``dpclab.lab.trainjobs.grid_jobs``: the trained runs, a two-step run after its step 1)
    and, per planned run key, its job's key."""
    return plan_jobs(plan, s.source), {r.key: job_key_of(r.run_config(s.source, progress=False)) for r in plan}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dpclab estimate", description=sys.modules[__package__].__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_parameter_args(p)  # the report's parameters: -p, --quick, --datasets, --seeds, --model, --precision...
    p.add_argument("--gpus", type=positive_int, help="also project the wall time on this many GPUs: the grid's jobs "
                   "spread over them, then the report (default: the GPUs torch sees, at least 1)")
    p.add_argument("--methods", nargs="+", help="notebook 06's methods (default: all, as the notebook)")
    p.add_argument("--short", action="store_true", help="a short measurement (2 class counts, 2 steps, small "
                   "evaluation batches): for CPUs")
    p.add_argument("--steps", type=positive_int, help="timed steps per training probe (default 3; --short: 2)")
    p.add_argument("--repeats", type=positive_int, help="repeats of every timing, the median kept (default 3)")
    p.add_argument("--class-counts", type=positive_int, nargs="+", help="class counts to measure at (default: 4 "
                   "spanning the datasets'; --short: 2)")
    p.add_argument("--image-px", type=positive_int, default=400, help="side of the synthetic JPEGs (decode cost)")
    p.add_argument("--threads", type=positive_int, help="torch CPU threads")
    p.add_argument("--timings", help="reuse timings saved by --save-timings (no measuring)")
    p.add_argument("--save-timings", help="write the measured timings (JSON) here")
    p.add_argument("--check", metavar="DATASET", help="also run a reduced end-to-end check on a synthetic dataset "
                   "of this shape and compare it with the projection")
    p.add_argument("--check-methods", nargs="+", default=["zeroshot", "coop", "kgcoop", "coop+dpc", "maple"])
    p.add_argument("--check-epochs", type=positive_int, default=2)
    p.add_argument("--check-test", type=positive_int, help="test images of the check's dataset (default: the real "
                   "size)")
    p.add_argument("--markdown", help="write the summary (markdown) here")
    return p


def class_counts_needed(plan: Sequence, shapes: dict) -> dict[str, set[int]]:
    """The class counts each method of ``plan`` is trained or evaluated at."""
    needed: dict[str, set[int]] = {}
    for r in plan:
        s = shapes[r.dataset]
        needed.setdefault(r.method, set()).update(
            {s.base_classes, s.new_classes, s.classes if r.train_classes == "all" else s.base_classes})
    return needed


def measure_config(s: Settings, args: argparse.Namespace, counts: Sequence[int]) -> MeasureConfig:
    q = args.short
    return MeasureConfig(model=s.source.model, pretrained=s.weights, device=s.source.device,
                         precision=s.source.precision, class_counts=tuple(counts), steps=args.steps or (2 if q else 3),
                         repeats=args.repeats or 3, eval_sizes=(4, 16) if q else (16, 64),
                         eval_sizes_features=(8, 64) if q else (16, 128), image_px=args.image_px,
                         encode_images=32 if q else 128)


def preflight_lines(args: argparse.Namespace, s: Settings, plan: Sequence) -> list[str]:
    """The report's pre-flight, said before measuring (``dpclab.lab.preflight``): the planned datasets readable from
    ``-p data_root`` when one is given, the report's pretrained tag resolved to a local file. Said, not refused: the
    estimate itself measures on synthetic images with random weights."""

    lines = []
    root = notebook_parameters(args).get("data_root")
    if root:
        try:
            lines += check_data(str(Path(str(root)).expanduser().resolve()), [r.dataset for r in plan])
        except PreflightError as err:
            lines.append(f"{err} (the estimate goes on: it measures on synthetic images)")
    lines += resolve_weights([(s.source.model, s.source.pretrained)], remote=False)[1]
    return [f"pre-flight: {line}" if not line.startswith("pre-flight") else line for line in lines]


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        s = settings(args)
    except ValueError as err:
        raise SystemExit(f"error: {' '.join(str(err).split())}") from None
    if args.threads:
        torch.set_num_threads(args.threads)
    plan = report_runs(s, args.methods)
    for line in preflight_lines(args, s, plan):
        print(line, flush=True)
    shapes = {d: COOP_SHAPES[d] for d in s.datasets}
    needed = class_counts_needed(plan, shapes)
    if args.check:
        cs = COOP_SHAPES[args.check]
        for m in args.check_methods:
            needed.setdefault(m, set()).update({cs.base_classes, cs.new_classes})
    k = 2 if args.short else 4
    by_method = {m: (list(args.class_counts) if args.class_counts else pick_class_counts(sorted(c), k))
                 for m, c in needed.items()}
    counts = tuple(sorted({c for cs in by_method.values() for c in cs}))
    mcfg = measure_config(s, args, counts)
    precision = s.source.precision
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="dpclab-estimate-") as tmp:
        if args.timings:
            timings = DeviceTimings.from_json(Path(args.timings).read_text())
            if timings.precision != precision:
                raise SystemExit(f"error: {args.timings} was measured in {timings.precision}, the report asks for "
                                 f"{precision}; measure in it (drop --timings) or pass --precision "
                                 f"{timings.precision}.")
        else:
            print(f"measuring {len(by_method)} methods ({precision}) at {k if not args.class_counts else len(counts)}"
                  f" class counts each, between {min(counts)} and {max(counts)}", flush=True)
            timings = measure(list(by_method), mcfg, Path(tmp), counts_by_method=by_method)
        if args.save_timings:
            atomic_write_text(Path(args.save_timings), timings.to_json())
        projection = project(plan, shapes, timings, shots=s.source.shots, quick=s.scope.quick)
        gpus = args.gpus or max(1, torch.cuda.device_count())
        jobs, job_key = grid_jobs(plan, s)
        wall = projection.wall(gpus, jobs, job_key)
        text = summary(projection, timings, s.datasets, s.seeds, wall, s.scope.quick)
        print(f"\nmeasured in {time.perf_counter() - t0:.0f} s; plan: {len(plan)} runs ({len(jobs)} trained by "
              f"the grid)\n")
        print(text)
        if args.check:
            shape = COOP_SHAPES[args.check]
            if args.check_test:
                shape = replace(shape, test=args.check_test)
            check = check_end_to_end(shape, args.check_methods, args.check_epochs, timings, mcfg, Path(tmp),
                                     s.source.shots)
            text += (f"\nEnd-to-end check ({args.check} shape, {shape.test} test images, {args.check_epochs} epochs, "
                     f"{', '.join(args.check_methods)}, {precision}): measured {check.measured:.1f} s, projected "
                     f"{check.projected:.1f} s, measured / projected = {check.ratio:.2f}\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.markdown), text)
    return 0
