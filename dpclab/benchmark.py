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

import logging
import math
import time
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from .backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED, Backbone
from .diagnostics import linear_probe
from .evaluate import accuracy, format_mean_std, harmonic_mean, predict_logits, summarize
from .io import atomic_write_text
from .methods import resolve
from .pipeline import Experiment, RunConfig, cached_backbone, run

log = logging.getLogger(__name__)

#: the linear probe's row label: not a prompt method, the ceiling of the frozen features (dpclab.diagnostics)
PROBE = "linear-probe"


def _dpc_mode_rows() -> tuple[str, ...]:
    """One row per DPC mode besides the default one, labelled ``coop+dpc[<mode>]``."""
    from .methods.dpc import DPCConfig, MODES

    return tuple(f"coop+dpc[{m}]" for m in MODES if m != DPCConfig.mode)


#: the benchmark's rows: the frozen model, the feature ceiling, the tuned baseline, the two Base-New trade-off fixes
#: on top of it (DPC in its default mode, then every other mode)
DEFAULT_METHODS: tuple[str, ...] = ("zeroshot", PROBE, "coop", "coop+dpc", *_dpc_mode_rows(), "coop+dept")
DEFAULT_SEEDS: tuple[int, ...] = (1, 2, 3)
#: ``--quick``: one dataset, one seed, 2 epochs for every method (a smoke test of the whole grid, not a result)
QUICK_TRAIN: dict = {"epochs": 2}
QUICK_SEEDS: tuple[int, ...] = (1,)

#: name of the row that averages over datasets in :func:`summary_table`
AVERAGE = "average"

GRID_COLUMNS = ["dataset", "method", "seed", "base", "new", "hm", "train_acc", "epochs", "seconds", "reused",
                "run_dir"]
#: extra columns of DPC rows (see :func:`dpclab.diagnostics.dpc_diagnostics`)
DPC_COLUMNS = ["dist", "rel_dist", "loss_P", "loss_Pprime", "train_acc_P", "train_acc_Pprime", "fixed", "broken", "n_train",
               "base_at_0", "base_at_wb", "base_at_1"]


