"""``python -m dpclab <command>``: train/evaluate methods, write the embedded world, pretrain the tiny CLIP,
run the notebooks as a report, copy the notebooks out, strip notebook outputs. Every command is a thin wrapper over
a dpclab function."""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
import time
import traceback
import warnings
from dataclasses import replace
from pathlib import Path

import pandas as pd
import torch

import dpclab
from dpclab.backbones import EMBEDDED_MODEL
from dpclab.cpus import allocated_cpus
from dpclab.data.world import ensure_world, rewrite_world, world_datasets, world_stamp
from dpclab.evaluate import summarize
from dpclab.io import check_folder
from dpclab.lab import options as opt
from dpclab.lab.benchmark import markdown_table, write_report
from dpclab.lab.matrix import DEFAULT_METHODS, DEFAULT_SEEDS, QUICK_SEEDS, QUICK_TRAIN, run_matrix, summary_table
from dpclab.lab.dpc_study import study, write_study
from dpclab.lab.notebook import resolve
from dpclab.lab.options import add_source_args, parse_options, source_from_args
from dpclab.lab.pretrain import main as pretrain_main
from dpclab.lab.report.command import report_command
from dpclab.lab.report.run import check_parameters, copy_notebooks, notebook_source, report_parameters
from dpclab.lab.report.strip import strip_outputs
from dpclab.lab.targets import check_targets, markdown_targets
from dpclab.methods.doc_tables import listing
from dpclab.pipeline import plan_run, run
from dpclab.experiment import Experiment, cached_backbone
from dpclab.runconfig import RunConfig
from dpclab.source import startup_lines
from dpclab.transfer import cross_dataset, domain_generalization, summarize_transfer


def _add_run_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="coop", help="method name (see `python -m dpclab methods`)")
    p.add_argument("--dataset", required=True, help="dataset name (CoOp or embedded world) or an image-folder path")
    add_source_args(p)
    p.add_argument("--seeds", type=opt.seed, nargs="+", default=[1, 2, 3])
    p.add_argument("--epochs", type=opt.epochs, help="override the method's default epochs")
    p.add_argument("--lr", type=opt.positive_float, help="override the method's default learning rate")
    p.add_argument("--batch-size", type=opt.positive_int, help="override the method's default batch size")
    p.add_argument("--train", nargs="*", metavar="KEY=VALUE", help="other TrainConfig overrides")
    p.add_argument("--opt", nargs="*", metavar="KEY=VALUE", help="method config overrides, e.g. n_ctx=16 "
                   "(for base+plugin methods: the plug-in's, e.g. omega_b=0.5)")
    p.add_argument("--base-opt", nargs="*", metavar="KEY=VALUE", help="base+plugin methods: the base method's "
                   "config overrides")
    p.add_argument("--base-train", nargs="*", metavar="KEY=VALUE", help="two-step plug-ins (coop+dpc): TrainConfig "
                   "overrides of step 1, e.g. epochs=50")
    _add_output_args(p)


def _add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--overwrite", action="store_true", help="re-run finished runs instead of reusing them")
    p.add_argument("--no-progress", action="store_true")


def _train_overrides(args) -> dict:
    """--train pairs plus --epochs / --lr / --batch-size, range-checked."""
    train = opt.check_train(opt.parse_options(args.train, "--train"))
    for key in ("epochs", "lr", "batch_size"):  # range-checked by argparse
        if getattr(args, key) is not None:
            train[key] = getattr(args, key)
    return train


_ACTIONS = {"train": "train", "reuse": "reuse the finished run", "overwrite": "retrain (--overwrite)",
            "refuse": "refused: the run directory holds a run of another configuration"}


def plan_lines(cfg, steps) -> list[str]:
    """One line per planned step of ``cfg``'s run (:func:`dpclab.pipeline.plan_run`; two for coop+dpc): epochs,
    batch, lr, and reuse / resume / train. The same steps are then passed to ``run``, so what is printed is what runs."""
    lines = []
    for p in steps:
        head = f"seed {cfg.seed} step {p.step}/{len(steps)} {p.method}:"
        if p.action == "evaluate":
            lines.append(f"{head} nothing to train, evaluate")
            continue
        action = f"resume at epoch {p.resume_epoch}" if p.action == "resume" else _ACTIONS[p.action]
        lines.append(f"{head} {p.epochs} epochs, batch {p.batch_size}, lr {p.lr:g} -> {action} ({p.run_dir})")
    return lines


