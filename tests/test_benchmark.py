"""The benchmark: the grid of runs on a fixture dataset, the mean ± std / HM-of-means summary against values
computed by hand, the target checks on a hand-made summary, the writers, the world guard and the CLI."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch
from PIL import Image

from dpclab.lab.benchmark import markdown_table, write_report
from dpclab.lab.matrix import AVERAGE, DEFAULT_METHODS, DPC_COLUMNS, GRID_COLUMNS, PROBE, run_matrix, summary_table
from dpclab.lab.targets import check_targets, markdown_per_dataset, markdown_targets
from dpclab.lab.cli import main
from dpclab.source import Source
from dpclab.evaluate import harmonic_mean
from dpclab.text import encode_texts


def _grid(root, tmp_path, backbone, **kw):
    source = Source(data_root=str(root), model="tiny", pretrained="random", shots=4, runs_dir=str(tmp_path / "runs"),
                    cache_dir=str(tmp_path / "cache"), results=str(tmp_path / "runs" / "results.csv"), device="cpu")
    args = dict(rows=DEFAULT_METHODS, seeds=[1, 2], train={"epochs": 1}, backbone=backbone)
    args.update(kw)
    return run_matrix(source, ["eurosat"], **args)


def test_quick_grid_rows_reuse_and_train_accuracy(json_root, tmp_path, tiny_backbone):
    runs = _grid(json_root, tmp_path, tiny_backbone)
    n = len(DEFAULT_METHODS)
    assert list(runs.columns) == GRID_COLUMNS + DPC_COLUMNS
    assert len(runs) == 1 * n * 2
    assert list(runs["method"]) == list(DEFAULT_METHODS) * 2 and list(runs["seed"]) == [1] * n + [2] * n
    assert runs.loc[runs.method.isin(["zeroshot", PROBE]), "epochs"].eq(0).all()
    assert runs.loc[~runs.method.isin(["zeroshot", PROBE]), "epochs"].eq(1).all()
    trained = runs[runs.method != PROBE]
    for _, r in trained.iterrows():
        assert r["hm"] == pytest.approx(harmonic_mean(r["base"], r["new"]))
    # the linear probe has no new-class classifier; DPC rows carry their diagnostics, other rows do not
    probe = runs[runs.method == PROBE]
    assert probe["new"].isna().all() and probe["base"].between(0, 100).all() and probe["train_acc"].notna().all()
    dpc = runs[runs.method.str.startswith("coop+dpc")]
    assert dpc["dist"].notna().all() and runs.loc[~runs.index.isin(dpc.index), "dist"].isna().all()
    assert (dpc["fixed"] + dpc["broken"] <= dpc["n_train"]).all()
    # base test accuracy at omega = 0 is the step-1 model's, i.e. the CoOp row of the same seed
    for _, r in dpc.iterrows():
        coop = runs[(runs.method == "coop") & (runs.seed == r["seed"])].iloc[0]
        assert r["base_at_0"] == pytest.approx(coop["base"])
    # DPC (omega_n = 0) leaves new classes to the step-1 model, which is the CoOp run of the same seed
    for seed in (1, 2):
        coop = runs[(runs.method == "coop") & (runs.seed == seed)].iloc[0]
        dpc = runs[(runs.method == "coop+dpc") & (runs.seed == seed)].iloc[0]
        assert dpc["new"] == coop["new"]
    # step 1 of DPC reused the CoOp run: the results table holds each trained run exactly once
    table = pd.read_csv(tmp_path / "runs" / "results.csv")
    assert len(table) == (n - 1) * 2  # every row but the probe's (not a prompt method) is one run
    assert table["run_dir"].dropna().is_unique
    # zero-shot accuracy on the shots, recomputed by hand from the frozen encoders and the test transform
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig

    exp = Experiment.prepare(RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=4, seed=1,
                                       cache_dir=None, progress=False), tiny_backbone)
    items = exp.train_split.train
    model = tiny_backbone.model
    with torch.no_grad():
        x = torch.stack([exp.transforms["test"](Image.open(d.impath)) for d in items])
        img = torch.nn.functional.normalize(model.encode_image(x).float(), dim=-1)
        txt = encode_texts(model, tiny_backbone.tokenizer,
                           [exp.data.template.format(c) for c in exp.train_task.classnames])
    labels = torch.tensor([d.label for d in items])
    expected = 100.0 * ((img @ txt.T).argmax(-1) == labels).float().mean().item()
    zs = runs[(runs.method == "zeroshot") & (runs.seed == 1)].iloc[0]
    assert zs["train_acc"] == pytest.approx(expected, abs=1e-4)
    # a second call reuses every trained run and reproduces the table
    again = _grid(json_root, tmp_path, tiny_backbone)
    assert again.loc[~again.method.isin(["zeroshot", PROBE]), "reused"].all()
    pd.testing.assert_frame_equal(again[["base", "new", "hm", "train_acc"]], runs[["base", "new", "hm", "train_acc"]])
    summary = summary_table(runs)
    assert len(summary) == n * 2  # (1 dataset + average) x methods
    assert set(summary["dataset"]) == {"eurosat", AVERAGE}


def test_run_grid_rejects_bad_input(json_root, tmp_path, tiny_backbone):
    with pytest.raises(ValueError, match="Unknown method"):
        _grid(json_root, tmp_path, tiny_backbone, rows=["coop", "coopp"])
    with pytest.raises(ValueError, match="not in methods"):
        run_matrix(Source(), ["eurosat"], ["coop"], [1], method_cfg={"coop+dpc": {"omega_b": 0.5}}, backbone=tiny_backbone)
    with pytest.raises(ValueError, match="at least one"):
        run_matrix(Source(), [], ["coop"], [1], backbone=tiny_backbone)


def _hand_runs() -> pd.DataFrame:
    rows = []
    # dataset a: method m base 60/62/64, new 30/33/36; dataset b: base 80/80/83, new 50/53/50
    for seed, (ba, na, bb, nb) in zip((1, 2, 3), [(60, 30, 80, 50), (62, 33, 80, 53), (64, 36, 83, 50)]):
        rows.append({"dataset": "a", "method": "m", "seed": seed, "base": ba, "new": na, "train_acc": 90 + seed})
        rows.append({"dataset": "b", "method": "m", "seed": seed, "base": bb, "new": nb, "train_acc": 100.0})
    return pd.DataFrame(rows)


def test_summary_mean_std_and_hm_of_means_by_hand():
    s = summary_table(_hand_runs()).set_index(["dataset", "method"])
    a, b, avg = s.loc[("a", "m")], s.loc[("b", "m")], s.loc[(AVERAGE, "m")]
    assert a["base"] == pytest.approx(62.0) and a["base_std"] == pytest.approx(2.0)  # sample std, ddof = 1
    assert a["new"] == pytest.approx(33.0) and a["new_std"] == pytest.approx(3.0)
    assert a["hm"] == pytest.approx(2 * 62 * 33 / (62 + 33))  # HM of the means
    assert a["train_acc"] == pytest.approx(92.0) and a["train_acc_std"] == pytest.approx(1.0)
    assert b["base"] == pytest.approx(81.0) and b["base_std"] == pytest.approx(math.sqrt(3.0))
    assert b["new"] == pytest.approx(51.0) and a["runs"] == 3
    # across datasets: average base and new first (71.5, 42.0), then HM; not the mean of the per-dataset HMs
    assert avg["base"] == pytest.approx(71.5) and avg["new"] == pytest.approx(42.0)
    assert avg["hm"] == pytest.approx(2 * 71.5 * 42.0 / (71.5 + 42.0))
    assert avg["hm"] != pytest.approx((a["hm"] + b["hm"]) / 2)
    # its std: spread over seeds of the per-seed dataset averages: base 70, 71, 73.5; new 40, 43, 43
    assert avg["base_std"] == pytest.approx(pd.Series([70.0, 71.0, 73.5]).std())
    assert avg["new_std"] == pytest.approx(pd.Series([40.0, 43.0, 43.0]).std())
    assert avg["runs"] == 6


def test_summary_single_seed_has_no_std_and_bad_tables_fail():
    s = summary_table(_hand_runs().query("seed == 1"))
    assert s["base_std"].isna().all()
    with pytest.raises(ValueError, match="columns"):
        summary_table(pd.DataFrame({"dataset": ["a"], "base": [1.0]}))


def _summary(**values) -> pd.DataFrame:
    rows = []
    for method, (b, n, t) in values.items():
        rows.append({"dataset": AVERAGE, "method": method.replace("_", "+"), "base": b, "base_std": 0.0, "new": n,
                     "new_std": 0.0, "hm": harmonic_mean(b, n), "train_acc": t, "train_acc_std": 0.0, "runs": 3})
    return pd.DataFrame(rows)


def test_check_targets_on_a_hand_made_summary():
    good = _summary(zeroshot=(60, 55, 62), coop=(70, 50, 97), coop_dpc=(71.5, 50, 99), coop_dept=(72, 52, 96))
    t = check_targets(good).set_index("target")
    assert t["passed"].tolist() == [True] * 7
    assert t.loc["CoOp gains on base", "measured"] == pytest.approx(10.0)
    assert t.loc["DPC lifts base", "measured"] == pytest.approx(1.5)
    md = markdown_targets(check_targets(good))
    assert "| 55.00 | pass |" in md and "| +10.00 | pass |" in md  # values plain, differences signed
    assert all(line.count("|") == 5 for line in md.strip().splitlines())  # no stray cell separators
    bad = _summary(zeroshot=(60, 85, 62), coop=(64, 86, 80), coop_dpc=(64.5, 84, 99), coop_dept=(63, 85, 96))
    t = check_targets(bad).set_index("target")
    assert not t["passed"].any()
    # a missing method gives "not measured", not a fail
    t = check_targets(good[good.method != "coop+dept"]).set_index("target")
    assert t.loc["DePT improves on CoOp", "passed"] is None and math.isnan(t.loc["DePT improves on CoOp", "measured"])
    with pytest.raises(ValueError, match="no rows"):
        check_targets(good, dataset="nope")


def test_per_dataset_table_is_check_targets_on_each_dataset():
    a = _summary(zeroshot=(60, 55, 62), coop=(70, 50, 97), coop_dpc=(71.5, 50, 99), coop_dept=(72, 52, 96))
    b = _summary(zeroshot=(60, 85, 62), coop=(64, 86, 80), coop_dpc=(64.5, 84, 99),
                 **{"coop_dpc[released]": (66, 86, 90)})
    summary = pd.concat([a.assign(dataset="x"), b.assign(dataset="y"), a], ignore_index=True)
    lines = markdown_per_dataset(summary).strip().splitlines()
    head = [c.strip() for c in lines[0].strip("|").split("|")]
    assert head == ["dataset", "zero-shot new", "CoOp train acc", "CoOp base gain", "CoOp new change",
                    "coop+dpc base gain", "DPC new change", "DePT HM gain", "coop+dpc[released] base gain"]
    rows = {r[0]: r[1:] for r in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])}
    assert rows["x"] == ["55.0", "97.0", "+10.0", "-5.0", "+1.5", "+0.0", "+2.1", "–"]
    # y misses every target; its DePT row is missing ("–"), its released-mode DPC gains 2 points on base
    assert rows["y"] == ["85.0 ✗", "80.0 ✗", "+4.0 ✗", "+1.0 ✗", "+0.5 ✗", "-2.0 ✗", "–", "+2.0"]
    assert list(rows) == ["x", "y", AVERAGE]


def test_write_report_writes_csv_and_markdown(tmp_path):
    runs = _hand_runs()
    summary = summary_table(runs)
    paths = write_report(tmp_path / "out", "bench", runs, summary, check_targets(summary), header="# Title")
    assert set(paths) == {"summary", "runs", "markdown", "targets"}
    pd.testing.assert_frame_equal(pd.read_csv(paths["summary"]), summary, check_dtype=False)
    md = paths["markdown"].read_text()
    assert md.startswith("# Title") and "| a | m | 62.00 ± 2.00 | 33.00 ± 3.00 |" in md
    assert markdown_table(summary) in md and "| DPC lifts base |" in md
    assert not list((tmp_path / "out").glob(".*tmp*"))


def test_ensure_world_writes_missing_and_regenerates_another_world(tmp_path, monkeypatch, caplog):
    from dpclab.data import downstream, world

    calls = []

    def fake_write(root, names, seed=0):
        calls.append(list(names))
        for n in names:
            (root / downstream.get_world_dataset(n).dirname).mkdir(parents=True)

    monkeypatch.setattr(world, "write_world", fake_write)
    assert world.ensure_world(tmp_path, ["world_tint", "eurosat"]) == ["world_tint"]
    assert calls == [["world_tint"]]
    assert world.ensure_world(tmp_path, ["world_tint"]) == []  # present, same generator: nothing to do
    (tmp_path / "world_tint" / world.STAMP_FILE).write_text("seed0-000000000000\n")

    def fake_rewrite(root, names, seed=0):  # write_dataset replaces the folder as a whole
        calls.append(list(names))

    monkeypatch.setattr(world, "write_world", fake_rewrite)
    with caplog.at_level("WARNING", logger="dpclab.data.world"):
        assert world.ensure_world(tmp_path, ["world_tint"]) == ["world_tint"]  # another generator wrote it
    assert calls == [["world_tint"], ["world_tint"]] and "regenerating" in caplog.text
    assert (tmp_path / "world_tint" / world.STAMP_FILE).read_text().strip() == world.world_stamp(0)


def test_cli_quick_benchmark(cli_source, tmp_path, capsys):
    out = tmp_path / "report"
    rc = main(["benchmark", "--quick", *cli_source, "--out", str(out)])
    assert rc == 0
    text = capsys.readouterr().out
    assert "| **average** | coop+dept |" in text and "DPC keeps new" in text
    summary = pd.read_csv(out / "quick.csv")
    assert len(summary) == 2 * len(DEFAULT_METHODS) and (summary["runs"] == 1).all()
    assert "QUICK" in (out / "quick.md").read_text()
