"""The references' protocol rules (dpclab/protocol.py, docs/protocol.md): CoOp's epochs by shot count and its own
ImageNet rule, PromptKD's ImageNet batch from its maintainers (and the estimate pricing it), the transfer settings of
MaPLe and PromptSRC, DePT's own KgCoOp and MaPLe baselines in notebook 06's plan; every rule cites its source file
and line, and the embedded world's runs at 16 shots meet none of them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dpclab import protocol
from dpclab.methods.table import resolve
from dpclab.runconfig import RunConfig, step1_config, train_config


def _train_config(cfg):
    """The run's training settings under its resolved method."""
    return train_config(cfg, resolve(cfg.method))


DOC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text()


def _train(method: str, dataset: str = "eurosat", shots: int = 16, **train):
    return _train_config(RunConfig.of(method=method, dataset=dataset, shots=shots, train=train, progress=False))


@pytest.mark.parametrize("shots,epochs", [(1, 50), (2, 100), (3, 100), (4, 100), (8, 200), (16, 200), (0, 200)])
def test_coop_epochs_by_shot_count(shots, epochs):
    assert _train("coop", shots=shots).epochs == epochs
    assert _train("coop", "imagenet", shots).epochs == 50  # CoOp's own ImageNet rule, at every shot count
    assert _train("coop", shots=shots, epochs=7).epochs == 7  # an explicit setting still wins
    # step 1 of coop+dpc is a CoOp run; the rule is CoOp's alone (KgCoOp, DePT's CoOp baseline keep theirs)
    assert _train("coop+dpc", shots=shots).epochs == 20
    step1 = step1_config(RunConfig.of(method="coop+dpc", dataset="eurosat", shots=shots, progress=False),
                         resolve("coop+dpc"))
    assert train_config(step1, resolve(step1.method)).epochs == epochs
    assert _train("kgcoop", shots=shots).epochs == 100


def test_the_imagenet_rule_cites_coop_itself():
    (rule,) = [e for e in protocol.EXCEPTIONS if e.dataset == "imagenet" and e.method == "coop"]
    assert "COOP.md l.10" in rule.source and "KaiyangZhou/CoOp" in rule.source
    assert "as the DPC and DePT papers run it" not in rule.source + DOC


def test_promptkd_on_imagenet_takes_its_maintainers_batch_and_lr():
    kd = _train("promptkd", "imagenet")
    assert (kd.batch_size, kd.lr, kd.epochs) == (256, 0.16, 20)
    assert (_train("promptkd").batch_size, _train("promptkd").lr) == (8, 0.005)
    assert protocol.dataset_train("promptkd", "dtd") == {}  # the KD weight comment is documented, not applied


def test_the_estimate_prices_promptkd_on_imagenet_at_batch_256():
    from dpclab.data.shapes import DatasetShape
    from dpclab.lab.estimate.model import Curve, DeviceTimings, MethodTimings
    from dpclab.lab.estimate.price import project, run_train_config, step_cost
    from dpclab.lab.plan import PlannedRun

    curve = lambda y: Curve((1.0, 1000.0), (y, y))  # noqa: E731
    kd = MethodTimings("pixels", curve(0.1), curve(0.0), curve(0.0), batch_size=8)
    assert step_cost(kd, 500, 256) == pytest.approx(3.2) and step_cost(kd, 500, 8) == pytest.approx(0.1)
    feats = MethodTimings("features", curve(0.1), curve(0.0), curve(0.0), batch_size=32)
    assert step_cost(feats, 500, 4) == pytest.approx(0.1)  # a features step: its text encoding, whatever the batch
    timings = DeviceTimings(device="test", model="ViT-B-16", load=0.0, encode=0.0, decode_train=0.0,
                            decode_test=0.0, workers=0, methods={"promptkd": kd})
    run = PlannedRun("06", "imagenet", "promptkd", 1)
    assert run_train_config(run).batch_size == 256
    shape = DatasetShape("imagenet", 1000, 50_000, 1_281_167)
    (cost,) = [c for c in project([run], {"imagenet": shape}, timings).runs if c.run.method == "promptkd"]
    steps = shape.train // 256
    assert cost.train == pytest.approx(20 * steps * 3.2, rel=1e-6)  # 20 epochs of train/256 steps of 256 images