def _two_step_note(args, spec) -> str | None:
    """Why step 1 of a two-step plug-in does not follow --epochs/--lr/--batch-size, when those are given for it."""
    step1 = parse_options(args.base_train)
    given = [k for k in ("epochs", "lr", "batch_size") if getattr(args, k) is not None and k not in step1]
    if not spec.two_step or not given:
        return None
    flags = " / ".join(f"--{k.replace('_', '-')}" for k in given)
    example = " ".join(f"{k}={getattr(args, k)}" for k in given)
    return (f"note: {flags} applies to step 2 ({args.method}) only; step 1 ({spec.base}) keeps its defaults unless "
            f"given --base-train, e.g. --base-train {example}")


def write_missing_world(data_root, datasets) -> None:
    """Write the embedded world's datasets among ``datasets`` that are missing under ``data_root``
    (:func:`dpclab.data.world.ensure_world`), with one line saying so; other datasets are left alone."""

    world = [name for name in datasets if name in world_datasets()]  # others: not even the lock file is written
    written = ensure_world(data_root, world) if world else []
    if written:
        print(f"wrote embedded world dataset(s) {', '.join(written)} under {data_root}", flush=True)


def cmd_train(args) -> int:
    src, train = source_from_args(args), _train_overrides(args)
    write_missing_world(src.data_root, [args.dataset])
    base_train = opt.check_train(parse_options(args.base_train, "--base-train"), "--base-train")
    rows = []
    for seed in args.seeds:
        cfg = RunConfig(args.method, args.dataset, seed, source=src, train=train, method_cfg=parse_options(args.opt),
                        base_method_cfg=parse_options(args.base_opt), base_train=base_train,
                        if_exists="overwrite" if args.overwrite else "reuse", progress=not args.no_progress)
        if seed == args.seeds[0]:
            print("\n".join(startup_lines(src)))
        exp = Experiment.prepare(cfg)
        steps = plan_run(cfg, exp)  # resolves the method once; run() executes these very steps
        note = _two_step_note(args, steps[-1].spec) if seed == args.seeds[0] else None
        if note:
            print(note)
        print("\n".join(plan_lines(cfg, steps)), flush=True)
        res = run(cfg, experiment=exp, plan=steps)
        m = res.metrics
        note = " (reused finished run)" if res.reused else ""
        print(f"{args.method} {args.dataset} seed {seed}: base {m['base']:.2f}  new {m['new']:.2f}  "
              f"HM {m['hm']:.2f}{note}")
        rows.append({"dataset": args.dataset, "method": args.method, "seed": seed, **m})
    if len(rows) > 1:
        s = summarize(pd.DataFrame(rows)).iloc[0]
        print(f"mean over {len(rows)} seeds: base {s.base:.2f} ± {s.base_std:.2f}  new {s.new:.2f} ± "
              f"{s.new_std:.2f}  HM {s.hm:.2f}")
    return 0


def cmd_transfer(args) -> int:
    src, train = source_from_args(args), _train_overrides(args)
    write_missing_world(src.data_root, [args.dataset, *args.targets])
    evaluate = domain_generalization if args.setting == "dg" else cross_dataset
    tables = []
    for seed in args.seeds:
        cfg = RunConfig(args.method, args.dataset, seed, source=src, train=train, method_cfg=parse_options(args.opt),
                        if_exists="overwrite" if args.overwrite else "reuse", progress=not args.no_progress)
        source = replace(cfg, train_classes="all")
        print("\n".join(plan_lines(source, plan_run(source, Experiment.prepare(source)))), flush=True)
        tables.append(evaluate(cfg, args.targets, results=args.transfer_results))

    summary = summarize_transfer(pd.concat(tables, ignore_index=True))
    print(summary[["role", "target", "accuracy", "runs"]].to_string(index=False, float_format="%.2f"))
    return 0


def _grid_setup(args, datasets) -> dict:
    """What the grid commands (benchmark, dpc-study) share: torch threads, the missing embedded-world datasets
    written, and :func:`dpclab.lab.matrix.run_matrix`'s source and ``if_exists`` from the arguments."""
    if args.threads:
        torch.set_num_threads(args.threads)
    src = source_from_args(args)
    write_missing_world(src.data_root, datasets)
    return dict(source=src, if_exists="overwrite" if args.overwrite else "reuse")


