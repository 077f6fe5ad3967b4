"""Command-line options the tools share (``cli``, ``grid``, ``estimate`` import this; they do not import each other).

* :func:`parse_options` -- ``key=value`` pairs (``--opt``, ``--train``, ``--slurm``...);
* range-checked number types (:func:`positive_int`, ...): a bad number is a one-line usage error naming the option;
* :func:`add_source_args` / :func:`source_from_args` -- the :class:`~dpclab.source.Source` of train, eval, transfer,
  benchmark and dpc-study;
* :func:`add_parameter_args` / :func:`notebook_parameters` -- the notebooks' parameters (``-p key value`` as
  ``report``, plus ``--quick`` and the source options) for grid and estimate, so they plan exactly the report's runs.
"""

from __future__ import annotations

import argparse
import ast
from typing import Callable

from dpclab.lab.parameters import check_parameter_names
from dpclab.source import PRECISIONS, Source

#: TrainConfig overrides (--train, --base-train, --step2) checked here: key -> (type, lowest allowed, fix)
TRAIN_RANGES = {"epochs": (int, 1, "at least 1 (to evaluate without training use `python -m dpclab eval`)"),
                "batch_size": (int, 1, "at least 1"), "lr": (float, None, "above 0, e.g. 0.002"),
                "n_views": (int, 1, "at least 1"), "num_workers": (int, 0, "0 or more")}


def parse_value(text: str):
    """A value as papermill's CLI would read it, plus Python literals: ``16`` -> 16, ``None`` -> None, ``True`` ->
    True, ``[1, 2]`` -> list; anything else (``ViT-B-16``, ``1 2 3``) stays a string."""
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_options(pairs: list[str] | None, flag: str = "--opt") -> dict:
    """``key=value`` pairs -> dict, values parsed as Python literals when possible (``n_ctx=8``, ``csc=True``);
    ``flag`` names the option in the error for a pair without ``=``."""
    out = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SystemExit(f"{flag} expects key=value, got {pair!r}")
        out[key] = parse_value(value)
    return out


