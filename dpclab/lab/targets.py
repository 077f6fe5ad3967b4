"""The project's targets, measured on a benchmark table (:mod:`dpclab.lab.benchmark`), and DPC's gains as paired
per-seed differences with a 95 % interval.

* :func:`check_targets` — issue 3/11's expectations on one row set of :func:`dpclab.lab.benchmark.summary_table` (the
  average over datasets by default): pass / fail, informational only;
* :func:`paired_gains` — a method's gain over its baseline as per-seed differences (DPC's step 2 sits on the CoOp run
  of the same seed, so the seeds pair), their mean and a paired t interval, per dataset and for the dataset average;
* :func:`dpc_targets` — issue 22's: ``coop+dpc[released]`` base >= CoOp + 1.0 on the headroom dataset, >= +0.5 on
  the average, new classes exactly unchanged.

Nothing here chooses a setting: the thresholds were fixed before any result was seen.
"""

from __future__ import annotations

import math
from typing import Sequence

import pandas as pd

#: name of the row that averages over datasets in :func:`dpclab.lab.benchmark.summary_table`
AVERAGE = "average"
#: the linear probe's row label: not a prompt method, the ceiling of the frozen features (dpclab.diagnostics)
PROBE = "linear-probe"

# ------------------------------------------------------------------------------------------------------ issue 3 / 11
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
    """The DPC modes among row labels ``coop+dpc[<mode>]``."""
    return [label[len("coop+dpc["):-1] for label in labels if label.startswith("coop+dpc[") and label.endswith("]")]


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



# ------------------------------------------------------------------------------------------------------ paired gains
#: two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (above: a Cornish-Fisher expansion)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145, 2.131,
         2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def t_quantile_975(df: int) -> float:
    """The 97.5 % quantile of Student's t with ``df`` degrees of freedom (a 95 % two-sided interval)."""
    if df < 1:
        raise ValueError(f"a t interval needs at least 2 paired values (df >= 1), got df={df}.")
    if df <= len(_T975):
        return _T975[df - 1]
    z = 1.959964
    return z + (z ** 3 + z) / (4 * df) + (5 * z ** 5 + 16 * z ** 3 + 3 * z) / (96 * df ** 2)


def paired_interval(diffs: Sequence[float]) -> tuple[float, float, float]:
    """(mean, low, high) of a paired 95 % t interval of per-seed differences (low = high = NaN for one value)."""
    d = pd.Series(list(diffs), dtype=float)
    mean = float(d.mean())
    if len(d) < 2:
        return mean, math.nan, math.nan
    half = t_quantile_975(len(d) - 1) * float(d.std(ddof=1)) / math.sqrt(len(d))
    return mean, mean - half, mean + half


def paired_gains(runs: pd.DataFrame, method: str, baseline: str = "coop", metric: str = "base") -> pd.DataFrame:
    """``method`` − ``baseline`` on ``metric`` as per-seed differences, per dataset and for the dataset average.

    ``runs``: one row per dataset x method x seed (:func:`dpclab.lab.benchmark.run_matrix`). Only seeds that both rows
    have are paired; the average row pairs, per seed, the mean over the datasets that have that seed for both.
    Columns: dataset, method, baseline, metric, seeds, diffs (per-seed differences, in seed order), mean, low, high
    (paired 95 % t interval), baseline_mean."""
    keep = runs[runs["method"].isin([method, baseline])]
    wide = keep.pivot_table(index=["dataset", "seed"], columns="method", values=metric).dropna()
    if method not in wide.columns or baseline not in wide.columns or wide.empty:
        raise ValueError(f"paired_gains needs rows of both {method!r} and {baseline!r} with common seeds.")
    wide["diff"] = wide[method] - wide[baseline]
    rows = []
    for dataset, part in wide.groupby(level="dataset", sort=False):
        rows.append(_gain_row(dataset, method, baseline, metric, part.droplevel("dataset")))
    per_seed = wide.groupby(level="seed")[["diff", baseline]].mean()
    rows.append(_gain_row(AVERAGE, method, baseline, metric, per_seed))
    return pd.DataFrame(rows)


def _gain_row(dataset: str, method: str, baseline: str, metric: str, part: pd.DataFrame) -> dict:
    part = part.sort_index()
    mean, low, high = paired_interval(part["diff"])
    return {"dataset": dataset, "method": method, "baseline": baseline, "metric": metric,
            "seeds": [int(s) for s in part.index], "diffs": [float(v) for v in part["diff"]], "mean": mean,
            "low": low, "high": high, "baseline_mean": float(part[baseline].mean())}