def cmd_dpc_study(args) -> int:
    datasets = args.datasets or world_datasets()
    seeds = args.seeds or list(DEFAULT_SEEDS)
    grid_kw = _grid_setup(args, datasets)
    t0 = time.time()
    step2 = opt.check_train(parse_options(args.step2, "--step2"), "--step2")
    runs, sweep = study(datasets=datasets, seeds=seeds, step2=step2, train={} if args.epochs is None else {"epochs": args.epochs},
                        **grid_kw)
    header = (f"# DPC study: {args.model} ({args.pretrained}), {args.shots} shots, seeds {seeds}\n\n"
              f"- command: `python -m dpclab {' '.join(args.argv)}`\n- date: {time.strftime('%Y-%m-%d %H:%M')}\n"
              f"- DPC step-2 training overrides: {step2 or 'none (protocol defaults)'}\n"
              f"- wall time: {time.time() - t0:.0f} s ({int(runs['reused'].sum())} of {len(runs)} runs reused)")
    paths = write_study(args.out, args.name, runs, sweep, header=header)
    print(paths["markdown"].read_text())
    return 0


def cmd_benchmark(args) -> int:
    datasets = args.datasets or (world_datasets()[:1] if args.quick else world_datasets())
    seeds = args.seeds or list(QUICK_SEEDS if args.quick else DEFAULT_SEEDS)
    train = dict(QUICK_TRAIN) if args.quick else {}
    train.update(opt.check_train(parse_options(args.train)))
    if args.epochs is not None:
        train["epochs"] = args.epochs
    grid_kw = _grid_setup(args, datasets)
    t0 = time.time()

    def show(row: dict) -> None:
        if not args.no_progress:
            note = " (reused)" if row["reused"] else f" ({row['seconds']:.0f} s)"
            print(f"{row['dataset']} {row['method']} seed {row['seed']}: base {row['base']:.2f}  new {row['new']:.2f}"
                  f"  HM {row['hm']:.2f}  train {row['train_acc']:.2f}{note}", flush=True)

    runs = run_matrix(datasets=datasets, rows=args.methods or list(DEFAULT_METHODS), seeds=seeds, train=train,
                      on_row=show, **grid_kw)
    wall = time.time() - t0
    summary = summary_table(runs)
    targets = check_targets(summary)
    header = (f"# Benchmark: {args.model} ({args.pretrained}), {args.shots} shots, seeds {seeds}"
              f"{' (QUICK: not a result)' if args.quick else ''}\n\n"
              f"- command: `python -m dpclab {' '.join(args.argv)}`\n- date: {time.strftime('%Y-%m-%d %H:%M')}\n"
              f"- weights: {cached_backbone(args.model, args.pretrained, args.device).key} (sha256 prefix of a "
              f"checkpoint file)\n- world generator: {world_stamp()}\n"
              f"- training overrides: {train or 'none (protocol defaults)'}\n- wall time: {wall:.0f} s "
              f"({int(runs['reused'].sum())} of {len(runs)} runs reused)")
    name = args.name or ("quick" if args.quick else "benchmark")
    paths = write_report(args.out, name, runs, summary, targets, header=header)
    print()
    print(markdown_table(summary))
    print(markdown_targets(targets))
    print(f"wall time {wall:.0f} s; tables in {paths['markdown']} and {paths['summary']}")
    return 0


def cmd_methods(args) -> int:
    print("\n".join(listing()))
    return 0


def cmd_report(args) -> int:
    params = {key: opt.parse_value(value) for key, value in args.param or []}
    check_parameters(params)
    opt.check_parameter_values(params)  # the ranges of train's options (-p shots 0 = all images, as --shots 0)
    check_folder(args.out, "report folder")
    setup = resolve(report_parameters(params, args.quick))  # bad values fail here, before any kernel starts
    print("\n".join(startup_lines(setup.source)))
    jobs = args.jobs
    if jobs is None:  # the embedded model runs one CPU thread per kernel: two notebooks at once use both cores
        jobs = 2 if params.get("model", EMBEDDED_MODEL) == EMBEDDED_MODEL and allocated_cpus() > 1 else 1
    folder, which = notebook_source(args.notebooks)
    print(which)
    return report_command(params, args.quick, args.only, folder, args.out, args.timeout, jobs,
                          train=not args.no_train)


def cmd_notebooks(args) -> int:
    for line in copy_notebooks(args.dir, overwrite=args.overwrite):
        print(line)
    return 0


def cmd_strip(args) -> int:
    paths = args.paths or sorted(Path("notebooks").glob("*.ipynb"))
    for path in strip_outputs(paths):
        print(f"stripped {path}")
    return 0


