"""One resolved method spec per run (``dpclab.methods.resolve``), passed down; ``run`` executes the steps ``plan_run``
returns (the plan ``train`` prints is the one that runs); one function decides reuse / resume / refuse."""

from __future__ import annotations

import dataclasses
import importlib
import re
import sys
from pathlib import Path

import pytest
import torch

import dpclab.methods
import dpclab.methods.table
import dpclab.pipeline
from conftest import write_json_dataset
from dpclab.methods import resolve
from dpclab.pipeline import plan_run, run, run_action
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig


@pytest.fixture
def resolutions(monkeypatch) -> list[str]:
    """Every call of ``resolve``, wherever it is reached from (the package's name and the module's own)."""
    calls: list[str] = []
    real = dpclab.methods.table.resolve

    def counting(name):
        calls.append(name)
        return real(name)

    importlib.import_module("dpclab.lab.cli")  # every module that may resolve is loaded; each one's name is counted
    for module in [m for name, m in sys.modules.items() if name.startswith("dpclab")]:
        if getattr(module, "resolve", None) is real:
            monkeypatch.setattr(module, "resolve", counting)
    return calls


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("resolve_data")
    write_json_dataset(root, n_classes=4, per_class=(2, 1, 1))
    return str(root)


def config(data_root, tmp_path, method, **kw) -> RunConfig:
    return RunConfig.of(method=method, dataset="eurosat", data_root=data_root, shots=1, cache_dir=None, progress=False,
                     runs_dir=str(tmp_path / "runs"), results=None, **kw)


def test_the_spec_is_frozen_and_complete():
    spec = resolve("kgcoop+dept")
    assert (spec.base, spec.plugin, spec.two_step, spec.trainable) == ("kgcoop", "dept", False, True)
    assert dict(spec.train) == {"epochs": 10, "batch_size": 4, "lr": 0.0035} and dict(spec.base_cfg) == {"weight": 2.0}
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.two_step = True
    with pytest.raises(TypeError):
        spec.train["epochs"] = 1  # read-only, not a copy that silently drifts
    dpc = resolve("coop+dpc")
    assert dpc.two_step and dpc.step1 == resolve("coop") and "cocoop" in dpc.refuses
    assert resolve("cocoop+dept").train["batch_size"] == 1  # the plug-in's per-base exception
    assert resolve("zeroshot").trainable is False and resolve("zeroshot").step1 is None


@pytest.mark.parametrize("method", ["zeroshot", "coop", "coop+dept", "coop+dpc"])
def test_one_resolution_per_run(method, resolutions, data_root, tiny_backbone, tmp_path):
    cfg = config(data_root, tmp_path, method, train={"epochs": 1}, base_train={"epochs": 1} if "dpc" in method else {})
    exp = Experiment.prepare(cfg, tiny_backbone)
    resolutions.clear()
    first = run(cfg, experiment=exp)
    assert resolutions == [method]  # training (both steps of coop+dpc), evaluation, recording
    resolutions.clear()
    again = run(cfg, experiment=exp)
    assert resolutions == [method] and (again.reused or method == "zeroshot")
    assert again.metrics == first.metrics


def test_the_cli_resolves_once_per_seed(resolutions, json_root, tiny_model_name, tmp_path, capsys):
    from dpclab.lab.cli import main

    args = ["train", "--method", "coop+dpc", "--dataset", "eurosat", "--data-root", str(json_root), "--model",
            tiny_model_name, "--pretrained", "random", "--shots", "1", "--device", "cpu", "--seeds", "1", "2",
            "--runs-dir", str(tmp_path / "runs"), "--cache-dir", str(tmp_path / "cache"), "--results",
            str(tmp_path / "r.csv"), "--no-progress", "--epochs", "1", "--base-train", "epochs=1"]
    assert main(args) == 0
    assert resolutions == ["coop+dpc", "coop+dpc"]
    out = capsys.readouterr().out
    assert out.count("step 1/2 coop: 1 epochs") == 2 and out.count("step 2/2 coop+dpc: 1 epochs") == 2


def test_run_executes_the_plan_it_is_given(monkeypatch, data_root, tiny_backbone, tmp_path):
    """The CLI prints ``plan_run``'s steps and passes them to ``run``: no second plan, the same run directories."""
    cfg = config(data_root, tmp_path, "coop+dpc", train={"epochs": 1}, base_train={"epochs": 1})
    exp = Experiment.prepare(cfg, tiny_backbone)
    steps = plan_run(cfg, exp)
    assert [(s.method, s.action, s.epochs) for s in steps] == [("coop", "train", 1), ("coop+dpc", "train", 1)]
    monkeypatch.setattr(dpclab.pipeline, "plan_run", lambda *a, **k: pytest.fail("run() planned again"))
    res = run(cfg, experiment=exp, plan=steps)
    assert res.run_dir == steps[-1].run_dir and steps[0].run_dir.joinpath("result.json").is_file()
    with pytest.raises(ValueError, match="plan is for 'coop\\+dpc' with other settings"):
        run(dataclasses.replace(cfg, seed=2), experiment=exp, plan=steps)


