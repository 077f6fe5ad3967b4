"""The run matrix: every ``dataset x method x seed`` through :func:`dpclab.pipeline.run`, one row per run, and its
summary (mean ± std over seeds, HM of the means, the average over datasets). The core that the benchmark
(:mod:`dpclab.lab.benchmark`), the DPC study (:mod:`dpclab.lab.dpc_study`) and notebook 06 share; the targets measured on it
are in :mod:`dpclab.lab.targets`.

The matrix runs seed by seed (every dataset for seed 1, then seed 2, ...). A finished run is reused from its run
directory (re-running only computes what is missing; an interrupted one resumes). CoOp+DPC's step 1 *is* the CoOp
run of the same dataset and seed (same run directory), so DPC is measured on top of exactly the CoOp model reported
in the CoOp row. Each row also holds ``train_acc``: the accuracy of the trained model on its own few-shot training
images with the *test* transform (the memorisation check).
"""

from __future__ import annotations

import logging
import math
import time
from typing import Callable, Sequence

import pandas as pd

from dpclab.backbones import Backbone
from dpclab.diagnostics import linear_probe
from dpclab.evaluate import accuracy, harmonic_mean, predict_logits, summarize
from dpclab.lab.targets import AVERAGE, PROBE
from dpclab.methods.dpc import MODES, DPCConfig
from dpclab.methods.table import resolve
from dpclab.pipeline import run
from dpclab.experiment import Experiment, cached_backbone
from dpclab.runconfig import RunConfig
from dpclab.source import Source

log = logging.getLogger(__name__)


def _dpc_mode_rows() -> tuple[str, ...]:
    """One row per DPC mode besides the default one, labelled ``coop+dpc[<mode>]``."""
    return tuple(f"coop+dpc[{m}]" for m in MODES if m != DPCConfig.mode)


#: the benchmark's rows: the frozen model, the feature ceiling, the tuned baseline, the two Base-New trade-off fixes
#: on top of it (DPC in its default mode, then every other mode)
DEFAULT_METHODS: tuple[str, ...] = ("zeroshot", PROBE, "coop", "coop+dpc", *_dpc_mode_rows(), "coop+dept")
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
#: ``--quick``: one dataset, one seed, 2 epochs for every method (a smoke test of the whole grid, not a result)
QUICK_TRAIN: dict = {"epochs": 2}
QUICK_SEEDS: tuple[int, ...] = (1,)

GRID_COLUMNS = ["dataset", "method", "seed", "base", "new", "hm", "train_acc", "epochs", "seconds", "reused",
                "run_dir"]
#: extra columns of DPC rows (see :func:`dpclab.diagnostics.dpc_diagnostics`)
DPC_COLUMNS = ["dist", "rel_dist", "loss_P", "loss_Pprime", "train_acc_P", "train_acc_Pprime", "fixed", "broken", "n_train",
               "base_at_0", "base_at_wb", "base_at_1"]


def row_method(label: str) -> tuple[str, dict]:
    """A row label -> (method name, method config): ``"coop+dpc[released]"`` -> ``("coop+dpc", {"mode": "released"})``;
    any other label is a method name as is (``PROBE`` is not a method and is handled by :func:`run_matrix`)."""
    if label.endswith("]") and "[" in label:
        name, mode = label[:-1].split("[", 1)
        return name, {"mode": mode}
    return label, {}


# --------------------------------------------------------------------------------------------------- the run matrix
def train_accuracy(result) -> float:
    """Top-1 accuracy (%) of a finished run's method on its own few-shot training images, test transform.

    ``result`` is a :class:`dpclab.pipeline.RunResult`; the images are the training split of the run (base classes
    in the base-to-new protocol), deterministic (center crop, no augmentation) so the number is reproducible."""
    exp: Experiment = result.experiment
    method = result.method
    examples = exp.examples(exp.train_split.train, method.input_kind, train=False)
    return accuracy(predict_logits(method, examples, exp.train_task), examples.labels)


