"""The embedded-world benchmark: zero-shot, CoOp, CoOp+DPC and CoOp+DePT over datasets x seeds, as one table.

Three pure steps, each usable on its own (notebook 06 calls the first two):

>>> from dpclab.benchmark import run_grid, summary_table, check_targets
>>> runs = run_grid(["world_tint", "world_sketch"], seeds=[1, 2, 3])   # one row per dataset x method x seed
>>> table = summary_table(runs)        # mean ± std over seeds, plus the average over datasets
>>> check_targets(table)               # the project's expectations, measured (pass/fail is informational)

The grid runs seed by seed (every dataset for seed 1, then seed 2, ...). Every run goes through
:func:`dpclab.pipeline.run`, so a finished run is reused from its run directory (re-running the benchmark only
computes what is missing; an interrupted one resumes) and each new result is appended to the results CSV. CoOp+DPC's
step 1 *is* the CoOp run of the same dataset and seed (same run directory), so DPC is measured on top of exactly
the CoOp model reported in the CoOp row.

Besides base / new / HM on the test images, each row holds ``train_acc``: the accuracy of the trained model on its
own few-shot training images (base classes) seen with the *test* transform. Prompt tuning with 16 shots should come
close to memorising them; a low value means the method under-fits and the Base-New trade-off cannot show.

Protocol (docs/protocol.md#metrics): fixed base/new split per dataset (first half of the sorted labels = base), seeds
choose the few-shot training images and the random parts of training; accuracies are averaged over seeds, HM is taken
of the averages; across datasets base and new are averaged first, then HM. Nothing here looks at test accuracy to
choose a setting: every method runs with its protocol defaults (docs/protocol.md#hyperparameters) unless the caller
overrides them for all methods alike.
"""

from __future__ import annotations

import io
import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED, Backbone
from .io import atomic_write_text
from .evaluate import accuracy, format_mean_std, harmonic_mean, predict_logits, summarize
from .methods import PLUGINS, parse_method
from .pipeline import Experiment, RunConfig, cached_backbone, run

log = logging.getLogger(__name__)

#: the benchmark's methods: the frozen model, the tuned baseline and the two Base-New trade-off fixes on top of it
DEFAULT_METHODS: tuple[str, ...] = ("zeroshot", "coop", "coop+dpc", "coop+dept")
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
#: ``--quick``: one dataset, one seed, 2 epochs for every method (a smoke test of the whole grid, not a result)
QUICK_TRAIN: dict = {"epochs": 2}
QUICK_SEEDS: tuple[int, ...] = (1,)

#: name of the row that averages over datasets in :func:`summary_table`
AVERAGE = "average"

GRID_COLUMNS = ["dataset", "method", "seed", "base", "new", "hm", "train_acc", "epochs", "seconds", "reused",
                "run_dir"]


# --------------------------------------------------------------------------------------------------------- the grid
def train_accuracy(result) -> float:
    """Top-1 accuracy (%) of a finished run's method on its own few-shot training images, test transform.

    ``result`` is a :class:`dpclab.pipeline.RunResult`; the images are the training split of the run (base classes
    in the base-to-new protocol), deterministic (center crop, no augmentation) so the number is reproducible."""
    exp: Experiment = result.experiment
    method = result.method
    examples = exp.examples(exp.train_split.train, method.input_kind, train=False)
    return accuracy(predict_logits(method, examples, exp.train_task), examples.labels)


