"""Notebooks 02/03's DPC side by side (issue 22): the plan requests CoOp, DPC paper and DPC released on two datasets,
notebook 06 has its own embedded default (a dataset where base is not saturated), and the tables are what the runs
say."""

from __future__ import annotations

import pytest
import torch

from dpclab.lab import plan
from dpclab.lab.dpc_study import SIDE_BY_SIDE_ROWS, side_by_side_sweep, side_by_side_table
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig


def test_notebook_06_has_its_own_embedded_default_and_02_03_compare_two_datasets():
    scope = plan.Scope.from_parameters({})
    assert scope.datasets == (plan.EMBEDDED_DEFAULT_DATASET,) and scope.embedded_default
    assert scope.for_notebook("06").datasets == plan.EMBEDDED_NOTEBOOK_DATASETS["06"] != scope.datasets
    assert scope.for_notebook("02") == scope
    assert {r.dataset for r in plan.requests("06", scope)} == set(plan.EMBEDDED_NOTEBOOK_DATASETS["06"])
    for nb in ("02", "03"):
        side = [r for r in plan.requests(nb, scope) if ": " in r.label]
        assert [(r.dataset, r.label.split(": ")[1]) for r in side] == [
            (d, row) for d in plan.DPC_SIDE_BY_SIDE for row in SIDE_BY_SIDE_ROWS]
        released = [r for r in side if r.label.endswith("[released]")]
        assert all(dict(r.method_cfg) == {"mode": "released"} for r in released)
    # a dataset given by the user: every notebook uses it, the side-by-side too
    given = plan.Scope.from_parameters({"dataset": "world_shapes,world_sketch"})
    assert not given.embedded_default and given.for_notebook("06").datasets == ("world_shapes", "world_sketch")
    assert given.side_by_side() == ("world_shapes", "world_sketch")
    real = plan.Scope.from_parameters({"backend": "open_clip", "pretrained": "openai", "data_root": "/d"})
    assert not real.embedded_default and real.side_by_side() == (plan.REAL_DEFAULT_DATASET,)
    # deduplicated with the notebooks' other requests: 02's main coop+dpc is the side-by-side world_tint one
    keys = [r.key for r in plan.report_plan({}, ["02", "03"])]
    assert len(keys) == len(set(keys))
    # the dataset where DPC lifts base is 06's and 03's sliders' (their paper-mode DPC run is the side-by-side one),
    # world_tint is 00-02's, 04's and 05's: the side-by-side adds one run to the report, world_tint's released DPC
    assert scope.for_notebook("03").datasets == plan.EMBEDDED_NOTEBOOK_DATASETS["03"] == ("world_shapes",)
    sliders = [r for r in plan.requests("03", scope) if ": " not in r.label]
    assert [(r.dataset, r.method, r.method_cfg) for r in sliders] == [("world_shapes", "coop+dpc", ())]
    side = [r for nb in ("02", "03") for r in plan.requests(nb, scope) if ": " in r.label]
    others = {r.key for nb in plan.NOTEBOOKS for r in plan.requests(nb, scope) if ": " not in r.label}
    assert {(r.dataset, r.method, r.method_cfg) for r in side if r.key not in others} == {
        ("world_tint", "coop+dpc", (("mode", "released"),))}


def test_side_by_side_tables(json_root, tmp_path, tiny_backbone):
    cfg = dict(dataset="eurosat", data_root=str(json_root), model="unused", pretrained="unused", shots=4, seed=1,
               device="cpu", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None,
               train={"epochs": 2, "lr": 0.05}, base_train={"epochs": 2, "lr": 0.05}, progress=False)
    exp = Experiment.prepare(RunConfig.of(method="zeroshot", **cfg), tiny_backbone)
    res = {"coop": run(RunConfig.of(method="coop", **{**cfg, "train": cfg["base_train"], "base_train": {}}), experiment=exp),
           "coop+dpc": run(RunConfig.of(method="coop+dpc", **cfg), experiment=exp),
           "coop+dpc[released]": run(RunConfig.of(method="coop+dpc", method_cfg={"mode": "released"}, **cfg),
                                     experiment=exp)}
    table = side_by_side_table({"eurosat": res})
    assert len(table) == 2
    row = table.loc[("eurosat", "coop+dpc[released] (released)")]
    assert row["base gain"] == pytest.approx(res["coop+dpc[released]"].metrics["base"] - res["coop"].metrics["base"])
    assert row["DPC new"] == row["CoOp new"]  # ω_n = 0
    dpc = res["coop+dpc"].method
    assert table.loc[("eurosat", "coop+dpc (paper)"), "‖P′−P‖"] == pytest.approx(
        float(torch.linalg.vector_norm(dpc.prime()["ctx"] - dpc.frozen()["ctx"])), rel=1e-5)
    sweep = side_by_side_sweep({"eurosat": res}, (0.0, 1.0))
    assert sweep.loc["eurosat", "paper ω_b=0"] == pytest.approx(res["coop"].metrics["base"])
    assert sweep.loc["eurosat", "released (P′ at 5·lr)"] == res["coop+dpc[released]"].metrics["base"]