def run_matrix(source: Source, datasets: Sequence[str], rows: Sequence[str] = DEFAULT_METHODS,
               seeds: Sequence[int] = DEFAULT_SEEDS, *, train: dict | None = None,
               method_cfg: dict[str, dict] | None = None, if_exists: str = "reuse", backbone: Backbone | None = None,
               progress: bool = False, on_row: Callable[[dict], None] | None = None,
               on_result: Callable[[dict, object], None] | None = None,
               train_for: Callable[[str], tuple[dict, dict]] | None = None,
               spec: dict[str, tuple[str, dict]] | None = None) -> pd.DataFrame:
    """Run (or reuse) every ``dataset x row x seed`` from ``source`` (a :class:`~dpclab.source.Source`: model, weights,
    data root, shots, precision, device, where things go) and return one row per run (columns :data:`GRID_COLUMNS`).

    ``train``: TrainConfig overrides applied to *every* trained method (e.g. ``{"epochs": 2}`` for a smoke test);
    for two-step plug-ins (``coop+dpc``) they apply to both steps, so step 1 is the very run of the ``coop`` row.
    ``train_for``: instead of ``train``, per-method overrides: ``train_for(method) -> (train, base_train)``, the
    second for step 1 of a two-step plug-in (e.g. :meth:`dpclab.lab.notebook.Setup.train_overrides`).
    ``method_cfg``: per-row config overrides, ``{"coop+dpc": {"omega_b": 0.5}}``. A row label is a method name, a
    DPC mode row ``"coop+dpc[released]"``, :data:`PROBE`, or a key of ``spec``: ``{label: (method, overrides)}``
    with RunConfig overrides ``method_cfg`` / ``base_method_cfg`` / ``train`` / ``base_train`` (what
    :func:`dpclab.lab.paper_numbers.reproduction_runs` returns).
    ``backbone``: an already loaded :class:`~dpclab.backbones.Backbone` (tests pass a tiny one); by default the
    source's model is loaded once. ``on_row`` is called with each finished row (progress display),
    ``on_result`` with each trained or zero-shot row and its :class:`~dpclab.pipeline.RunResult` (analyses that need
    the model, e.g. :func:`dpclab.lab.dpc_study.omega_sweep`).
    ``seconds`` is the wall time of the run (training + evaluation; near 0 when reused), ``reused`` says which.
    """
    if not datasets or not rows or not seeds:
        raise ValueError("run_matrix needs at least one dataset, one row (method) and one seed.")
    methods = rows
    for name in methods:
        if name != PROBE:
            resolve(_resolve_row(name, spec)[0])  # unknown names fail before any training
    unknown = set(method_cfg or {}) - set(methods)
    if unknown:
        raise ValueError(f"method_cfg names method(s) {sorted(unknown)} that are not in methods={list(methods)}.")
    if train and train_for is not None:
        raise ValueError("run_matrix takes train or train_for, not both.")
    train = dict(train or {})
    if train_for is None:
        train_for = lambda name: (train, train)  # noqa: E731 - both steps of a two-step plug-in alike
    backbone = backbone or cached_backbone(source.model, source.pretrained, source.device, source.precision)
    out = []
    for seed in seeds:  # seed-major: an interrupted grid still covers every dataset for the first seeds
        for dataset in datasets:
            exp = None  # one Experiment (few-shot split, feature cache) per dataset x seed, shared by the methods
            for name in methods:
                method, over = _resolve_row(name, spec)
                resolved = resolve("zeroshot" if name == PROBE else method)  # once per run, passed to run()
                two_step = resolved.two_step
                method_train, step1_train = train_for(method)
                cfg = RunConfig(method=resolved.name, dataset=dataset, seed=seed, source=source,
                                train={**method_train, **over.get("train", {})},
                                method_cfg={**over.get("method_cfg", {}), **(method_cfg or {}).get(name, {})},
                                base_method_cfg=dict(over.get("base_method_cfg", {})),
                                base_train={**step1_train, **over.get("base_train", {})} if two_step else {},
                                if_exists=if_exists, progress=progress)
                exp = exp or Experiment.prepare(cfg, backbone)
                t0 = time.time()
                if name == PROBE:
                    probe = linear_probe(exp)
                    row = {"dataset": dataset, "method": name, "seed": seed, "base": probe["base"],
                           "new": math.nan, "hm": math.nan, "train_acc": probe["train_acc"], "epochs": 0,
                           "seconds": time.time() - t0, "reused": False, "run_dir": ""}
                    out.append(row)
                    if on_row is not None:
                        on_row(row)
                    continue
                res = run(cfg, experiment=exp, spec=resolved)
                seconds = time.time() - t0
                row = {"dataset": dataset, "method": name, "seed": seed, **res.metrics,
                       "train_acc": train_accuracy(res), "epochs": _epochs(res), "seconds": seconds,
                       "reused": res.reused, "run_dir": str(res.run_dir or "")}
                row.update(res.method.diagnostics(exp))  # the method's own (DPC: what step 2 changed)
                log.info("%s %s seed %d: base %.2f new %.2f HM %.2f train %.2f (%.1f s)", dataset, name, seed,
                         row["base"], row["new"], row["hm"], row["train_acc"], seconds)
                if on_row is not None:
                    on_row(row)
                if on_result is not None:
                    on_result(row, res)
                out.append(row)
    extra = [c for c in DPC_COLUMNS if any(c in r for r in out)]
    return pd.DataFrame(out, columns=GRID_COLUMNS + extra)


