"""``python -m dpclab speed``: the command line, and :func:`run_bench`, which runs every part and writes the CSV and
markdown."""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from dpclab.backbones import resolve_device
from dpclab.io import atomic_write_text
from dpclab.lab.speed.config import SHAPE_METHODS, BenchConfig, ModelCase, default_small_model, register_tiny_model
from dpclab.lab.speed.coop import bench_coop, bench_dpc, bench_notebooks, bench_omega
from dpclab.lab.speed.report import Row, markdown, shapes_markdown, write_csv
from dpclab.lab.speed.shapes import run_shapes, shape_cases


def run_bench(cfg: BenchConfig, log=print) -> list[Row]:
    """Run every part of the benchmark; write the CSV and markdown; return the rows."""
    with tempfile.TemporaryDirectory(prefix="dpclab-bench-") as tmp:
        workdir = Path(cfg.workdir) if cfg.workdir is not None else Path(tmp)
        register_tiny_model(workdir)
        rows: list[Row] = []
        for case in cfg.cases if cfg.coop_cases else []:
            coop_rows, ctx = bench_coop(case, cfg, workdir, log)
            rows += coop_rows
            dpc_rows, dpc_method = bench_dpc(case, ctx, cfg, log)
            rows += dpc_rows
            rows += bench_omega(case, dpc_method, ctx["experiment"], log)
        if cfg.shapes:
            rows += run_shapes(cfg, cfg.shapes, cfg.shape_methods, cfg.shape_steps, log)
        if cfg.notebooks:
            rows += bench_notebooks(Path(cfg.out_csv).parent / "notebooks", cfg.notebooks_quick, log)
    header = (f"# dpclab benchmark ({time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''})\n\n"
              f"Speed-up = reference-style CoOp epoch time / dpclab CoOp epoch time, measured in the same process. "
              f"'cached view': the augmented view's features are cached (re-runs, other methods on the same seed, "
              f"n_views < epochs); 'fresh view': dpclab also encodes a new augmented view that epoch (the faithful "
              f"default).")
    write_csv(rows, Path(cfg.out_csv))
    text = markdown(rows, header)
    if cfg.shapes:
        text += ("\n## Dataset shapes\n\nPer step, each loop at the method's SPEC batch; epoch speed-ups = steps per "
                 "epoch x step time (+ encoding a fresh view of the training set for dpclab's features methods). "
                 "Reference-style: images decoded every step, frozen image encoder inside the step, 77-token text.\n\n"
                 + shapes_markdown(rows))
    atomic_write_text(cfg.out_md, text)
    return rows


# ---------------------------------------------------------------------------------------------------- CLI
def parse_model(text: str) -> tuple[str, str | None]:
    """``NAME[:PRETRAINED]``; ``small`` = the embedded model if present, else a random tiny one."""
    if text == "small":
        return default_small_model()
    name, _, pretrained = text.partition(":")
    return name, (None if pretrained in ("", "random", "none") else pretrained)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dpclab speed", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~1 minute smoke run: the small model only, tiny workload")
    p.add_argument("--model", action="append", metavar="NAME[:PRETRAINED]",
                   help="model(s) to benchmark (repeatable); default: 'small' (embedded or tiny) and ViT-B-16:random")
    p.add_argument("--classes", type=int, help="classes of the small-model workload (default 10; quick 4)")
    p.add_argument("--shots", type=int, help="shots per class (default 16; quick 4)")
    p.add_argument("--batch-size", type=int, help="batch size (default 32; quick 4)")
    p.add_argument("--epochs", type=int, help="epochs per loop (default 3; quick 2)")
    p.add_argument("--vit-classes", type=int, default=4, help="classes for ViT-B models (default 4)")
    p.add_argument("--vit-shots", type=int, default=2, help="shots for ViT-B models (default 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads for both loops (on a busy shared machine 1 avoids "
                   "thread oversubscription, which slows small ops several-fold)")
    p.add_argument("--skip-notebooks", action="store_true", help="do not time `python -m dpclab report`")
    p.add_argument("--notebooks-full", action="store_true", help="time the full notebook suite instead of "
                   "`report --quick`")
    p.add_argument("--shapes", nargs="*", metavar="DATASET", help="also compare the loops at these CoOp datasets' "
                   "shapes for --shape-methods (default without --quick: imagenet eurosat; on a CPU reduced to at "
                   "most 100 classes x 2 shots)")
    p.add_argument("--shape-methods", nargs="+", default=list(SHAPE_METHODS))
    p.add_argument("--shape-steps", type=int, help="timed steps per loop (default 5; quick 2)")
    p.add_argument("--only-shapes", action="store_true", help="skip the CoOp epoch comparison on the bench dataset")
    p.add_argument("--image-px", type=int, default=96, help="side of the generated images (decode cost; real "
                   "photos are ~400 px)")
    p.add_argument("--csv", default="reports/speed/speed.csv")
    p.add_argument("--markdown", default="reports/speed/speed.md")
    p.add_argument("--workdir", help="keep generated data and caches here (default: a temporary folder)")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    models = [parse_model(m) for m in (args.model or (["small"] if args.quick else ["small", "ViT-B-16"]))]
    cases = []
    for name, pretrained in models:
        big = name.startswith("ViT-") or name.startswith("RN")
        if big:
            cases.append(ModelCase(name, pretrained, args.vit_classes, args.vit_shots, min(4, args.batch_size or 4),
                                   args.epochs or 2))
        else:
            cases.append(ModelCase(name, pretrained, args.classes or (4 if args.quick else 10),
                                   args.shots or (4 if args.quick else 16), args.batch_size or (4 if args.quick else 32),
                                   args.epochs or (2 if args.quick else 3)))
    device = resolve_device(args.device)
    names = args.shapes if args.shapes is not None else ([] if args.quick else ["imagenet", "eurosat"])
    return BenchConfig(cases=cases, device=args.device, notebooks=not (args.skip_notebooks or args.quick),
                       shapes=shape_cases(names, reduced=device.type != "cuda"),
                       shape_methods=tuple(args.shape_methods), shape_steps=args.shape_steps or (2 if args.quick else 5),
                       coop_cases=not args.only_shapes, image_px=args.image_px,
                       notebooks_quick=not args.notebooks_full,
                       out_csv=Path(args.csv), out_md=Path(args.markdown),
                       workdir=Path(args.workdir) if args.workdir else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    rows = run_bench(cfg)
    print(f"\nwrote {cfg.out_csv} and {cfg.out_md} in {time.perf_counter() - t:.0f}s\n")
    print(Path(cfg.out_md).read_text())
    torch.set_num_threads(threads)
    return 0 if rows else 1