def row_method(label: str) -> tuple[str, dict]:
    """A row label -> (method name, method config): ``"coop+dpc[released]"`` -> ``("coop+dpc", {"mode": "released"})``;
    any other label is a method name as is (``PROBE`` is not a method and is handled by :func:`run_grid`)."""
    if label.endswith("]") and "[" in label:
        name, mode = label[:-1].split("[", 1)
        return name, {"mode": mode}
    return label, {}


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
             on_row: Callable[[dict], None] | None = None,
             on_result: Callable[[dict, object], None] | None = None,
             train_for: Callable[[str], tuple[dict, dict]] | None = None, precision: str = "fp32",
             spec: dict[str, tuple[str, dict]] | None = None) -> pd.DataFrame:
    """Run (or reuse) every ``dataset x method x seed`` and return one row per run (columns :data:`GRID_COLUMNS`).

    ``train``: TrainConfig overrides applied to *every* trained method (e.g. ``{"epochs": 2}`` for a smoke test);
    for two-step plug-ins (``coop+dpc``) they apply to both steps, so step 1 is the very run of the ``coop`` row.
    ``train_for``: instead of ``train``, per-method overrides: ``train_for(method) -> (train, base_train)``, the
    second for step 1 of a two-step plug-in (e.g. :meth:`dpclab.notebook.Setup.train_overrides`).
    ``method_cfg``: per-row config overrides, ``{"coop+dpc": {"omega_b": 0.5}}``. A row label is a method name, a
    DPC mode row ``"coop+dpc[released]"``, :data:`PROBE`, or a key of ``spec``: ``{label: (method, overrides)}``
    with RunConfig overrides ``method_cfg`` / ``base_method_cfg`` / ``train`` / ``base_train`` (what
    :func:`dpclab.paper_numbers.reproduction_runs` returns).
    ``backbone``: an already loaded :class:`~dpclab.backbones.Backbone` (tests pass a tiny one); by default
    ``model``/``pretrained`` are loaded once. ``on_row`` is called with each finished row (progress display),
    ``on_result`` with each trained or zero-shot row and its :class:`~dpclab.pipeline.RunResult` (analyses that need
    the model, e.g. :func:`dpclab.dpc_study.omega_sweep`).
    ``seconds`` is the wall time of the run (training + evaluation; near 0 when reused), ``reused`` says which.
    """
    if not datasets or not methods or not seeds:
        raise ValueError("run_grid needs at least one dataset, one method and one seed.")
    for name in methods:
        if name != PROBE:
            resolve(_resolve_row(name, spec)[0])  # unknown names fail before any training
    unknown = set(method_cfg or {}) - set(methods)
    if unknown:
        raise ValueError(f"method_cfg names method(s) {sorted(unknown)} that are not in methods={list(methods)}.")
    if train and train_for is not None:
        raise ValueError("run_grid takes train or train_for, not both.")
    train = dict(train or {})
    if train_for is None:
        train_for = lambda name: (train, train)  # noqa: E731 - both steps of a two-step plug-in alike
    backbone = backbone or cached_backbone(model, str(pretrained), device, precision)
    rows = []
    for seed in seeds:  # seed-major: an interrupted grid still covers every dataset for the first seeds
        for dataset in datasets:
            exp = None  # one Experiment (few-shot split, feature cache) per dataset x seed, shared by the methods
            for name in methods:
                method, over = _resolve_row(name, spec)
                resolved = resolve("zeroshot" if name == PROBE else method)  # once per run, passed to run()
                two_step = resolved.two_step
                method_train, step1_train = train_for(method)
                cfg = RunConfig(method=resolved.name, dataset=dataset,
                                data_root=data_root, model=model, pretrained=str(pretrained), shots=shots, seed=seed,
                                device=device, precision=precision, cache_dir=cache_dir, runs_dir=runs_dir,
                                results=results, train={**method_train, **over.get("train", {})},
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
                    rows.append(row)
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
                rows.append(row)
    extra = [c for c in DPC_COLUMNS if any(c in r for r in rows)]
    return pd.DataFrame(rows, columns=GRID_COLUMNS + extra)


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
PROBE_CEILING = 90.0  # 16-shot linear probe on frozen features (issue 11): the features can separate the classes


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
    probe_b = get(PROBE, "base")
    coop_b, coop_n, coop_h, coop_t = (get("coop", c) for c in ("base", "new", "hm", "train_acc"))
    dpc_b, dpc_n = get("coop+dpc", "base"), get("coop+dpc", "new")
    dept_h = get("coop+dept", "hm")
    lo, hi = ZS_NEW_RANGE
    # (target, requirement, measured, passed, whether measured is a difference between two methods)
    checks = [
        ("zero-shot new in range", f"{lo:g} <= zero-shot new <= {hi:g}", zs_n, lo <= zs_n <= hi, False),
        *([("features allow memorisation", f"linear probe base >= {PROBE_CEILING:g}", probe_b,
             probe_b >= PROBE_CEILING, False)] if PROBE in rows.index else []),
        ("CoOp memorises its shots", f"CoOp train accuracy >= {MEMORISATION:g}", coop_t, coop_t >= MEMORISATION,
         False),
        ("CoOp gains on base", f"CoOp base - zero-shot base >= {COOP_BASE_GAIN:g}", coop_b - zs_b,
         coop_b - zs_b >= COOP_BASE_GAIN, True),
        ("CoOp loses on new", "CoOp new - zero-shot new < 0", coop_n - zs_n, coop_n - zs_n < 0, True),
        *_per_dataset_new_loss(summary, dataset),
        ("DPC lifts base", f"CoOp+DPC base - CoOp base >= {DPC_BASE_GAIN:g}", dpc_b - coop_b,
         dpc_b - coop_b >= DPC_BASE_GAIN, True),
        *[(f"DPC [{m}] lifts base", f"CoOp+DPC[{m}] base - CoOp base >= {DPC_BASE_GAIN:g}",
           get(f"coop+dpc[{m}]", "base") - coop_b, get(f"coop+dpc[{m}]", "base") - coop_b >= DPC_BASE_GAIN, True)
          for m in _modes_in(rows.index)],
        ("DPC keeps new", f"abs(CoOp+DPC new - CoOp new) <= {DPC_NEW_TOLERANCE:g}", dpc_n - coop_n,
         abs(dpc_n - coop_n) <= DPC_NEW_TOLERANCE, True),
        ("DePT improves on CoOp", "CoOp+DePT HM - CoOp HM > 0", dept_h - coop_h, dept_h - coop_h > 0, True),
    ]
    out = [{"dataset": dataset, "target": name, "requirement": req, "measured": value, "difference": diff,
            "passed": None if math.isnan(value) else bool(ok)} for name, req, value, ok, diff in checks]
    return pd.DataFrame(out)


def _modes_in(labels) -> list[str]:
    return [row_method(label)[1]["mode"] for label in labels if label.startswith("coop+dpc[")]


def _per_dataset_new_loss(summary: pd.DataFrame, dataset: str) -> list[tuple]:
    """On the average row set only: on how many datasets CoOp's new-class accuracy falls below zero-shot's
    (required: all but at most one)."""
    if dataset != AVERAGE:
        return []
    per = summary[summary["dataset"] != AVERAGE].pivot_table(index="dataset", columns="method", values="new")
    if not {"coop", "zeroshot"} <= set(per.columns) or len(per) < 2:
        return []
    losses = int((per["coop"] < per["zeroshot"]).sum())
    need = len(per) - 1
    return [("CoOp loses on new per dataset", f"CoOp new < zero-shot new on >= {need} of {len(per)} datasets",
             float(losses), losses >= need, False)]


# ------------------------------------------------------------------------------------------------------ the writers
def markdown_table(summary: pd.DataFrame) -> str:
    """The summary as a markdown table: base / new / HM / train accuracy, ``mean ± std`` over seeds."""
    lines = ["| dataset | method | base | new | HM | train (shots) | runs |", "|---|---|---|---|---|---|---|"]
    for r in summary.itertuples(index=False):
        name = f"**{r.dataset}**" if r.dataset == AVERAGE else r.dataset
        lines.append(f"| {name} | {r.method} | {format_mean_std(r.base, r.base_std)} | "
                     f"{format_mean_std(r.new, r.new_std)} | {format_mean_std(r.hm)} | "
                     f"{format_mean_std(r.train_acc, r.train_acc_std)} | {int(r.runs)} |")
    return "\n".join(lines) + "\n"


def markdown_targets(targets: pd.DataFrame) -> str:
    lines = ["| target | requirement | measured | result |", "|---|---|---|---|"]
    for r in targets.itertuples(index=False):
        verdict = "n/a" if r.passed is None else ("pass" if r.passed else "FAIL")
        measured = "–" if math.isnan(r.measured) else f"{r.measured:+.2f}" if r.difference else f"{r.measured:.2f}"
        lines.append(f"| {r.target} | {r.requirement} | {measured} | {verdict} |")
    return "\n".join(lines) + "\n"


#: the per-dataset table's column for each target of :func:`check_targets` (DPC mode rows are named from the mode)
_PER_DATASET_HEADERS = {"zero-shot new in range": "zero-shot new", "features allow memorisation": "probe base",
                        "CoOp memorises its shots": "CoOp train acc", "CoOp gains on base": "CoOp base gain",
                        "CoOp loses on new": "CoOp new change", "DPC lifts base": "coop+dpc base gain",
                        "DPC keeps new": "DPC new change", "DePT improves on CoOp": "DePT HM gain"}


def _per_dataset_header(target: str) -> str:
    if target.startswith("DPC [") and target.endswith("] lifts base"):
        return f"coop+dpc[{target[5:-len('] lifts base')]}] base gain"
    return _PER_DATASET_HEADERS[target]


def markdown_per_dataset(summary: pd.DataFrame) -> str:
    """:func:`check_targets` on every dataset (and on average), one row each: the measured value of each target,
    ✗ where it misses, "–" where a method is missing. (The count of datasets where CoOp loses new is a property of
    the whole table, not of a dataset: it is in the targets table only.)"""
    per = {d: check_targets(summary, d).set_index("target") for d in summary["dataset"].unique()}
    targets = [t for t in dict.fromkeys(t for checks in per.values() for t in checks.index)
               if t in _PER_DATASET_HEADERS or t.startswith("DPC [")]
    head = ["dataset", *[_per_dataset_header(t) for t in targets]]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for dataset, checks in per.items():
        cells = []
        for t in targets:
            if t not in checks.index or checks.loc[t, "passed"] is None:
                cells.append("–")
                continue
            value, signed = checks.loc[t, "measured"], checks.loc[t, "difference"]
            cells.append((f"{value:+.1f}" if signed else f"{value:.1f}") + ("" if checks.loc[t, "passed"] else " ✗"))
        lines.append(f"| {dataset} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def dpc_summary(runs: pd.DataFrame) -> pd.DataFrame:
    """DPC's diagnostics (:data:`DPC_COLUMNS`) averaged over seeds, per dataset x DPC row, plus the average."""
    cols = [c for c in DPC_COLUMNS if c in runs.columns]
    dpc = runs[runs["method"].astype(str).str.startswith("coop+dpc")]
    if dpc.empty or not cols:
        return pd.DataFrame(columns=["dataset", "method", *cols])
    per = dpc.groupby(["dataset", "method"], sort=False)[cols].mean().reset_index()
    avg = dpc.groupby("method", sort=False)[cols].mean().reset_index().assign(dataset=AVERAGE)
    return pd.concat([per, avg[per.columns]], ignore_index=True)


def markdown_dpc(table: pd.DataFrame) -> str:
    """:func:`dpc_summary` as markdown: loss and accuracy on the shots with P and P', ‖P'−P‖, images fixed/broken."""
    lines = ["| dataset | DPC row | train loss P → P' | train acc P → P' | fixed / broken (of shots) | ‖P'−P‖ (rel.) "
             "| base test ω=0 / ω_b / 1 |", "|---|---|---|---|---|---|---|"]
    for r in table.to_dict("records"):
        lines.append(f"| {r['dataset']} | {r['method']} | {r['loss_P']:.3f} → {r['loss_Pprime']:.3f} | "
                     f"{r['train_acc_P']:.1f} → {r['train_acc_Pprime']:.1f} | {r['fixed']:.1f} / {r['broken']:.1f}"
                     f" ({r['n_train']:.0f}) | {r['dist']:.2f} ({r['rel_dist']:.2f}) | {r['base_at_0']:.1f} / "
                     f"{r['base_at_wb']:.1f} / {r['base_at_1']:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(out: str | Path, name: str, runs: pd.DataFrame, summary: pd.DataFrame,
                 targets: pd.DataFrame | None = None, header: str = "") -> dict[str, Path]:
    """Write ``<out>/<name>.csv`` (summary), ``<name>_runs.csv`` (every run), ``<name>_targets.csv`` and
    ``<name>.md`` (``header`` + summary + targets), each atomically. Returns the written paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"summary": out / f"{name}.csv", "runs": out / f"{name}_runs.csv", "markdown": out / f"{name}.md"}
    atomic_write_text(paths["summary"], summary.to_csv(index=False))
    atomic_write_text(paths["runs"], runs.to_csv(index=False))
    md = (header.rstrip() + "\n\n" if header else "") + markdown_table(summary)
    if targets is not None:
        paths["targets"] = out / f"{name}_targets.csv"
        atomic_write_text(paths["targets"], targets.to_csv(index=False))
        md += "\nTargets (on the average over datasets; informational):\n\n" + markdown_targets(targets)
    md += "\nPer dataset (✗ = target missed):\n\n" + markdown_per_dataset(summary)
    dpc = dpc_summary(runs)
    if not dpc.empty:
        paths["dpc"] = out / f"{name}_dpc.csv"
        atomic_write_text(paths["dpc"], dpc.to_csv(index=False))
        md += "\nDPC step 2, diagnostics (mean over seeds):\n\n" + markdown_dpc(dpc)
    atomic_write_text(paths["markdown"], md)
    return paths


__all__ = ["run_grid", "summary_table", "check_targets", "write_report", "markdown_table", "markdown_targets",
           "train_accuracy", "DEFAULT_METHODS", "DEFAULT_SEEDS", "AVERAGE"]