def _resolve_row(label: str, spec: dict | None) -> tuple[str, dict]:
    """A row label -> (method name, RunConfig overrides)."""
    if spec and label in spec:
        method, overrides = spec[label]
        return method, dict(overrides)
    method, cfg = row_method(label)
    return method, {"method_cfg": cfg} if cfg else {}


def _epochs(result) -> int:
    """Epochs the run trained for (0 for zero-shot), from the run's history when it has one."""
    if result.run_dir is None:
        return 0
    return len(result.history)


# ------------------------------------------------------------------------------------------------------ the summary
def summary_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean ± std over seeds per dataset x method, then one ``dataset == "average"`` row per method.

    Columns: dataset, method, base, base_std, new, new_std, hm, train_acc, train_acc_std, runs.
    ``std`` is the sample standard deviation over seeds (ddof=1; NaN for a single seed). ``hm`` is the harmonic
    mean of the *mean* base and new (docs/protocol.md#metrics), not the mean of per-seed HMs.

    The average row averages base, new and train_acc over datasets (each dataset weighs the same), then takes
    the HM of those averages. Its std is the spread over seeds of the per-seed dataset averages, computed over
    the seeds every dataset has (NaN when fewer than two such seeds).
    """
    missing = {"dataset", "method", "seed", "base", "new"} - set(runs.columns)
    if missing:
        raise ValueError(f"summary_table needs the columns {sorted(missing)} (the output of run_matrix).")
    if runs.empty:
        raise ValueError("summary_table got an empty runs table; run run_matrix first.")
    runs = runs.copy()
    if "train_acc" not in runs.columns:
        runs["train_acc"] = math.nan
    per = summarize(runs, by=("dataset", "method"), metrics=("base", "new", "train_acc"))
    average = [_average_row(runs, per, method) for method in per["method"].unique()]
    out = pd.concat([per, pd.DataFrame(average)], ignore_index=True)
    return out[["dataset", "method", "base", "base_std", "new", "new_std", "hm", "train_acc", "train_acc_std",
                "runs"]]


def _average_row(runs: pd.DataFrame, per: pd.DataFrame, method: str) -> dict:
    mine = per[per["method"] == method]
    row = {"dataset": AVERAGE, "method": method, "base": mine["base"].mean(), "new": mine["new"].mean(),
           "train_acc": mine["train_acc"].mean(), "runs": int(mine["runs"].sum())}
    row["hm"] = harmonic_mean(row["base"], row["new"])
    # per-seed averages over datasets, on the seeds that every dataset of this method has
    r = runs[runs["method"] == method]
    n_datasets = r["dataset"].nunique()
    complete = r.groupby("seed")["dataset"].nunique()
    complete = complete[complete == n_datasets].index
    per_seed = r[r["seed"].isin(complete)].groupby("seed")[["base", "new", "train_acc"]].mean()
    for col in ("base", "new", "train_acc"):
        row[f"{col}_std"] = per_seed[col].std() if len(per_seed) >= 2 else math.nan
    return row


__all__ = ["run_matrix", "summary_table", "train_accuracy", "row_method", "DEFAULT_METHODS", "DEFAULT_SEEDS",
           "QUICK_TRAIN", "QUICK_SEEDS", "GRID_COLUMNS", "DPC_COLUMNS", "AVERAGE", "PROBE"]
