"""``python -m dpclab estimate``: the command line and the summary it prints."""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import torch

from ..data.shapes import COOP_SHAPES
from ..grid import report_plan
from .check import check_end_to_end
from .measure import MeasureConfig, measure, pick_class_counts
from .model import DeviceTimings, Projection, project


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
    from ..backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED
    from ..grid import waves

    args = build_parser().parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, pretrained = args.model, args.pretrained
    if model == "small":
        model, pretrained = EMBEDDED_MODEL, EMBEDDED_PRETRAINED
    unknown = [d for d in args.datasets if d not in COOP_SHAPES]
    if unknown:
        raise SystemExit(f"error: no shape known for {unknown}; the CoOp datasets are {', '.join(COOP_SHAPES)}.")
    plan = report_plan(args.datasets, args.seeds, args.methods)
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
            from ..io import atomic_write_text

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
        from ..io import atomic_write_text

        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(Path(args.markdown), text)
    return 0