def run_grid(datasets: Sequence[str], methods: Sequence[str] = DEFAULT_METHODS,
             seeds: Sequence[int] = DEFAULT_SEEDS, *, data_root: str = "data/world", model: str = EMBEDDED_MODEL,
             pretrained: str = EMBEDDED_PRETRAINED, shots: int = 16, train: dict | None = None,
             method_cfg: dict[str, dict] | None = None, runs_dir: str = "runs", cache_dir: str | None = "data/cache",
             results: str | None = "runs/results.csv", device: str = "auto", if_exists: str = "reuse",
             backbone: Backbone | None = None, progress: bool = False,
             on_row: Callable[[dict], None] | None = None) -> pd.DataFrame:
    """Run (or reuse) every ``dataset x method x seed`` and return one row per run (columns :data:`GRID_COLUMNS`).

    ``train``: TrainConfig overrides applied to *every* trained method (e.g. ``{"epochs": 2}`` for a smoke test);
    for two-step plug-ins (``coop+dpc``) they apply to both steps, so step 1 is the very run of the ``coop`` row.
    ``method_cfg``: per-method config overrides, ``{"coop+dpc": {"omega_b": 0.5}}``.
    ``backbone``: an already loaded :class:`~dpclab.backbones.Backbone` (tests pass a tiny one); by default
    ``model``/``pretrained`` are loaded once. ``on_row`` is called with each finished row (progress display).
    ``seconds`` is the wall time of the run (training + evaluation; near 0 when reused), ``reused`` says which.
    """
    if not datasets or not methods or not seeds:
        raise ValueError("run_grid needs at least one dataset, one method and one seed.")
    for name in methods:
        parse_method(name)  # unknown names fail before any training
    unknown = set(method_cfg or {}) - set(methods)
    if unknown:
        raise ValueError(f"method_cfg names method(s) {sorted(unknown)} that are not in methods={list(methods)}.")
    train = dict(train or {})
    backbone = backbone or cached_backbone(model, str(pretrained), device)
    rows = []
    for seed in seeds:  # seed-major: an interrupted grid still covers every dataset for the first seeds
        for dataset in datasets:
            exp = None  # one Experiment (few-shot split, feature cache) per dataset x seed, shared by the methods
            for name in methods:
                _, plugin = parse_method(name)
                two_step = plugin is not None and PLUGINS[plugin].two_step
                cfg = RunConfig(method=name, dataset=dataset, data_root=data_root, model=model,
                                pretrained=str(pretrained), shots=shots, seed=seed, device=device,
                                cache_dir=cache_dir, runs_dir=runs_dir, results=results, train=train,
                                method_cfg=dict((method_cfg or {}).get(name, {})),
                                base_train=train if two_step else {}, if_exists=if_exists, progress=progress)
                exp = exp or Experiment.prepare(cfg, backbone)
                t0 = time.time()
                res = run(cfg, experiment=exp)
                seconds = time.time() - t0
                row = {"dataset": dataset, "method": name, "seed": seed, **res.metrics,
                       "train_acc": train_accuracy(res), "epochs": _epochs(res), "seconds": seconds,
                       "reused": res.reused, "run_dir": str(res.run_dir or "")}
                log.info("%s %s seed %d: base %.2f new %.2f HM %.2f train %.2f (%.1f s)", dataset, name, seed,
                         row["base"], row["new"], row["hm"], row["train_acc"], seconds)
                if on_row is not None:
                    on_row(row)
                rows.append(row)
    return pd.DataFrame(rows, columns=GRID_COLUMNS)


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
        raise ValueError(f"summary_table needs the columns {sorted(missing)} (the output of run_grid).")
    if runs.empty:
        raise ValueError("summary_table got an empty runs table; run run_grid first.")
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


# ------------------------------------------------------------------------------------------------------ the targets
#: thresholds of the project's expectations (issue 3), fixed before any result was seen
ZS_NEW_RANGE = (40.0, 80.0)  # zero-shot new-class accuracy: clearly above chance, below saturation
MEMORISATION = 90.0  # CoOp accuracy on its own training shots ("near-memorisation")
COOP_BASE_GAIN = 5.0  # CoOp base >= zero-shot base + 5
DPC_BASE_GAIN = 1.0  # CoOp+DPC base >= CoOp base + 1
DPC_NEW_TOLERANCE = 0.1  # CoOp+DPC new within 0.1 points of CoOp new (omega_n = 0 makes them equal)


