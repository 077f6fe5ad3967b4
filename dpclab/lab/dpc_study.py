"""Why DPC does or does not lift base accuracy: its ablation rows and its ω_b sweep, over datasets x seeds.

The benchmark (:mod:`dpclab.lab.benchmark`) reports DPC in each mode with step-2 diagnostics; this module adds the two
views the DPC paper uses to explain itself, on every dataset instead of one notebook's dataset:

* :func:`ablation` — the rows of the paper's Table 4 (:data:`dpclab.lab.plan.DPC_ABLATION`: two-step training
  only, + DHNO, + weighting, weighting + decoupling without DHNO, full DPC), each a ``coop+dpc`` run with switches;
* :func:`omega_sweep` — base accuracy of every finished ``coop+dpc`` run at ω_b on a grid (ω = 0 is the step-1
  prompt P, ω = 1 is P′ alone), from the run's cached ω grid (:func:`dpclab.omega.run_grid_cached`);
* :func:`study` — both in one pass over the grid (what ``python -m dpclab dpc-study`` runs).

Both go through :func:`dpclab.lab.matrix.run_matrix`, so they reuse the benchmark's runs (same runs dir and caches):
the full-DPC row and the sweep cost no training when the benchmark ran first. ``python -m dpclab dpc-study``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import pandas as pd

from dpclab import omega
from dpclab.evaluate import harmonic_mean
from dpclab.io import atomic_write_text
from dpclab.lab.matrix import AVERAGE, run_matrix, summary_table, train_accuracy
from dpclab.lab.plan import DPC_ABLATION
from dpclab.source import Source

#: ablation row label -> (method, RunConfig overrides), in the paper's order (CoOp first, full DPC last)
ABLATION_SPEC: dict[str, tuple[str, dict]] = {f"dpc: {name}": ("coop+dpc", {"method_cfg": dict(opts)})
                                              for name, opts in DPC_ABLATION.items()}
#: the sweep's ω_b values
SWEEP_OMEGAS: tuple[float, ...] = tuple(round(0.1 * i, 1) for i in range(11))


def _with_step2(spec: dict[str, tuple[str, dict]], step2: dict | None) -> dict[str, tuple[str, dict]]:
    """``spec`` with TrainConfig overrides ``step2`` for DPC's step 2 (step 1 stays the benchmark's CoOp run)."""
    if not step2:
        return spec
    return {label: (method, {**over, "train": {**over.get("train", {}), **step2}})
            for label, (method, over) in spec.items()}


def ablation(source: Source, datasets: Sequence[str], seeds: Sequence[int], step2: dict | None = None,
             **grid_kw) -> pd.DataFrame:
    """One row per dataset x ablation row x seed (:func:`run_matrix`'s columns, ``grid_kw`` its keywords), CoOp
    (step 1) included. ``step2``: TrainConfig overrides of DPC's step 2 only (e.g. ``{"lr": 0.0002}``)."""
    return run_matrix(source, datasets, ["coop", *ABLATION_SPEC], seeds, spec=_with_step2(ABLATION_SPEC, step2),
                      **grid_kw)


def ablation_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Mean base / new / HM over seeds per ablation row: one column block per dataset plus the average."""
    summary = summary_table(runs)
    return summary.pivot(index="method", columns="dataset", values=["base", "new", "hm"]).reindex(
        ["coop", *ABLATION_SPEC])


#: the ablation row that is DPC with every part on (no switch): the benchmark's ``coop+dpc`` run
FULL_DPC = next(label for label, (_, over) in ABLATION_SPEC.items() if not over["method_cfg"])
SWEEP_COLUMNS = ["dataset", "seed", "omega", "base", "new"]


def _sweep_collector(rows: list[dict], omegas: Sequence[float], label: str):
    """A :func:`run_matrix` ``on_result`` hook that appends the ω grid of every finished ``label`` run to ``rows``."""
    def collect(row: dict, result) -> None:
        if row["method"] != label:
            return
        grid = omega.run_grid_cached(result, omegas)
        for i, w in enumerate(grid.omegas):
            rows.append({"dataset": row["dataset"], "seed": row["seed"], "omega": float(w),
                         "base": float(grid.accuracy["base"][i]), "new": float(grid.accuracy["new"][i])})
    return collect


def omega_sweep(source: Source, datasets: Sequence[str], seeds: Sequence[int],
                omegas: Sequence[float] = SWEEP_OMEGAS, step2: dict | None = None, **grid_kw) -> pd.DataFrame:
    """Base and new test accuracy of the ``coop+dpc`` run (default config; ``step2``: TrainConfig overrides of its
    step 2) of every dataset x seed at each ω.

    Columns: dataset, seed, omega, base (base classes with ω_b = omega), new (new classes with ω_n = omega)."""
    rows: list[dict] = []
    run_matrix(source, datasets, ["coop+dpc"], seeds, on_result=_sweep_collector(rows, omegas, "coop+dpc"),
               spec=_with_step2({"coop+dpc": ("coop+dpc", {})}, step2), **grid_kw)
    return pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def study(source: Source, datasets: Sequence[str], seeds: Sequence[int], omegas: Sequence[float] = SWEEP_OMEGAS,
          step2: dict | None = None, **grid_kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`ablation` and :func:`omega_sweep` in one pass over the grid: the sweep is read from the full-DPC row's
    run while the ablation visits it. Returns (ablation runs, sweep)."""
    rows: list[dict] = []
    runs = ablation(source, datasets, seeds, step2=step2, on_result=_sweep_collector(rows, omegas, FULL_DPC),
                    **grid_kw)
    return runs, pd.DataFrame(rows, columns=SWEEP_COLUMNS)


def sweep_table(sweep: pd.DataFrame, column: str = "base") -> pd.DataFrame:
    """``column`` accuracy averaged over seeds: one row per dataset plus the average over datasets, one column
    per ω."""
    per = sweep.groupby(["dataset", "omega"], sort=False)[column].mean().unstack("omega")
    per.loc[AVERAGE] = per.mean(axis=0)
    return per


def markdown_ablation(table: pd.DataFrame) -> str:
    """:func:`ablation_table` as markdown: base per dataset, then the average's base / new / HM."""
    datasets = [d for d in table["base"].columns if d != AVERAGE]
    lines = ["| configuration | " + " | ".join(f"{d} base" for d in datasets) + " | average base | average new "
             "| average HM |", "|---" * (len(datasets) + 4) + "|"]
    for label, r in table.iterrows():
        cells = [f"{r[('base', d)]:.2f}" for d in datasets]
        b, n = r[("base", AVERAGE)], r[("new", AVERAGE)]
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {b:.2f} | {n:.2f} | {harmonic_mean(b, n):.2f} |")
    return "\n".join(lines) + "\n"


def markdown_sweep(table: pd.DataFrame, what: str = "base accuracy at ω_b") -> str:
    """:func:`sweep_table` as markdown, the row's best ω in bold."""
    omegas = list(table.columns)
    lines = [f"| dataset ({what}) | " + " | ".join(f"{w:g}" for w in omegas) + " |", "|---" * (len(omegas) + 1) + "|"]
    for name, r in table.iterrows():
        best = r.max()
        lines.append(f"| {name} | " + " | ".join(f"**{v:.1f}**" if v == best else f"{v:.1f}" for v in r) + " |")
    return "\n".join(lines) + "\n"


#: the rows notebooks 02 and 03 compare per dataset (:func:`dpclab.lab.plan.Scope.side_by_side`): CoOp, DPC in the
#: paper's mode and as the released code runs it
SIDE_BY_SIDE_ROWS = ("coop", "coop+dpc", "coop+dpc[released]")


def _prompt_distance(dpc) -> float:
    """‖P′ − P‖ over every prompt tensor of a trained DPC method."""
    prime, frozen = dpc.prime(), dpc.frozen()
    return float(sum(((prime[n] - frozen[n]).detach().float() ** 2).sum() for n in dpc.prompt_names) ** 0.5)


def side_by_side_table(results: dict[str, dict]) -> pd.DataFrame:
    """``results``: dataset -> {row of :data:`SIDE_BY_SIDE_ROWS`: its :class:`~dpclab.pipeline.RunResult`}. One row
    per dataset x DPC row: CoOp's base and its accuracy on its own shots (how much room step 1 left), DPC's base, the
    gain, new accuracy (equal to CoOp's: ω_n = 0) and ‖P′ − P‖."""
    rows = []
    for dataset, res in results.items():
        coop = res["coop"]
        coop_train = train_accuracy(coop)
        for label in SIDE_BY_SIDE_ROWS[1:]:
            r = res[label]
            rows.append({"dataset": dataset, "DPC": f"{label} ({r.method.cfg.mode})", "CoOp base": coop.metrics["base"],
                         "CoOp train acc": coop_train, "DPC base": r.metrics["base"],
                         "base gain": r.metrics["base"] - coop.metrics["base"], "CoOp new": coop.metrics["new"],
                         "DPC new": r.metrics["new"], "‖P′−P‖": _prompt_distance(r.method)})
    return pd.DataFrame(rows).set_index(["dataset", "DPC"])


def side_by_side_sweep(results: dict[str, dict], omegas: Sequence[float] = SWEEP_OMEGAS) -> pd.DataFrame:
    """Base accuracy of the ``paper``-mode run of each dataset at every ω_b (ω = 0: P, ω = 1: P′ alone), with the
    ``released`` run's base beside it (its ω_b is a learning rate, not a mix: one number)."""
    rows = {}
    for dataset, res in results.items():
        grid = omega.run_grid_cached(res["coop+dpc"], omegas)
        rows[dataset] = {**{f"paper ω_b={float(w):g}": float(a) for w, a in zip(grid.omegas, grid.accuracy["base"])},
                         "released (P′ at 5·lr)": res["coop+dpc[released]"].metrics["base"]}
    return pd.DataFrame(rows).T


def write_study(out: str | Path, name: str, ablation_runs: pd.DataFrame, sweep: pd.DataFrame,
                header: str = "") -> dict[str, Path]:
    """``<name>.md`` (both tables), ``<name>_ablation.csv`` (every run) and ``<name>_sweep.csv``, atomically."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / f"{name}.md", "ablation": out / f"{name}_ablation.csv",
             "sweep": out / f"{name}_sweep.csv"}
    atomic_write_text(paths["ablation"], ablation_runs.to_csv(index=False))
    atomic_write_text(paths["sweep"], sweep.to_csv(index=False))
    md = (header.rstrip() + "\n\n" if header else "")
    md += "DPC ablation (mean over seeds):\n\n" + markdown_ablation(ablation_table(ablation_runs))
    md += "\nω_b sweep of the default coop+dpc run (ω = 0: step-1 P; ω = 1: P′ alone; mean over seeds):\n\n"
    md += markdown_sweep(sweep_table(sweep))
    atomic_write_text(paths["markdown"], md)
    return paths


__all__ = ["ABLATION_SPEC", "FULL_DPC", "SWEEP_OMEGAS", "SIDE_BY_SIDE_ROWS", "side_by_side_table", "side_by_side_sweep",
           "ablation", "study", "ablation_table", "omega_sweep",
           "sweep_table",
           "markdown_ablation", "markdown_sweep", "write_study"]
