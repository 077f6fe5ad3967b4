"""DPC's ablation rows and ω_b sweep across datasets: the rows are the runs they claim to be (full DPC is the
benchmark's coop+dpc run, ω = 0 is step 1's P, ω = ω_b is the DPC row), tables and the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from dpclab.lab.matrix import AVERAGE, run_matrix
from dpclab.lab.cli import main
from dpclab.lab.plan import DPC_ABLATION
from dpclab.source import Source
from dpclab.lab.dpc_study import (ABLATION_SPEC, FULL_DPC, ablation, ablation_table, markdown_ablation, markdown_sweep,
                              omega_sweep, study, sweep_table)


@pytest.fixture
def grid_kw(json_root, tmp_path, tiny_backbone):
    source = Source(data_root=str(json_root), model="tiny", pretrained="random", shots=4, runs_dir=str(tmp_path / "runs"),
                    cache_dir=str(tmp_path / "cache"), results=None, device="cpu")
    return dict(source=source, train={"epochs": 2}, backbone=tiny_backbone)


def test_ablation_rows_are_distinct_runs_and_full_dpc_is_the_benchmark_row(grid_kw):
    bench = run_matrix(datasets=["eurosat"], rows=["coop", "coop+dpc"], seeds=[1], **grid_kw)
    runs = ablation(datasets=["eurosat"], seeds=[1], **grid_kw)
    assert list(runs["method"]) == ["coop", *ABLATION_SPEC]
    assert len(ABLATION_SPEC) == len(DPC_ABLATION)
    full = runs[runs["method"] == FULL_DPC].iloc[0]
    dpc = bench[bench["method"] == "coop+dpc"].iloc[0]
    assert full["reused"] and full["run_dir"] == dpc["run_dir"] and full["base"] == dpc["base"]
    assert runs["run_dir"].nunique() == len(runs)  # every switch is a run of its own
    coop_new = runs.loc[runs["method"] == "coop", "new"].iloc[0]
    decoupled = [f"dpc: {k}" for k, v in DPC_ABLATION.items() if v.get("decouple", True)]
    assert (runs.set_index("method").loc[decoupled, "new"] == coop_new).all()  # ω_n = 0: new is step 1's exactly
    table = ablation_table(runs)
    assert list(table.index) == ["coop", *ABLATION_SPEC]
    md = markdown_ablation(table)
    assert md.count("\n") == 2 + len(table) and "| eurosat base |" in md.splitlines()[0]


def test_omega_sweep_ends_are_step1_and_the_dpc_row(grid_kw):
    bench = run_matrix(datasets=["eurosat"], rows=["coop", "coop+dpc"], seeds=[1, 2], **grid_kw)
    sweep = omega_sweep(datasets=["eurosat"], seeds=[1, 2], omegas=(0.0, 0.2, 0.5, 1.0), **grid_kw)
    assert len(sweep) == 2 * 4 and set(sweep["omega"]) == {0.0, 0.2, 0.5, 1.0}
    for seed in (1, 2):
        row = lambda m: bench[(bench["method"] == m) & (bench["seed"] == seed)].iloc[0]  # noqa: E731
        at = sweep[sweep["seed"] == seed].set_index("omega")
        assert at.loc[0.0, "base"] == pytest.approx(row("coop")["base"], abs=1e-9)
        assert at.loc[0.0, "new"] == pytest.approx(row("coop")["new"], abs=1e-9)
        assert at.loc[0.2, "base"] == pytest.approx(row("coop+dpc")["base"], abs=1e-9)
    table = sweep_table(sweep)
    assert list(table.index) == ["eurosat", AVERAGE]
    assert table.loc["eurosat", 0.0] == pytest.approx(sweep[sweep["omega"] == 0.0]["base"].mean())
    md = markdown_sweep(table)
    assert md.count("**") >= 4  # the best ω of each row in bold


def test_cli_dpc_study_writes_tables(cli_source, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["dpc-study", *cli_source, "--seeds", "1", "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "DPC ablation" in text and "ω_b sweep" in text
    assert len(pd.read_csv(out / "dpc_study_sweep.csv")) == 11
    assert set(pd.read_csv(out / "dpc_study_ablation.csv")["method"]) == {"coop", *ABLATION_SPEC}


def test_step2_overrides_train_a_new_step2_on_the_same_step1(grid_kw):
    default = ablation(datasets=["eurosat"], seeds=[1], **grid_kw).set_index("method")
    slow = ablation(datasets=["eurosat"], seeds=[1], step2={"lr": 1e-5}, **grid_kw).set_index("method")
    assert slow.loc["coop", "run_dir"] == default.loc["coop", "run_dir"] and slow.loc["coop", "reused"]
    for label in ABLATION_SPEC:
        assert slow.loc[label, "run_dir"] != default.loc[label, "run_dir"] and not slow.loc[label, "reused"]
    record = json.loads((Path(slow.loc[FULL_DPC, "run_dir"]) / "result.json").read_text())
    assert record["config"]["train"]["lr"] == 1e-5
    sweep = omega_sweep(datasets=["eurosat"], seeds=[1], omegas=(0.0, 1.0), step2={"lr": 1e-5}, **grid_kw)
    assert sweep.loc[sweep["omega"] == 0.0, "base"].item() == pytest.approx(default.loc["coop", "base"], abs=1e-9)


def test_study_is_the_ablation_and_the_sweep_in_one_pass(grid_kw):
    runs, sweep = study(datasets=["eurosat"], seeds=[1, 2], omegas=(0.0, 0.2, 1.0), **grid_kw)
    pd.testing.assert_frame_equal(runs.drop(columns=["seconds", "reused"]),
                                  ablation(datasets=["eurosat"], seeds=[1, 2], **grid_kw).drop(columns=["seconds", "reused"]))
    pd.testing.assert_frame_equal(sweep, omega_sweep(datasets=["eurosat"], seeds=[1, 2], omegas=(0.0, 0.2, 1.0), **grid_kw))