def cmd_world(args) -> int:
    for name, path in rewrite_world(args.root, args.names, seed=args.seed).items():
        print(f"{name}: {path}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m dpclab", description=__doc__)
    verbose_help = "show the full traceback of an error (instead of one line) and info log messages"
    parser.add_argument("-v", "--verbose", action="store_true", help=verbose_help)
    parser.add_argument("--version", action="version", version=f"dpclab {dpclab.__version__}")
    # -v also after the command name (python -m dpclab train ... -v); SUPPRESS keeps a -v given before it
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=verbose_help)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name: str, **kw) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[verbose], **kw)

    p = command("train", help="train (or zero-shot evaluate) a method over seeds; prints base/new/HM")
    _add_run_args(p)
    p.set_defaults(func=cmd_train)
    p = command("eval", help="evaluate: zero-shot, or reuse finished runs (same options as train)")
    _add_run_args(p)
    p.set_defaults(func=cmd_train, method="zeroshot")
    p = command("transfer", help="train on all classes of --dataset, test on --targets: cross-dataset "
                       "(other classes) or --setting dg (same classes, other domains)")
    _add_run_args(p)
    p.add_argument("--targets", nargs="+", required=True, help="target dataset names")
    p.add_argument("--setting", choices=["cross", "dg"], default="cross")
    p.add_argument("--transfer-results", default="runs/transfer.csv", help="CSV table the accuracies go to")
    p.set_defaults(func=cmd_transfer)
    p = command("benchmark", help="zero-shot, CoOp, CoOp+DPC, CoOp+DePT over datasets x seeds on the "
                       "embedded world (written if missing): table of base/new/HM/train accuracy, mean ± std")
    p.add_argument("--datasets", nargs="+", help="dataset names (default: every embedded world dataset; "
                   "--quick: the first)")
    p.add_argument("--methods", nargs="+", help="row labels (default: zeroshot linear-probe coop coop+dpc, each "
                   "other DPC mode as coop+dpc[<mode>], coop+dept)")
    p.add_argument("--seeds", type=opt.seed, nargs="+", help="default: 1 2 3 (--quick: 1)")
    p.add_argument("--quick", action="store_true", help="smoke test: 2 epochs per method, 1 seed, 1 dataset")
    p.add_argument("--epochs", type=opt.epochs, help="override every method's epochs (default: protocol defaults)")
    p.add_argument("--train", nargs="*", metavar="KEY=VALUE", help="other TrainConfig overrides, for all methods")
    p.add_argument("--out", default="reports/benchmark", help="folder for the CSV and markdown tables")
    p.add_argument("--name", help="file name stem of the tables (default: benchmark, or quick)")
    add_source_args(p)
    _add_output_args(p)
    p.add_argument("--threads", type=opt.positive_int, help="torch CPU threads (1 is fastest on a busy shared machine)")
    p.set_defaults(func=cmd_benchmark)
    p = command("dpc-study", help="DPC's ablation rows and ω_b sweep over datasets x seeds (reuses the "
                       "benchmark's runs): why DPC does or does not lift base accuracy")
    p.add_argument("--datasets", nargs="+", help="dataset names (default: every embedded world dataset)")
    p.add_argument("--seeds", type=opt.seed, nargs="+", help="default: 1 2 3")
    p.add_argument("--out", default="reports/benchmark", help="folder for the CSV and markdown tables")
    p.add_argument("--name", default="dpc_study", help="file name stem of the tables")
    p.add_argument("--epochs", type=opt.epochs, help="override the epochs of both steps (default: protocol defaults)")
    p.add_argument("--step2", nargs="*", metavar="KEY=VALUE", help="TrainConfig overrides of DPC's step 2 only "
                   "(e.g. lr=0.0002): step 1 stays the benchmark's CoOp run")
    add_source_args(p)
    _add_output_args(p)
    p.add_argument("--threads", type=opt.positive_int, help="torch CPU threads (1 is fastest on a busy shared machine)")
    p.set_defaults(func=cmd_dpc_study)
    p = command("world", help="write the embedded world's datasets in the CoOp layout")
    p.add_argument("--root", default="data/world")
    p.add_argument("--names", nargs="+", help="world datasets to write (default: all)")
    p.add_argument("--seed", type=opt.seed, default=0)
    p.set_defaults(func=cmd_world)
    p = command("pretrain", add_help=False, help="pretrain the embedded tiny CLIP (python -m dpclab pretrain "
                       "--help; the exact command is in data/embedded/MANIFEST.json)")
    p.set_defaults(func=None)
    for name, what in (("estimate", "time a few steps of every method here and project the full report's wall "
                                     "time (python -m dpclab estimate --help)"),
                       ("gpu-check", "the GPU figures of docs/performance.md in one command: every method x "
                                     "precision, CoOp against the reference loop, the estimate against a run "
                                     "(python -m dpclab gpu-check --help)"),
                       ("grid", "train the report's runs ahead of it over local workers, GPUs or SLURM "
                                "(python -m dpclab grid --help)"),
                       ("speed", "speed and memory of dpclab's loops against reference-style loops "
                                 "(python -m dpclab speed --help)")):
        command(name, add_help=False, help=what).set_defaults(func=None)
    p = command("methods", help="list the available methods and their training defaults")
    p.set_defaults(func=cmd_methods)
    p = command("report", help="execute the notebooks headless (papermill) and write HTML reports")
    p.add_argument("--quick", action="store_true", help="the fast smoke mode of every notebook (what CI runs)")
    p.add_argument("--only", nargs="+", metavar="NN", help="run only these notebooks (prefixes: 00 03)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="override a notebook parameter, as papermill -p (e.g. -p model ViT-B-16 -p pretrained openai)")
    p.add_argument("--notebooks", help="folder of the notebooks (default: ./notebooks when it holds notebooks, "
                   "else the ones installed with dpclab)")
    p.add_argument("--out", default="reports", help="where executed notebooks, HTML and index.html go")
    p.add_argument("--timeout", type=opt.positive_float, help="per-cell timeout in seconds (none by default)")
    p.add_argument("--jobs", type=opt.positive_int, help="notebooks run at once (default: 2 for the embedded model "
                   "on a multi-core CPU, else 1); shared runs are trained once and reused")
    p.add_argument("--no-train", action="store_true", help="do not train the notebooks' runs over the workers "
                   "first (dpclab.lab.plan); each notebook then trains its own as it goes")
    p.set_defaults(func=cmd_report)
    p = command("notebooks", help="copy the notebooks shipped with dpclab into a folder, to open and edit them")
    p.add_argument("dir", nargs="?", default="notebooks", help="where to (default: ./notebooks)")
    p.add_argument("--overwrite", action="store_true", help="replace notebooks already there that differ")
    p.set_defaults(func=cmd_notebooks)
    p = command("strip", help="remove outputs from notebooks before committing them")
    p.add_argument("paths", nargs="*", help="notebooks (default: notebooks/*.ipynb)")
    p.set_defaults(func=cmd_strip)
    return parser


def _one_line_warning(message, category, filename, lineno, file=None, line=None) -> None:
    print(f"warning: {message}", file=sys.stderr)


#: the commands with an argument parser of their own: command -> the module whose ``main(argv)`` runs it, imported
#: when the command is asked for (each loads its own heavy dependencies; ``--help`` of the others stays fast)
OWN_PARSER_TOOLS = {"estimate": "dpclab.lab.estimate.cli", "gpu-check": "dpclab.lab.gpu_check",
                    "grid": "dpclab.lab.grid", "speed": "dpclab.lab.speed.cli"}

def main(argv: list[str] | None = None) -> int:
    """Run a command. Bad input (a ValueError, missing file, existing run, diverged training...) becomes a
    one-line ``error: ...`` on stderr (with ``-v``: the full traceback) and exit code 2; warnings become one-line
    ``warning: ...``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["pretrain"]:  # its own argument parser lives in dpclab.lab.pretrain
        return pretrain_main(argv[1:]) or 0
    if argv[:1] and argv[0] in OWN_PARSER_TOOLS:  # so do these, loaded when asked for
        verbose = any(a in ("-v", "--verbose") for a in argv)
        tool = importlib.import_module(OWN_PARSER_TOOLS[argv[0]])
        command = lambda: tool.main([a for a in argv[1:] if a not in ("-v", "--verbose")]) or 0  # noqa: E731
    else:
        args = build_parser().parse_args(argv)
        args.argv, verbose = argv, args.verbose
        command = lambda: args.func(args)  # noqa: E731
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(message)s")
    with warnings.catch_warnings():
        warnings.showwarning = _one_line_warning
        try:
            return command()
        except (ValueError, FileNotFoundError, FileExistsError, RuntimeError, FloatingPointError) as err:
            if verbose:
                traceback.print_exc()
            else:
                print("error: " + " ".join(str(err).split()) + "  (-v shows the traceback)", file=sys.stderr)
            return 2


if __name__ == "__main__":
    sys.exit(main())
