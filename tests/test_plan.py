"""One source, one plan: the run settings every tool shares (Source), the runs each notebook requests (plan), and the
per-dataset protocol exceptions where training settings are resolved."""

from __future__ import annotations

import os

import pytest

from dpclab.lab import paper_numbers
from dpclab.pipeline import effective_epochs
from dpclab.runconfig import RunConfig, train_config
from dpclab.methods import resolve
from dpclab.lab.plan import NOTEBOOKS, Scope, report_plan, report_spec, requests
from dpclab.lab.trainjobs import waves
from dpclab.protocol import EXCEPTIONS, dataset_train
from dpclab.source import Source


def _train_config(cfg):
    """The run's training settings under its resolved method."""
    return train_config(cfg, resolve(cfg.method))


def test_source_normalises_the_data_root(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    rel, absolute = Source(data_root="data"), Source(data_root=str(tmp_path / "data"))
    assert rel == absolute and rel.data_root == str((tmp_path / "data").resolve())
    assert RunConfig.of(data_root="data").source.data_root == rel.data_root  # RunConfig's source (its run key)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Source(data_root="~/data") == rel


def test_source_from_the_notebooks_parameters():
    src = Source.from_parameters({"precision": "amp", "shots": "8", "seeds": "1 2"}, runs_dir="r")
    assert (src.backend, src.precision, src.shots) == ("embedded", "amp", 8)
    assert src.results == os.path.join("r", "results.csv")
    assert src.data_root.endswith(os.path.join("data", "world"))
    cfg = RunConfig("coop", "world_tint", 2, source=src, train={"epochs": 3})
    assert (cfg.source.precision, cfg.source.shots, cfg.seed, cfg.train, cfg.source.runs_dir) == \
        ("amp", 8, 2, {"epochs": 3}, "r")
    with pytest.raises(ValueError, match="data_root is required on real CLIP"):
        Source.from_parameters({"model": "ViT-B-16", "pretrained": "openai"})
    with pytest.raises(ValueError, match="shots must be an integer >= 0"):
        Source(shots=-1)
    with pytest.raises(ValueError, match="precision must be one of"):
        Source(precision="fp8")
    with pytest.raises(ValueError, match="backend='embedded' runs model"):
        Source(backend="embedded", model="ViT-B-16")


def test_coop_on_imagenet_trains_50_epochs_wherever_its_config_is_resolved():
    assert any(e.dataset == "imagenet" and e.method == "coop" and e.train == {"epochs": 50} for e in EXCEPTIONS)
    assert dataset_train("coop", "imagenet") == {"epochs": 50} and dataset_train("coop", "eurosat") == {}
    assert dataset_train("promptkd", "dtd") == {}  # the KD weight comment is documented, not applied
    assert _train_config(RunConfig.of(method="coop", dataset="imagenet")).epochs == 50
    assert _train_config(RunConfig.of(method="coop", dataset="eurosat")).epochs == 200
    assert effective_epochs(RunConfig.of(method="coop+dpc", dataset="imagenet")) == {"epochs": 20, "step1_epochs": 50}
    assert _train_config(RunConfig.of(method="coop", dataset="imagenet", train={"epochs": 7})).epochs == 7
    assert _train_config(RunConfig.of(method="coop+dept", dataset="imagenet")).epochs == 10


def test_the_plan_lists_every_notebooks_runs_once_with_all_who_request_them():
    scope = Scope.from_parameters({"dataset": "eurosat,dtd", "seeds": "1 2 3", "pretrained": "openai"})
    plan = report_plan(scope)
    assert len({r.key for r in plan}) == len(plan)
    requested = {nb: {r.key for r in requests(nb, scope)} for nb in NOTEBOOKS}
    for nb, keys in requested.items():  # every request is in the plan, filed under that notebook too
        assert keys <= {r.key for r in plan if nb in r.requested_by}, nb
    dpc = next(r for r in plan if r.method == "coop+dpc" and not r.method_cfg and r.seed == 1 and
               r.dataset == "eurosat")
    assert {"02", "03", "04", "05"} <= set(dpc.requested_by) and dpc.curve  # 03 and 05 reuse 02's run
    rows = report_spec()
    six = [r for r in plan if "06" in r.requested_by]
    assert {r.label for r in requests("06", scope)} == set(rows) and len(requests("06", scope)) == 2 * 3 * len(rows)
    released = [r for r in six if r.method == "maple+dpc"]
    assert released and all(dict(r.method_cfg) == {"mode": "released"} for r in released)
    baseline = [r for r in requests("06", scope) if r.label == paper_numbers.DEPT_COOP_BASELINE]
    assert all(r.method == "coop" and dict(r.method_cfg)["n_ctx"] == 16 and dict(r.train)["epochs"] == 10
               for r in baseline)
    first, *later = waves(plan)  # runs built on another run (DPC's step 2, PromptKD on its teacher) come later
    # (on the CoOp datasets 06's PromptKD has its released ViT-L/14 teacher: not a planned run, its own job makes it)
    l14 = [r for r in six if r.method == "promptkd"]
    assert l14 and all(dict(r.method_cfg)["teacher_model"] == "ViT-L-14-quickgelu" for r in l14)
    needs_another = lambda r: "+dpc" in r.method or (r.method.startswith("promptkd")  # noqa: E731
                                                     and "teacher_model" not in dict(r.method_cfg))
    assert not any(r.method == "zeroshot" or needs_another(r) for r in first)
    assert later and all(needs_another(r) for wave in later for r in wave)


def test_the_default_seeds_are_the_papers_three_on_real_clip_and_one_on_the_embedded_tour():
    assert Scope.from_parameters({"pretrained": "openai"}).seeds == (1, 2, 3)
    assert Scope.from_parameters({}).seeds == (1,)
    assert Scope.from_parameters({"seeds": "1 2 3"}).seeds == (1, 2, 3)
    assert {r.seed for r in report_plan({})} == {1}


def test_grid_jobs_wait_for_the_runs_they_build_on_and_those_start_first():
    """PromptKD's job needs its teacher's (PromptSRC) job; PromptKD+DPC needs PromptKD (asked for on 16 shots, trained
    on its protocol's data: the same run) and the teacher; jobs that others need are listed first."""
    from dpclab.lab.trainjobs import grid_jobs

    jobs = grid_jobs(requests("06", Scope.from_parameters({})))
    title = {j.key: j.title.split()[2] for j in jobs}
    needs = {title[j.key]: sorted(title[k] for k in j.needs) for j in jobs}
    assert needs["promptkd"] == ["promptsrc"] and needs["promptkd+dpc"] == ["promptkd", "promptsrc"]
    assert needs["maple+dpc"] == ["maple"] and needs["cocoop"] == []
    order = [title[j.key] for j in jobs]
    assert order[:4] == ["promptsrc", "coop", "maple", "promptkd"]  # promptsrc: 3 runs wait for it, promptkd: 1


def test_quick_and_epochs_parameters_reach_the_plan():
    quick = {r.label: r for r in requests("02", Scope.from_parameters({"quick": True, "seeds": "4 5"}))}
    assert {r.seed for r in quick.values()} == {4}
    assert dict(quick["coop+dpc"].train) == {"epochs": 2} and dict(quick["coop+dpc"].base_train) == {"epochs": 20}
    fixed = {r.label: r for r in requests("06", Scope.from_parameters({"epochs": 3}))}
    assert dict(fixed["coop"].train) == {"epochs": 3} and dict(fixed["zeroshot"].train) == {}
    assert dict(fixed[paper_numbers.DEPT_COOP_BASELINE].train)["epochs"] == 10  # its own setting wins
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        Scope.from_parameters({"epochs": 0})
    with pytest.raises(ValueError, match="seeds must be >= 0"):
        Scope.from_parameters({"seeds": "-1"})


def test_setup_runs_exactly_the_planned_run_directories(json_root, tmp_path, tiny_backbone, monkeypatch):
    """What a notebook runs for a planned request is the run directory the grid makes for it."""
    from dpclab.lab.notebook import Setup
    from dpclab.pipeline import plan_run
    from dpclab.experiment import Experiment

    src = Source(model=tiny_backbone.model_name, pretrained="random", data_root=str(json_root), shots=2, device="cpu",
                 cache_dir=None, runs_dir=str(tmp_path / "runs"), results=None)
    s = Setup(src, Scope(("eurosat",), (1,), epochs=1), interactive=False)
    monkeypatch.setattr(Setup, "backbone", lambda self: tiny_backbone)
    log = tmp_path / "requests.jsonl"
    monkeypatch.setenv("DPCLAB_REQUEST_LOG", str(log))
    planned = s.planned("04")
    assert list(planned) == ["zero-shot", "CoOp", "oracle", "CoOp + DePT", "CoOp + DPC"]
    for label in ("oracle", "CoOp + DPC"):
        run = planned[label][0]
        res = s.run(run)
        cfg = run.run_config(src)
        assert res.run_dir == plan_run(cfg, Experiment.prepare(cfg, tiny_backbone))[-1].run_dir
    lines = log.read_text().splitlines()
    assert len(lines) == 2 and '"notebook": "04"' in lines[0] and '"label": "oracle"' in lines[0]


def test_after_the_grid_the_report_trains_nothing_in_another_precision(tmp_path):
    """``grid --quick -p precision amp`` then ``report --quick -p precision amp`` (notebook 04: zero-shot, CoOp, the
    oracle on all classes, CoOp+DePT, CoOp+DPC; 1 epoch to keep it short): the report trains nothing. The fp32
    check over every notebook is tests/test_notebooks.py::test_after_the_grid_the_report_trains_nothing..."""
    from plan_check import grid_then_report

    check = grid_then_report(tmp_path, {"precision": "amp", "epochs": 1}, only=["04"])
    assert check.results["04_dept_channel_importance"].ok, check.results
    assert "precision: amp (CLIP float32, prompts float32, autocast bfloat16)" in check.grid_output
    assert check.trained_by_report == 0 and check.requested_dirs == check.grid_dirs and len(check.grid_dirs) == 4
    assert all("-amp" in d for d in check.grid_dirs)  # the amp backbone key: not the fp32 runs
    print(f"grid {check.grid_seconds:.0f} s, report {check.report_seconds:.0f} s")
