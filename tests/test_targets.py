"""Issue 22's measures: DPC's gains as paired per-seed differences with a t interval (hand-computed), its targets,
the headroom figure, and the benchmark module split (targets apart from the run matrix)."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest

from dpclab.lab.benchmark import dpc_gains, write_report
from dpclab.lab.matrix import summary_table
from dpclab.lab.targets import (AVERAGE, PROBE, dpc_targets, markdown_dpc_targets, markdown_gains, paired_gains,
                            paired_interval, t_quantile_975)


def _runs() -> pd.DataFrame:
    rows = []
    coop = {"a": [80.0, 82.0, 84.0], "b": [90.0, 91.0, 95.0]}
    gain = {"a": [2.0, 1.0, 3.0], "b": [-1.0, 0.0, 1.0]}
    for d in coop:
        for i, seed in enumerate((1, 2, 3)):
            rows.append({"dataset": d, "method": "coop", "seed": seed, "base": coop[d][i], "new": 50.0 + seed,
                         "train_acc": 90.0})
            rows.append({"dataset": d, "method": "coop+dpc[released]", "seed": seed, "base": coop[d][i] + gain[d][i],
                         "new": 50.0 + seed, "train_acc": 91.0})
            rows.append({"dataset": d, "method": PROBE, "seed": seed, "base": 95.0, "new": math.nan, "train_acc": 100.0})
    return pd.DataFrame(rows)


def test_t_quantiles_and_the_paired_interval_by_hand():
    assert t_quantile_975(2) == 4.303 and t_quantile_975(9) == 2.262
    assert t_quantile_975(60) == pytest.approx(2.000, abs=2e-3) and t_quantile_975(10 ** 6) == pytest.approx(1.96, abs=1e-3)
    mean, low, high = paired_interval([2.0, 1.0, 3.0])  # sd 1, half width 4.303 / sqrt(3)
    assert mean == 2.0 and high - mean == pytest.approx(4.303 / math.sqrt(3)) and mean - low == pytest.approx(high - mean)
    assert math.isnan(paired_interval([1.0])[1])
    with pytest.raises(ValueError, match="at least 2"):
        t_quantile_975(0)


def test_paired_gains_pair_seeds_and_average_per_seed():
    g = paired_gains(_runs(), "coop+dpc[released]").set_index("dataset")
    assert g.loc["a", "diffs"] == [2.0, 1.0, 3.0] and g.loc["a", "mean"] == pytest.approx(2.0)
    assert g.loc["b", "diffs"] == [-1.0, 0.0, 1.0] and g.loc["b", "baseline_mean"] == pytest.approx(92.0)
    # the average pairs per seed: mean over datasets of the differences, (2-1)/2, (1+0)/2, (3+1)/2
    assert g.loc[AVERAGE, "diffs"] == [0.5, 0.5, 2.0] and g.loc[AVERAGE, "mean"] == pytest.approx(1.0)
    half = 4.303 * pd.Series([0.5, 0.5, 2.0]).std() / math.sqrt(3)
    assert g.loc[AVERAGE, "high"] == pytest.approx(1.0 + half)
    # a seed one row lacks is not paired
    runs = _runs()
    runs = runs[~((runs.method == "coop") & (runs.seed == 3) & (runs.dataset == "a"))]
    assert paired_gains(runs, "coop+dpc[released]").set_index("dataset").loc["a", "seeds"] == [1, 2]
    with pytest.raises(ValueError, match="both"):
        paired_gains(runs, "coop+dept")
    assert "| a | coop+dpc[released] − coop (base) | 1–3 | +2.0 +1.0 +3.0 | +2.00 |" in markdown_gains(
        paired_gains(_runs(), "coop+dpc[released]"))


def test_issue_22_targets():
    t = dpc_targets(_runs(), dataset="a").set_index("target")
    assert t.loc["coop+dpc[released] lifts base on a", "passed"]
    assert t.loc["coop+dpc[released] lifts base on average", "measured"] == pytest.approx(1.0)
    assert t.loc["coop+dpc[released] keeps new exactly", "passed"]
    runs = _runs()
    runs.loc[(runs.method == "coop+dpc[released]") & (runs.seed == 2) & (runs.dataset == "b"), "new"] += 0.5
    t = dpc_targets(runs, dataset="b").set_index("target")
    assert not t.loc["coop+dpc[released] lifts base on b", "passed"]
    assert t.loc["coop+dpc[released] keeps new exactly", "measured"] == 0.5
    assert not t.loc["coop+dpc[released] keeps new exactly", "passed"]
    assert dpc_targets(runs, dataset="missing").set_index("target").loc[
        "coop+dpc[released] lifts base on missing", "passed"] is None
    assert "| FAIL |" in markdown_dpc_targets(dpc_targets(runs, dataset="b"))


def test_report_writes_gains_and_the_headroom_figure(tmp_path):
    from dpclab.lab.plots.headroom import headroom_table

    runs = _runs()
    summary = summary_table(runs)
    gains = dpc_gains(runs)
    table = headroom_table(summary, gains).set_index("dataset")
    assert table.loc["a", "headroom"] == pytest.approx(95.0 - 82.0) and table.loc["b", "coop_train"] == 90.0
    paths = write_report(tmp_path, "t", runs, summary)
    assert Path(paths["headroom"]).is_file() and Path(paths["gains"]).is_file()
    md = Path(paths["markdown"]).read_text()
    assert "paired per-seed differences" in md and "t_headroom.png" in md


def test_benchmark_and_targets_are_apart():
    import dpclab.lab.benchmark as benchmark
    import dpclab.lab.targets as targets

    assert not hasattr(benchmark, "run_grid") and hasattr(benchmark, "write_report")
    assert not hasattr(benchmark, "check_targets")
    # the targets are a leaf: they read tables, never the run matrix (benchmark imports them, not the reverse)
    assert not [line for line in Path(targets.__file__).read_text().splitlines() if line.startswith("from .")]