def markdown_gains(gains: pd.DataFrame, show_diffs: int = 10) -> str:
    """:func:`paired_gains` rows as markdown: per-seed differences (the first ``show_diffs``), mean, 95 % interval."""
    lines = ["| dataset | row − baseline (metric) | seeds | per-seed differences | mean | paired 95 % interval |",
             "|---|---|---|---|---|---|"]
    for r in gains.to_dict("records"):
        diffs = " ".join(f"{d:+.1f}" for d in r["diffs"][:show_diffs]) + (" …" if len(r["diffs"]) > show_diffs else "")
        seeds = f"{min(r['seeds'])}–{max(r['seeds'])}" if len(r["seeds"]) > 1 else str(r["seeds"][0])
        ci = "–" if math.isnan(r["low"]) else f"[{r['low']:+.2f}, {r['high']:+.2f}]"
        lines.append(f"| {r['dataset']} | {r['method']} − {r['baseline']} ({r['metric']}) | {seeds} | {diffs} | "
                     f"{r['mean']:+.2f} | {ci} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------------------------ issue 22
#: issue 22's thresholds (fixed in the issue, before the headroom dataset existed)
RELEASED_GAIN_HEADROOM = 1.0  # coop+dpc[released] base - CoOp base on the headroom dataset
RELEASED_GAIN_AVERAGE = 0.5  # ... on the average over the world datasets
#: the dataset built for DPC's regime (CoOp leaves room on base): dpclab.data.downstream, "WorldPlacement"
HEADROOM_DATASET = "world_placement"


def dpc_targets(runs: pd.DataFrame, row: str = "coop+dpc[released]", dataset: str = HEADROOM_DATASET) -> pd.DataFrame:
    """Issue 22's DPC targets on a runs table: ``row``'s base gain over CoOp on ``dataset`` (>= 1.0) and on the
    average (>= 0.5), judged on the mean of the paired per-seed differences (the interval is reported beside it), and
    new-class accuracy exactly CoOp's on every run. Columns: target, requirement, measured, low, high, seeds,
    passed (None when the rows are missing)."""
    out = []
    try:
        gains = paired_gains(runs, row).set_index("dataset")
    except ValueError:
        gains = pd.DataFrame()
    for name, where, need in ((f"{row} lifts base on {dataset}", dataset, RELEASED_GAIN_HEADROOM),
                              (f"{row} lifts base on average", AVERAGE, RELEASED_GAIN_AVERAGE)):
        if where in gains.index:
            g = gains.loc[where]
            out.append({"target": name, "requirement": f"{row} base - CoOp base >= {need:g}", "measured": g["mean"],
                        "low": g["low"], "high": g["high"], "seeds": len(g["seeds"]), "passed": bool(g["mean"] >= need)})
        else:
            out.append({"target": name, "requirement": f"{row} base - CoOp base >= {need:g}", "measured": math.nan,
                        "low": math.nan, "high": math.nan, "seeds": 0, "passed": None})
    try:
        new = paired_gains(runs, row, metric="new")
        worst = max(abs(d) for diffs in new["diffs"] for d in diffs)
        out.append({"target": f"{row} keeps new exactly", "requirement": "new - CoOp new == 0 on every run",
                    "measured": worst, "low": math.nan, "high": math.nan, "seeds": len(new.iloc[-1]["seeds"]),
                    "passed": worst == 0.0})
    except ValueError:
        out.append({"target": f"{row} keeps new exactly", "requirement": "new - CoOp new == 0 on every run",
                    "measured": math.nan, "low": math.nan, "high": math.nan, "seeds": 0, "passed": None})
    return pd.DataFrame(out)


def markdown_dpc_targets(targets: pd.DataFrame) -> str:
    lines = ["| target | requirement | measured (mean) | paired 95 % interval | seeds | result |",
             "|---|---|---|---|---|---|"]
    for r in targets.to_dict("records"):
        verdict = "n/a" if r["passed"] is None else ("pass" if r["passed"] else "FAIL")
        ci = "–" if math.isnan(r["low"]) else f"[{r['low']:+.2f}, {r['high']:+.2f}]"
        measured = "–" if math.isnan(r["measured"]) else f"{r['measured']:+.2f}"
        lines.append(f"| {r['target']} | {r['requirement']} | {measured} | {ci} | {r['seeds']} | {verdict} |")
    return "\n".join(lines) + "\n"


__all__ = ["AVERAGE", "PROBE", "check_targets", "markdown_targets", "markdown_per_dataset", "paired_gains",
           "paired_interval", "t_quantile_975", "markdown_gains", "dpc_targets", "markdown_dpc_targets",
           "HEADROOM_DATASET"]
