"""PromptKD (dpclab/methods/promptkd.py) and its plug-ins: the distillation loss by hand, the student's parts, the
teacher run and the transductive data through the pipeline, best-base-epoch selection, one fit in every precision,
and PromptKD+DPC with ω_n = 0 giving PromptKD's new-class predictions exactly. The contract tests over the method
table (tests/test_contract.py) cover promptkd, promptkd+dpc and promptkd+dept automatically."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dpclab.backbones import load_clip
from dpclab.methods import METHODS, resolve
from dpclab.methods.base import Task, trainable_parameters
from dpclab.methods.dpc import DPC, DPCConfig
from dpclab.methods.promptkd import PromptKD, PromptKDConfig, distillation_loss
from dpclab.pipeline import plan_run, run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.precision import PRECISIONS, autocast, input_dtype
from dpclab.train import Examples, TrainConfig, fit
from dpclab.vision import encode_images

TASK = Task(("cat", "dog", "red car", "tree"), "a photo of a {}.", "all")


def test_distillation_loss_equals_a_hand_computation():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    t = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
    for tau in (1.0, 2.0):
        total = 0.0
        for b in range(2):
            ps = [math.exp(v / tau) for v in s[b].tolist()]
            pt = [math.exp(v / tau) for v in t[b].tolist()]
            ps = [v / sum(ps) for v in ps]
            pt = [v / sum(pt) for v in pt]
            total += sum(q * math.log(q / p) for p, q in zip(ps, pt))  # KL(teacher || student)
        expected = tau * tau * total / (2 * 3)
        assert distillation_loss(s, t, tau).item() == pytest.approx(expected, rel=1e-6)
        assert distillation_loss(s, t, tau, "batchmean").item() == pytest.approx(expected * 3, rel=1e-6)
    assert distillation_loss(t, t).item() == pytest.approx(0.0, abs=1e-7)


def test_the_student_is_a_prompted_image_encoder_with_a_projector(tiny_backbone):
    kd = resolve("promptkd").build(tiny_backbone, seed=0)
    params = trainable_parameters(kd)
    layers = len(tiny_backbone.model.visual.transformer.resblocks)
    width = tiny_backbone.model.visual.class_embedding.shape[-1]
    d = tiny_backbone.model.text_projection.shape[-1]
    prompts = {n for n in params if n.startswith("vision_prompts.")}
    assert len(prompts) == layers and all(params[n].shape == (4, width) for n in prompts)  # depth 9 capped
    assert set(params) - prompts == {"projector.fc1.weight", "projector.fc1.bias", "projector.bn.weight",
                                     "projector.bn.bias", "projector.fc2.weight", "projector.fc2.bias"}
    assert not any("ctx" in n or "text" in n for n in params)  # no text prompt
    assert 0.01 < torch.cat([params[n].flatten() for n in prompts]).std() < 0.03  # N(0, 0.02)
    # logits = student scale * normalised projected image feature . teacher text features (cached once)
    x = torch.randn(3, 3, 32, 32)
    kd.eval()
    with torch.no_grad():
        out = kd(x, TASK)
        img = kd.projector(encode_images(kd.clip, x, list(kd.vision_prompts)))
        txt = F.normalize(kd.teacher.task_text_features(TASK, None), dim=-1)
    assert torch.allclose(out.logits, kd.clip.logit_scale.exp() * F.normalize(img, dim=-1) @ txt.t(), atol=1e-5)
    assert kd.teacher_text(TASK) is kd.teacher_text(TASK)
    base = Task(TASK.classnames[:2], TASK.template, "base")
    assert torch.allclose(kd.teacher_text(base), kd.teacher_text(TASK)[:2], atol=1e-6)  # rows are per class


def test_loss_is_the_weighted_distillation_alone(tiny_backbone):
    kd = resolve("promptkd").build(tiny_backbone, {"kd_weight": 3.0, "temperature": 2.0}, seed=0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss, logs = kd.loss(x, y, TASK)
    kd.train()
    s = kd(x, TASK).logits
    expected = 3.0 * distillation_loss(s, kd.teacher_logits(x, TASK), 2.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5) and "ce" not in logs
    loss2, _ = kd.loss(x, torch.tensor([3, 2, 1, 0]), TASK)  # the labels are not used
    assert loss2.item() == pytest.approx(loss.item(), rel=1e-5)


def test_options_are_checked():
    for bad in ({"kl_norm": "mean"}, {"select": "best"}, {"temperature": 0}, {"teacher_method": "coop+dpc"},
                {"teacher_shots": 0}):
        with pytest.raises(ValueError, match="PromptKD|teacher"):
            PromptKDConfig(**bad)
    with pytest.raises(ValueError, match="prime_deep_init"):
        DPCConfig(prime_deep_init="zero")


def test_dpc_on_promptkd_scores_with_the_teacher_and_can_start_deep_prompts_random(tiny_backbone):
    kd = resolve("promptkd").build(tiny_backbone, seed=0)
    x = torch.randn(4, 3, 32, 32)
    dpc = DPC(kd, DPCConfig(prime_deep_init="random"))
    assert torch.equal(dpc.frozen_logits(x, TASK), kd.teacher_logits(x, TASK))
    prime, frozen = dpc.prime(), dpc.frozen()
    deep = set(kd.deep_prompt_names())
    assert deep and all(not torch.equal(prime[n], frozen[n]) for n in deep)
    assert all(torch.equal(prime[n], frozen[n]) for n in prime if n not in deep)
    assert set(dpc.stat_names) == {"projector.bn.running_mean", "projector.bn.running_var",
                                   "projector.bn.num_batches_tracked"}


@pytest.fixture(scope="module")
def embedded():
    return {p: load_clip("dpclab-tiny", "embedded", "cpu", precision=p) for p in PRECISIONS}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", ["promptkd", "promptkd+dpc"])
def test_one_fit_in_every_precision(embedded, name, precision):
    bb = embedded[precision]
    base = resolve("promptkd").build(bb, seed=1)
    method = resolve(name).build(bb, base_method=base, seed=1) if name == "promptkd+dpc" else base
    labels = torch.arange(4).repeat(3)
    x = torch.randn(len(labels), 3, bb.image_size, bb.image_size, generator=torch.Generator().manual_seed(0))
    x = x.to(input_dtype(precision))
    before = {n: p.detach().clone() for n, p in trainable_parameters(method).items()}
    hist = fit(method, Examples(labels, features=lambda v: x), TASK,
               TrainConfig(epochs=2, batch_size=4, lr=0.01, warmup_epochs=1, progress=False), precision=precision)
    assert all(math.isfinite(h["loss"]) for h in hist)
    after = trainable_parameters(method)
    assert any(not torch.equal(before[n], p) for n, p in after.items())
    prompts = {p.dtype for n, p in after.items() if "vision_prompts" in n}
    assert prompts == {torch.float16 if precision == "fp16" else torch.float32}
    with torch.no_grad(), autocast(precision, torch.device("cpu")):
        assert torch.isfinite(method(x[:4], Task(TASK.classnames, split="new")).logits.float()).all()


# ------------------------------------------------------------------------------------- through the pipeline

@pytest.fixture
def common(json_root, tmp_path, tiny_model_name):
    return dict(dataset="eurosat", data_root=str(json_root), model=tiny_model_name, pretrained="random",
                shots=2, device="cpu", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                results=None, progress=False)


def test_pipeline_trains_the_teacher_then_the_student_on_every_image_unlabeled(common):
    cfg = RunConfig.of(method="promptkd", train={"epochs": 1}, method_cfg={"teacher_epochs": 1}, **common)
    exp = Experiment.prepare(cfg)
    steps = plan_run(cfg, exp)
    assert [(s.method, s.action) for s in steps] == [("promptsrc", "train"), ("promptkd", "train")]
    assert "shots16-" in str(steps[0].run_dir) and "shots0-" in str(steps[1].run_dir)
    result = run(cfg)
    assert result.experiment.train_task.split == "all"  # base + new classes
    assert len(result.experiment.train_split.train) == 5 * 20  # every training image of the fixture
    assert result.method.teacher_kind == "PromptSRC"
    again = run(cfg)  # the teacher and the student are reused
    assert again.reused and again.metrics == result.metrics
    assert [s.action for s in plan_run(cfg, exp)] == ["reuse", "reuse"]


def test_best_base_epoch_selection(common):
    cfg = RunConfig.of(method="promptkd", train={"epochs": 3, "lr": 0.05}, method_cfg={"select": "best_base",
                    "teacher_method": "zeroshot"}, **common)
    result = run(cfg)
    accs = [h["base_test"] for h in result.history]
    best = max(range(3), key=lambda e: (accs[e], -e))
    assert result.history[-1]["best_epoch"] == best
    assert result.metrics["base"] == pytest.approx(accs[best])


def test_promptkd_dpc_with_omega_n_zero_gives_promptkd_new_exactly(common):
    kd = run(RunConfig.of(method="promptkd", train={"epochs": 1}, method_cfg={"teacher_method": "zeroshot"}, **common))
    cfg = RunConfig.of(method="promptkd+dpc", train={"epochs": 2, "lr": 0.05}, base_train={"epochs": 1},
                    base_method_cfg={"teacher_method": "zeroshot"}, **common)
    dpc = run(cfg)
    assert dpc.metrics["new"] == kd.metrics["new"]
    assert dpc.experiment.train_task.split == "base"  # step 2: labeled few-shot base classes
    ex = dpc.experiment.test_examples("new", "pixels")
    x = next(ex.ordered_batches(100))[0]
    with torch.no_grad():
        assert torch.equal(dpc.method(x, dpc.experiment.tasks["new"]).logits,
                           kd.method(x, kd.experiment.tasks["new"]).logits)
    prime = dpc.method.prime_stats()["projector.bn.running_mean"]
    assert not torch.equal(prime, kd.method.projector.bn.running_mean)  # P''s statistics moved, P's did not


def test_promptkd_is_in_the_table_with_its_protocol():
    spec = METHODS["promptkd"]
    assert spec.cls is PromptKD and spec.train == {"epochs": 20, "batch_size": 8, "lr": 0.005}
    assert spec.data == {"shots": 0, "train_classes": "all"} and spec.teacher is not None


def test_promptkd_dept_adds_the_distillation_term_to_depts_loss(tiny_backbone):
    """DePT on PromptKD: λ·CE(CAT head) + (1-λ)·CE(image-text) + the base's own weighted terms (PromptKD's KD)."""
    task = Task(TASK.classnames, split="base")
    method = resolve("promptkd+dept").build(tiny_backbone, n_classes=4, seed=0)
    x, y = torch.randn(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    loss, logs = method.loss(x, y, task)
    with torch.no_grad():
        out = method.base(x, task)
        cat_logits, cat_y = method.cat_train_logits(out, y)
        kd = distillation_loss(out.logits, method.base.teacher_logits(x, task))
    lam = method.cfg.lam
    expected = lam * F.cross_entropy(cat_logits, cat_y) + (1 - lam) * F.cross_entropy(out.logits, y) + 1000 * kd
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_quick_plans_give_the_teacher_the_quick_epochs_of_its_own_row():
    from dpclab.lab.plan import report_plan

    rows = {r.method: r for r in report_plan({"quick": True}, notebooks=("06",))}
    teacher_epochs = dict(rows["promptsrc"].train)["epochs"]
    assert dict(rows["promptkd"].method_cfg)["teacher_epochs"] == teacher_epochs
    assert dict(rows["promptkd+dpc"].base_method_cfg)["teacher_epochs"] == teacher_epochs
    full = {r.method: r for r in report_plan({"quick": False}, notebooks=("06",))}
    assert "teacher_epochs" not in dict(full["promptkd"].method_cfg)