def check_train(train: dict, flag: str = "--train") -> dict:
    """``train`` (TrainConfig overrides) with the numbers of :data:`TRAIN_RANGES` checked: a ValueError names the
    option and the fix."""
    for key, (kind, low, fix) in TRAIN_RANGES.items():
        if key not in train:
            continue
        value = train[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and (kind is float or value == int(value))
        if not ok or (value <= 0 if low is None else value < low):
            raise ValueError(f"{flag} {key}={value!r}: must be {fix}.")
    return train


def _number(kind: type, low: float | None, fix: str) -> Callable[[str], float]:
    """An argparse type: ``kind`` at least ``low`` (None: above 0); argparse turns the error into a usage line."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {'an integer' if kind is int else 'a number'}, got "
                                             f"{text!r}") from None
        if value <= 0 if low is None else value < low:
            raise argparse.ArgumentTypeError(f"must be {fix}, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its messages
    return parse


positive_int = _number(int, 1, "at least 1")
nonneg_int = _number(int, 0, ">= 0")
positive_float = _number(float, None, "above 0")
shots = _number(int, 0, ">= 0 (images per class; 0 = all training images)")
seed = _number(int, 0, ">= 0 (the papers use 1 2 3)")
epochs = _number(int, 1, "at least 1 (to evaluate without training use `python -m dpclab eval`, or --method zeroshot)")


def add_source_args(p: argparse.ArgumentParser, results: bool = True) -> None:
    """A :class:`~dpclab.source.Source` as options (train, eval, transfer, benchmark, dpc-study)."""
    d = Source()
    p.add_argument("--data-root", default="data/world", help="folder holding the dataset folders (CoOp layout)")
    p.add_argument("--model", default=d.model, help="open_clip model name, e.g. ViT-B-16")
    p.add_argument("--pretrained", default=d.pretrained, help="open_clip tag (openai), checkpoint path, "
                   "'embedded' or 'random'")
    p.add_argument("--shots", type=shots, default=d.shots, help="training images per class (K-shot, default 16); "
                   "0 = all training images")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="fp32 (default), fp16 (CLIP and "
                   "prompts in half precision, as the reference trainers) or amp (autocast: bf16 on CPU, fp16 on CUDA)")
    p.add_argument("--device", default=d.device, help="auto (CUDA when present), cpu, cuda, cuda:1")
    p.add_argument("--cache-dir", default=d.cache_dir)
    p.add_argument("--runs-dir", default=d.runs_dir)
    if results:
        p.add_argument("--results", default=d.results, help="CSV table every run appends to")


def source_from_args(args: argparse.Namespace) -> Source:
    return Source(model=args.model, pretrained=args.pretrained, data_root=args.data_root, shots=args.shots,
                  precision=args.precision, device=args.device, cache_dir=args.cache_dir, runs_dir=args.runs_dir,
                  results=getattr(args, "results", Source.results))


#: notebook parameters that the source options of grid / estimate set (option dest -> parameter)
_SOURCE_PARAMETERS = ("model", "pretrained", "data_root", "shots", "precision", "device")


def add_parameter_args(p: argparse.ArgumentParser) -> None:
    """The notebooks' parameters, as ``report`` takes them, plus the source options (grid, estimate)."""
    p.add_argument("--quick", action="store_true", help="the notebooks' quick mode (as report --quick)")
    p.add_argument("-p", "--param", nargs=2, action="append", metavar=("KEY", "VALUE"),
                   help="a notebook parameter, as report -p (e.g. -p precision amp -p seeds '1 2')")
    p.add_argument("--datasets", nargs="+", help="the report's datasets (-p dataset 'a,b'); the first is the "
                   "main dataset of notebooks 00-05")
    p.add_argument("--seeds", type=seed, nargs="+", help="few-shot seeds (-p seeds '1 2 3')")
    p.add_argument("--epochs", type=epochs, help="every method's epochs (-p epochs N); default: the protocol's")
    p.add_argument("--data-root", help="-p data_root")
    p.add_argument("--model", help="-p model")
    p.add_argument("--pretrained", help="-p pretrained")
    p.add_argument("--shots", type=shots, help="-p shots")
    p.add_argument("--precision", choices=PRECISIONS, help="-p precision")
    p.add_argument("--device", help="-p device")


#: notebook parameters that are whole numbers: name -> (lowest allowed, fix), the ranges of train's options
#: (``-p shots 0`` is every training image, as ``train --shots 0``)
PARAMETER_RANGES = {"shots": (0, "must be an integer >= 0 (images per class; 0 = all training images, as "
                                  "train --shots 0)"),
                    "epochs": (1, "must be >= 1, a whole number (or None: each method's protocol default; the "
                                  "zero-shot rows need no epochs)")}
#: notebook parameters that are yes/no
PARAMETER_FLAGS = ("quick", "interactive")
_FLAG_WORDS = ("true", "false", "1", "0", "yes", "no")


def check_parameter_values(params: dict) -> dict:
    """``params`` (notebook parameters, as ``report -p`` gives them) with the numbers of :data:`PARAMETER_RANGES`
    and the flags of :data:`PARAMETER_FLAGS` checked as train's options are: a ValueError names the parameter and
    the fix. The other parameters are checked where they are resolved (:func:`dpclab.lab.notebook.resolve`)."""
    for key, (low, fix) in PARAMETER_RANGES.items():
        value = params.get(key)
        if value is None:
            continue
        text = str(value).strip()
        ok = not isinstance(value, (bool, float)) and text.lstrip("-").isdigit()
        if not ok or int(text) < low:
            raise ValueError(f"{key} {fix}; got {value!r}.")
    for key in PARAMETER_FLAGS:
        value = params.get(key)
        if value is not None and str(value).lower() not in _FLAG_WORDS:
            raise ValueError(f"{key} must be True or False; got {value!r}.")
    return params


def notebook_parameters(args: argparse.Namespace) -> dict:
    """The notebooks' parameters these options give (``report -p`` equivalents; ``-p`` wins over the options)."""
    params = {k: getattr(args, k) for k in _SOURCE_PARAMETERS if getattr(args, k, None) is not None}
    if args.datasets:
        params["dataset"] = ",".join(args.datasets)
    if args.seeds:
        params["seeds"] = list(args.seeds)
    if args.epochs is not None:
        params["epochs"] = args.epochs
    params.update({key: parse_value(value) for key, value in args.param or []})
    params["quick"] = bool(args.quick or params.get("quick"))
    check_parameter_names(params)
    return check_parameter_values(params)


__all__ = ["parse_value", "parse_options", "check_train", "positive_int", "nonneg_int", "positive_float", "shots",
           "seed", "epochs", "add_source_args", "source_from_args", "add_parameter_args", "notebook_parameters",
           "check_parameter_values", "PARAMETER_RANGES"]