def test_transfer_settings_of_maple_and_promptsrc():
    from dpclab.transfer import source_config

    cfg = RunConfig.of(method="maple", dataset="imagenet", progress=False)
    for setting in ("cross_dataset", "domain_generalization"):
        src = source_config(cfg, setting)
        assert src.train_classes == "all" and src.train == {"epochs": 2, "lr": 0.0026}
        assert src.method_cfg == {"prompt_depth": 3}
        t = train_config(src, resolve(src.method))
        assert (t.epochs, t.lr, t.batch_size) == (2, 0.0026, 4)
    own = source_config(RunConfig.of(method="maple", dataset="imagenet", train={"epochs": 5},
                                  method_cfg={"prompt_depth": 9}, progress=False), "cross_dataset")
    assert own.train == {"epochs": 5, "lr": 0.0026} and own.method_cfg == {"prompt_depth": 9}  # the run's own win
    src = source_config(RunConfig.of(method="promptsrc", dataset="imagenet", progress=False), "cross_dataset")
    assert src.method_cfg == {"text_depth": 3, "vision_depth": 3, "gpa_mean": 6.0, "gpa_std": 10.0} and not src.train
    assert source_config(RunConfig.of(method="coop", dataset="imagenet", progress=False), "cross_dataset").train == {}
    assert source_config(cfg).train == {}  # no setting named: base-to-new defaults
    few = protocol.setting_rules("few_shot", "promptsrc", "dtd", applied_only=False)
    assert [(r.method_cfg["gpa_mean"], r.applied) for r in few] == [(45.0, False)]
    assert protocol.setting_overrides("few_shot", "promptsrc", "imagenet") == ({}, {})  # documented, not applied
    with pytest.raises(ValueError, match="setting must be one of"):
        protocol.setting_rules("b2n", "maple", "imagenet")


def test_every_rule_cites_a_file_and_line_and_is_in_the_docs():
    for rule in (*protocol.EXCEPTIONS, *protocol.SETTING_RULES):
        assert re.search(r"l\.\d+", rule.source) or "issue #10" in rule.source, rule
    for anchor in ("## Per-dataset exceptions", "## Transfer settings", "COOP.md` l.14-19",
                   "vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml` l.17-18", "issue #10",
                   "vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml` l.38-39", "`sple_coop.py` l.393, l.614-617",
                   "`sple_coop.py` l.689"):
        assert anchor in DOC, anchor


def test_the_embedded_worlds_runs_at_16_shots_meet_no_rule():
    from dpclab.data.downstream import WORLD_SPECS
    from dpclab.methods import method_names

    for dataset in WORLD_SPECS:
        for method in method_names():
            assert protocol.dataset_train(method, dataset, 16) == {}, (method, dataset)


def test_notebook_06_compares_each_dept_row_with_its_dept_setting_baseline():
    from dpclab.lab import paper_numbers as pn
    from dpclab.lab.plan import Scope, requests

    runs = {r.label: r for r in requests("06", Scope.from_parameters({}))}  # the embedded default
    for row, label, method in (("coop+dept", pn.DEPT_COOP_BASELINE, "coop"),
                               ("kgcoop+dept", pn.DEPT_KGCOOP_BASELINE, "kgcoop"),
                               ("maple+dept", pn.DEPT_MAPLE_BASELINE, "maple")):
        baseline = runs[label]
        assert pn.baseline_of(row) == label and baseline.method == method
        assert {k: v for k, v in baseline.train} == {"epochs": 10, "batch_size": 4, "lr": 0.0035}
    assert dict(runs[pn.DEPT_KGCOOP_BASELINE].method_cfg) == {"weight": 2.0}  # DePT's KgCoOp: W = 2
    assert not runs["kgcoop"].train and not runs["maple"].train  # the protocol-default rows stay
    assert "teacher_model" not in dict(runs["promptkd"].method_cfg)  # offline: no ViT-L/14 teacher
    real = {r.label: r for r in requests("06", Scope.from_parameters({"dataset": "eurosat", "pretrained": "openai",
                                                                      "seeds": "1"}))}
    kd = dict(real["promptkd"].method_cfg)
    assert kd["teacher_model"] == "ViT-L-14-quickgelu" and kd["teacher_train"] == {"batch_size": 8, "lr": 0.005}
    assert dict(real["promptkd+dpc"].base_method_cfg)["teacher_model"] == "ViT-L-14-quickgelu"
    hash(real["promptkd"].key)  # a dict option inside a run key stays hashable