def check_targets(summary: pd.DataFrame, dataset: str = AVERAGE) -> pd.DataFrame:
    """Measure the project's targets on one row set of :func:`summary_table` (default: the average over datasets).

    Returns one row per target: target, requirement, measured, difference (whether ``measured`` is a difference
    between two methods), passed (True/False, or None when a needed method is missing from the table). Informational only: never use it to choose settings (that would tune the
    evaluation to the targets)."""
    rows = summary[summary["dataset"] == dataset].set_index("method")
    if rows.empty:
        raise ValueError(f"no rows with dataset == {dataset!r} in the summary; pass one of "
                         f"{sorted(summary['dataset'].unique())}.")

    def get(method: str, col: str) -> float:
        return float(rows.loc[method, col]) if method in rows.index else math.nan

    zs_b, zs_n = get("zeroshot", "base"), get("zeroshot", "new")
    coop_b, coop_n, coop_h, coop_t = (get("coop", c) for c in ("base", "new", "hm", "train_acc"))
    dpc_b, dpc_n = get("coop+dpc", "base"), get("coop+dpc", "new")
    dept_h = get("coop+dept", "hm")
    lo, hi = ZS_NEW_RANGE
    # (target, requirement, measured, passed, whether measured is a difference between two methods)
    checks = [
        ("zero-shot new in range", f"{lo:g} <= zero-shot new <= {hi:g}", zs_n, lo <= zs_n <= hi, False),
        ("CoOp memorises its shots", f"CoOp train accuracy >= {MEMORISATION:g}", coop_t, coop_t >= MEMORISATION,
         False),
        ("CoOp gains on base", f"CoOp base - zero-shot base >= {COOP_BASE_GAIN:g}", coop_b - zs_b,
         coop_b - zs_b >= COOP_BASE_GAIN, True),
        ("CoOp loses on new", "CoOp new - zero-shot new < 0", coop_n - zs_n, coop_n - zs_n < 0, True),
        ("DPC lifts base", f"CoOp+DPC base - CoOp base >= {DPC_BASE_GAIN:g}", dpc_b - coop_b,
         dpc_b - coop_b >= DPC_BASE_GAIN, True),
        ("DPC keeps new", f"abs(CoOp+DPC new - CoOp new) <= {DPC_NEW_TOLERANCE:g}", dpc_n - coop_n,
         abs(dpc_n - coop_n) <= DPC_NEW_TOLERANCE, True),
        ("DePT improves on CoOp", "CoOp+DePT HM - CoOp HM > 0", dept_h - coop_h, dept_h - coop_h > 0, True),
    ]
    out = [{"dataset": dataset, "target": name, "requirement": req, "measured": value, "difference": diff,
            "passed": None if math.isnan(value) else bool(ok)} for name, req, value, ok, diff in checks]
    return pd.DataFrame(out)


# ------------------------------------------------------------------------------------------------------ the writers
def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: base / new / HM / train accuracy, ``mean ± std`` over seeds."""
    lines = ["| dataset | method | base | new | HM | train (shots) | runs |", "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        name = f"**{r.dataset}**" if r.dataset == AVERAGE else r.dataset
        lines.append(f"| {name} | {r.method} | {format_mean_std(r.base, r.base_std)} | {format_mean_std(r.new, r.new_std)} | {r.hm:.2f} | "
                     f"{format_mean_std(r.train_acc, r.train_acc_std)} | {int(r.runs)} |")
    return "\n".join(lines) + "\n"


def markdown_targets(targets: pd.DataFrame) -> str:
    lines = ["| target | requirement | measured | result |", "|---|---|---|---|"]
    for r in targets.itertuples(index=False):
        verdict = "n/a" if r.passed is None else ("pass" if r.passed else "FAIL")
        measured = "–" if math.isnan(r.measured) else f"{r.measured:+.2f}" if r.difference else f"{r.measured:.2f}"
        lines.append(f"| {r.target} | {r.requirement} | {measured} | {verdict} |")
    return "\n".join(lines) + "\n"


def _csv_text(df: pd.DataFrame) -> str:
    buf = io.StringIO()
    df.to_csv(buf, index=False)
    return buf.getvalue()


def write_report(out: str | Path, name: str, runs: pd.DataFrame, summary: pd.DataFrame,
                 targets: pd.DataFrame | None = None, header: str = "") -> dict[str, Path]:
    """Write ``<out>/<name>.csv`` (summary), ``<name>_runs.csv`` (every run), ``<name>_targets.csv`` and
    ``<name>.md`` (``header`` + summary + targets), each atomically. Returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / f"{name}.csv", "runs": out / f"{name}_runs.csv", "markdown": out / f"{name}.md"}
    atomic_write_text(paths["summary"], _csv_text(summary))
    atomic_write_text(paths["runs"], _csv_text(runs))
    md = (header.rstrip() + "\n\n" if header else "") + markdown_table(summary)
    if targets is not None:
        paths["targets"] = out / f"{name}_targets.csv"
        atomic_write_text(paths["targets"], _csv_text(targets))
        md += "\nTargets (on the average over datasets; informational):\n\n" + markdown_targets(targets)
    atomic_write_text(paths["markdown"], md)
    return paths


__all__ = ["run_grid", "summary_table", "check_targets", "write_report", "markdown_table", "markdown_targets",
           "train_accuracy", "DEFAULT_METHODS", "DEFAULT_SEEDS", "AVERAGE"]
