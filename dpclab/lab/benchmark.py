"""The embedded-world benchmark: zero-shot, CoOp, CoOp+DPC and CoOp+DePT over datasets x seeds, as one table.

The benchmark tool: the run matrix and its summary are :mod:`dpclab.lab.matrix`, the targets
:mod:`dpclab.lab.targets`; this module adds the writers and the report:

>>> from dpclab.lab.matrix import run_matrix, summary_table
>>> from dpclab.lab.targets import check_targets, paired_gains
>>> runs = run_matrix(Source(), ["world_tint", "world_sketch"], seeds=[1, 2, 3])   # one row per dataset x row x seed
>>> table = summary_table(runs)        # mean ± std over seeds, plus the average over datasets
>>> check_targets(table)               # the project's expectations, measured (pass/fail is informational)
>>> paired_gains(runs, "coop+dpc[released]")   # DPC - CoOp per seed, mean and paired 95 % interval

The run matrix runs seed by seed (every dataset for seed 1, then seed 2, ...). Every run goes through
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

from pathlib import Path

import pandas as pd

from dpclab.evaluate import format_mean_std
from dpclab.io import atomic_write_text
from dpclab.lab.matrix import AVERAGE, DPC_COLUMNS, PROBE
from dpclab.lab.plots.headroom import dpc_headroom
from dpclab.lab.plots.saving import save_figure
from dpclab.lab.targets import markdown_gains, markdown_per_dataset, markdown_targets, paired_gains


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


def dpc_gains(runs: pd.DataFrame, metric: str = "base") -> pd.DataFrame:
    """:func:`dpclab.lab.targets.paired_gains` of every ``coop+dpc*`` row over CoOp (empty without both)."""
    labels = [m for m in dict.fromkeys(runs["method"].astype(str)) if m.startswith("coop+dpc")]
    if "coop" not in set(runs["method"]) or not labels:
        return pd.DataFrame()
    return pd.concat([paired_gains(runs, m, metric=metric) for m in labels], ignore_index=True)


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
    gains = dpc_gains(runs)
    if not gains.empty:
        paths["gains"] = out / f"{name}_gains.csv"
        atomic_write_text(paths["gains"], gains.to_csv(index=False))
        md += ("\nDPC's base gain over CoOp as paired per-seed differences (step 2 sits on the CoOp run of the same "
               "seed):\n\n" + markdown_gains(gains))
        if PROBE in set(summary["method"]) and "coop" in set(summary["method"]):
            figure = save_figure(dpc_headroom(summary, gains), f"{name}_headroom", folder=out,
                                 alt="DPC's base gain over CoOp per dataset against the probe's headroom over CoOp "
                                     "and CoOp's accuracy on its own shots")
            paths["headroom"] = figure.path
            md += f"\n![DPC's base gain against CoOp's headroom]({figure.path.name})\n"
    atomic_write_text(paths["markdown"], md)
    return paths


__all__ = ["write_report", "markdown_table", "dpc_summary", "dpc_gains"]