def test_one_function_decides_reuse_resume_refuse(data_root, tiny_backbone, tmp_path):
    """``run_action`` is what the plan shows and what the run does, for every state of a run directory."""
    cfg = config(data_root, tmp_path, "coop", train={"epochs": 2})
    exp = Experiment.prepare(cfg, tiny_backbone)
    (step,) = plan_run(cfg, exp)
    assert step.action == "train" and not step.run_dir.exists()
    from dpclab.train import fit

    method = resolve("coop").build(tiny_backbone, n_classes=len(exp.train_task.classnames), seed=1)
    fit(method, exp.train_examples("features"), exp.train_task, step.train, step.run_dir, step.fingerprint,
        stop_after=1)  # interrupted after one epoch
    assert (plan_run(cfg, exp)[0].action, plan_run(cfg, exp)[0].resume_epoch) == ("resume", 1)
    assert run_action(step.run_dir, "another configuration", "reuse") == ("refuse", 0)
    assert run_action(step.run_dir, step.full_fingerprint, "overwrite") == ("overwrite", 0)
    run(cfg, experiment=exp)
    assert plan_run(cfg, exp)[0].action == "reuse"
    assert plan_run(dataclasses.replace(cfg, if_exists="error"), exp)[0].action == "refuse"
    other = dataclasses.replace(cfg, if_exists="error")
    with pytest.raises(FileExistsError, match="already holds a finished run"):
        run(other, experiment=exp)
    assert plan_run(dataclasses.replace(cfg, if_exists="overwrite"), exp)[0].action == "overwrite"


# ------------------------------------------------------------------------------------------- one factory

#: the factories that ``resolve`` replaced
RETIRED = ("get_method", "parse_method", "build_method", "default_train")


def test_resolve_is_the_one_public_factory():
    """``resolve(name)`` and its ``.build`` are the only way to a method: no other factory in the package, and no
    module outside ``dpclab/methods`` reads the tables' entries (``METHODS[...]``, ``PLUGINS.items()``, ``spec.entry``);
    the names alone (``name in METHODS``) are public."""
    assert not any(hasattr(dpclab.methods, n) or hasattr(dpclab.methods.spec, n) or hasattr(dpclab.pipeline, n)
                   for n in RETIRED)
    root = Path(dpclab.__file__).resolve().parents[1]
    sources = [*root.glob("dpclab/**/*.py"), *root.glob("tests/*.py"), *root.glob("notebooks/*.ipynb"),
               *root.glob("docs/**/*.py")]
    called = re.compile(r"\b(" + "|".join(RETIRED) + r")\(")
    assert [str(p) for p in sources if p.name != "test_resolve.py" and called.search(p.read_text())] == []
    entry = re.compile(r"\b(METHODS|PLUGINS)(\[|\.items|\.values|\.get)|\.(plugin_)?entry\b")
    outside = [p for p in root.glob("dpclab/**/*.py") if "methods" not in p.relative_to(root / "dpclab").parts]
    assert [str(p) for p in outside if entry.search(p.read_text())] == []


def test_the_readers_of_the_table_go_through_resolve(monkeypatch):
    """The lab's table readers (which runs train, what a run costs, the notebooks' plan) ask ``resolve``: a pair
    that trains only its plug-in (``zeroshot+<plug-in>``) counts as trainable there too."""
    from dpclab.lab.plan import PlannedRun, needs_training
    from dpclab.lab.trainjobs import training_jobs

    monkeypatch.setitem(dpclab.methods.PLUGINS, "own", dataclasses.replace(dpclab.methods.PLUGINS["dept"],
                                                                           wraps_frozen=True))
    assert "zeroshot+own" in dpclab.methods.method_names() and resolve("zeroshot+own").trainable
    run_ = PlannedRun("01", "eurosat", "zeroshot+own", 1, (), "base", False, (), (), (), "zeroshot+own")
    assert needs_training(run_) and not needs_training(dataclasses.replace(run_, method="zeroshot"))
    jobs = training_jobs([(m, RunConfig(method=m, progress=False), False) for m in ("zeroshot", "zeroshot+own")])
    assert [j.label for j in jobs] == ["zeroshot+own"]


# ------------------------------------------------------------------------------------------ run values

def test_config_fields_declare_the_run_values_they_take():
    """``from_run("n_classes")`` marks a field the build fills with the number of training classes, whatever its
    name; a field merely called ``n_classes`` without it is left alone; an explicit value wins."""
    from dataclasses import dataclass, field

    from dpclab.methods import from_run
    from dpclab.methods.spec import make_config

    @dataclass
    class Config:
        #: rows of a classifier head (filled from the run)
        rows: int = from_run("n_classes")
        #: not declared: stays as given
        n_classes: int = 0
        #: unrelated
        width: int = field(default=3)

    assert (make_config(Config, {}, "toy", n_classes=7).rows, make_config(Config, {}, "toy", 7).n_classes) == (7, 0)
    assert make_config(Config, {"rows": 2}, "toy", n_classes=7).rows == 2
    assert resolve("coop").config({"csc": True}, n_classes=5).n_classes == 5  # CoOp's and DePT's declare it
    assert resolve("coop+dept").config(n_classes=5).n_classes == 5
    with pytest.raises(ValueError, match=r"from_run\('classes'\): a run provides \('n_classes',\)"):
        from_run("classes")
