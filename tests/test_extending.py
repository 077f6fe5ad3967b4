"""docs/extending.md, checked: methods and plug-ins added the way the guide says (a class here, one plain dict entry
in the tables via ``monkeypatch.setitem``, nothing imported for its side effects) pass the contract tests, with every
plug-in, and run through the pipeline untouched: a toy prompt method, a toy ProGrad (gradient projection through
``step``, nothing stashed on ``self``), a toy teacher-fed method (planned in the notebooks' quick mode too), a toy
plug-in trained jointly and a toy CLIP-Adapter on zero-shot CLIP (``zeroshot+adapter``). Every file the guide lists
exists, and the docs' copies of the method table match dpclab/methods/table.py."""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import write_json_dataset
from dpclab.methods import METHODS, PLUGINS, MethodEntry, PluginEntry, Teacher, method_names, resolve
from dpclab.methods.base import (Loss, Output, Plugin, PromptMethod, Task, cosine_logits, frozen_result,
                                 trainable_parameters)
from dpclab.methods.doc_tables import DOC_TABLES, mismatches
from dpclab.pipeline import plan_run, run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.text import encode_texts
from test_contract import PER_NAME, check_loss, run_contract

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "extending.md"


@dataclass
class ToyConfig:
    #: standard deviation of the random initial text shift
    init_std: float = 0.02
    #: weight of the L2 penalty on the shift (a loss term of its own: plug-ins see it through ``loss_terms``)
    l2: float = 0.1


class Toy(PromptMethod):
    """Zero-shot text features of the task's template plus one learned shift vector shared by all classes."""

    input_kind = "features"

    def __init__(self, backbone, cfg: ToyConfig | None = None):
        super().__init__(backbone.model, backbone.tokenizer, cfg or ToyConfig())
        dim = self.clip.text_projection.shape[-1]
        device = self.clip.logit_scale.device
        self.shift = nn.Parameter(torch.randn(dim, device=device) * self.cfg.init_std)

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        texts = [task.template.format(c) for c in task.classnames]
        fixed = frozen_result(self.clip, ("toy", task.classnames, task.template),
                              lambda: encode_texts(self.clip, self.tokenizer, texts))
        return fixed.to(self.shift.dtype) + self.shift

    def loss_terms(self, out, x, y, task):
        return {"l2": (self.cfg.l2, (self.shift.float() ** 2).sum())}


@dataclass
class ProGradConfig(ToyConfig):
    #: how much of the conflicting component of the cross-entropy gradient is removed (ProGrad: 1.0)
    lam: float = 1.0


class ToyProGrad(Toy):
    """ProGrad's update on the toy prompt: the cross-entropy gradient, with its component against the gradient of
    ``KL(zero-shot || model)`` removed when the two conflict. The KL is a term of weight 0 (the update reads it, the
    total does not add it); ``step`` reads both terms from the :class:`Loss` it receives."""

    def __init__(self, backbone, cfg: ProGradConfig | None = None):
        super().__init__(backbone, cfg or ProGradConfig())

    def loss_terms(self, out, x, y, task):
        zero_shot = frozen_result(self.clip, ("toy", task.classnames, task.template),
                                  lambda: encode_texts(self.clip, self.tokenizer,
                                                       [task.template.format(c) for c in task.classnames]))
        with torch.no_grad():
            guide = self.clip.logit_scale.exp() * F.normalize(out.image_features, dim=-1) @ F.normalize(zero_shot,
                                                                                                     dim=-1).t()
        kl = F.kl_div(F.log_softmax(out.logits, -1), F.log_softmax(guide, -1), log_target=True, reduction="batchmean")
        return {"kl": (0.0, kl)}

    def step(self, loss: Loss, optimizer, scaler) -> None:
        params = list(trainable_parameters(self).values())
        g_ce = torch.autograd.grad(loss.terms["ce"][1], params, retain_graph=True)
        g_kl = torch.autograd.grad(loss.terms["kl"][1], params)
        optimizer.zero_grad(set_to_none=True)
        for p, g in zip(params, prograd(g_ce, g_kl, self.cfg.lam)):
            p.grad = g
        optimizer.step()


def prograd(g_ce, g_kl, lam: float) -> list[torch.Tensor]:
    """``g_ce - lam * (g_ce·g_kl / |g_kl|²) g_kl`` where ``g_ce·g_kl < 0``, else ``g_ce`` (over all tensors as one
    vector)."""
    dot = sum((a * b).sum() for a, b in zip(g_ce, g_kl))
    if dot >= 0:
        return list(g_ce)
    norm = sum((b * b).sum() for b in g_kl)
    return [a - lam * dot / norm * b for a, b in zip(g_ce, g_kl)]


@dataclass
class StudentConfig(ToyConfig):
    #: the method of the teacher's run (a plain method name)
    guide: str = "toy"
    #: the teacher's epochs; None = its protocol default (the notebooks' quick mode fills it)
    guide_epochs: int | None = None


class ToyStudent(Toy):
    """A toy distillation student: built on a tuned teacher (the pipeline runs the teacher first), its text features
    are the teacher's plus its own shift."""

    def __init__(self, backbone, cfg: StudentConfig | None = None, teacher: PromptMethod | None = None):
        super().__init__(backbone, cfg or StudentConfig())
        self.teacher_run = (teacher,)  # not a submodule: the teacher is not part of the student's learned state

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher_run[0]
        if teacher is None:
            return super().task_text_features(task, image_features)
        with torch.no_grad():
            fixed = teacher.task_text_features(task, image_features)
        return fixed + self.shift


def toy_teacher(cfg: RunConfig, method_cfg: StudentConfig) -> RunConfig:
    """The student's teacher run: ``method_cfg.guide`` on the run's dataset and seed, few-shot base classes."""
    epochs = {} if method_cfg.guide_epochs is None else {"epochs": method_cfg.guide_epochs}
    return cfg.replace(method=method_cfg.guide, shots=1, train_classes="base", method_cfg={}, base_method_cfg={},
                       base_train={}, train=epochs)


TOY_TEACHER = Teacher(toy_teacher, method_option="guide", epochs_option="guide_epochs")


@dataclass
class TemperatureConfig:
    #: initial log-temperature multiplier of the base's logits
    init: float = 0.0


class Temperature(Plugin):
    """A toy plug-in trained jointly with its base: a learned multiplier ``exp(t)`` on the base's logits. It defines
    ``forward`` only: :class:`Plugin` forwards the base's ``loss_terms`` and hooks, and ``param_groups`` adds
    ``log_t`` to the base's groups."""

    def __init__(self, base: PromptMethod, cfg: TemperatureConfig | None = None):
        super().__init__(base, cfg or TemperatureConfig())
        self.log_t = nn.Parameter(torch.full((), self.cfg.init, device=base.clip.logit_scale.device))

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        out = self.base(x, task)
        return Output(out.logits * self.log_t.exp(), out.image_features, out.text_features, out.extras)


@dataclass
class AdapterConfig:
    #: residual ratio: image features become ``ratio * adapter(f) + (1 - ratio) * f`` (CLIP-Adapter: 0.2)
    ratio: float = 0.2
    #: hidden width as a fraction of the feature width (CLIP-Adapter: 1/4)
    reduction: int = 4


class Adapter(Plugin):
    """A toy CLIP-Adapter: a residual two-layer MLP on the image features; it trains parameters of its own, so it
    also wraps zero-shot CLIP (``zeroshot+adapter``, :attr:`PluginEntry.wraps_frozen`)."""

    def __init__(self, base: PromptMethod, cfg: AdapterConfig | None = None):
        super().__init__(base, cfg or AdapterConfig())
        dim = base.clip.text_projection.shape[-1]
        self.adapter = nn.Sequential(nn.Linear(dim, dim // self.cfg.reduction), nn.ReLU(),
                                     nn.Linear(dim // self.cfg.reduction, dim)).to(base.clip.logit_scale.device)

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        out = self.base(x, task)
        img = out.image_features
        img = self.cfg.ratio * self.adapter(img.to(self.adapter[0].weight.dtype)) + (1 - self.cfg.ratio) * img
        txt = out.text_features
        return Output(cosine_logits(img, txt, self.clip.logit_scale.exp()), img, txt, out.extras)


@pytest.fixture
def registered(monkeypatch):
    """The toy method and plug-in as a newcomer adds them: one plain dict entry each (docs/extending.md)."""
    monkeypatch.setitem(METHODS, "toy", MethodEntry(Toy, ToyConfig, {"epochs": 2, "batch_size": 2, "lr": 0.01}))
    monkeypatch.setitem(METHODS, "toykd", MethodEntry(ToyStudent, StudentConfig, {"epochs": 1, "batch_size": 2,
                                                                                  "lr": 0.01},
                                                      data={"train_classes": "all"}, teacher=TOY_TEACHER))
    monkeypatch.setitem(METHODS, "toyprograd", MethodEntry(ToyProGrad, ProGradConfig, {"epochs": 1, "batch_size": 2,
                                                                                       "lr": 0.01}))
    monkeypatch.setitem(PLUGINS, "temp", PluginEntry(Temperature, TemperatureConfig, {"epochs": 1, "lr": 0.01},
                                                     refuses={"cocoop": "a toy refusal"}))
    monkeypatch.setitem(PLUGINS, "adapter", PluginEntry(Adapter, AdapterConfig, {"epochs": 2, "batch_size": 2,
                                                                                  "lr": 0.01}, wraps_frozen=True))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("extending_data")
    write_json_dataset(root, n_classes=6, per_class=(2, 1, 1))
    return str(root)


@pytest.fixture(scope="module")
def experiment(data_root, tiny_backbone) -> Experiment:
    cfg = RunConfig.of(dataset="eurosat", data_root=data_root, shots=1, cache_dir=None, progress=False)
    return Experiment.prepare(cfg, tiny_backbone)


NEW_NAMES = ["toy", "toy+dpc", "toy+dept", "toy+temp", "coop+temp", "kgcoop+temp", "toykd", "toykd+dpc",
             "toyprograd", "zeroshot+adapter", "coop+adapter"]


def test_the_tables_admit_the_new_names(registered):
    names = method_names()
    assert set(NEW_NAMES) <= set(names) and "cocoop+temp" not in names
    # zero-shot CLIP trains nothing: only a plug-in that trains parameters of its own wraps it
    assert "zeroshot+temp" not in names and "zeroshot+dpc" not in names and resolve("zeroshot+adapter").trainable
    with pytest.raises(ValueError, match="'temp' cannot wrap 'zeroshot': 'zeroshot' trains nothing"):
        resolve("zeroshot+temp")
    assert resolve("toykd").teacher is TOY_TEACHER and resolve("toykd+dpc").teacher is None  # step 1's, not step 2's
    assert dict(resolve("toykd").data) == {"train_classes": "all"} and not resolve("toykd+dept").data
    spec = resolve("toy+dpc")
    assert spec.two_step and spec.step1.name == "toy" and dict(spec.step1.train) == {"epochs": 2, "batch_size": 2,
                                                                                     "lr": 0.01}
    with pytest.raises(ValueError, match="'temp' cannot wrap 'cocoop': a toy refusal"):
        resolve("cocoop+temp")


@pytest.mark.parametrize("name", NEW_NAMES)
def test_the_contract_tests_pass_on_a_method_added_from_a_test_module(name, registered, tiny_backbone, experiment,
                                                                       tmp_path):
    ran = run_contract(name, tiny_backbone, experiment, tmp_path)
    assert len(ran) == len(PER_NAME)


def test_a_new_method_runs_through_the_pipeline_untouched(registered, data_root, experiment, tmp_path):
    """``toy+dpc`` in two steps and ``toy+dept`` jointly, planned and run by the unchanged pipeline."""
    for name in ("toy+dpc", "toy+dept"):
        cfg = RunConfig.of(method=name, dataset="eurosat", data_root=data_root, shots=1, cache_dir=None, progress=False,
                        runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 1},
                        base_train={"epochs": 1} if name == "toy+dpc" else {})
        steps = plan_run(cfg, experiment)
        assert [s.method for s in steps] == (["toy", "toy+dpc"] if name == "toy+dpc" else ["toy+dept"])
        res = run(cfg, experiment=experiment, plan=steps)
        assert set(res.metrics) == {"base", "new", "hm"} and (res.run_dir / "result.json").is_file()
        assert [s.action for s in plan_run(cfg, experiment)] == ["reuse"] * len(steps)


def test_a_method_built_on_a_teacher_runs_its_teacher_first(registered, data_root, experiment, tmp_path):
    """``toykd``: the table's ``teacher`` and ``data`` alone make the pipeline plan the teacher's run, feed its tuned
    method to the student, and train the student on its protocol's data (all classes); under DPC the teacher feeds
    step 1 and step 1 feeds step 2."""
    from dpclab.pipeline import effective_epochs
    from dpclab.methods.base import learned_state

    cfg = RunConfig.of(method="toykd+dpc", dataset="eurosat", data_root=data_root, shots=1, cache_dir=None,
                    progress=False, runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 1},
                    base_train={"epochs": 1}, base_method_cfg={"guide_epochs": 1})
    steps = plan_run(cfg, experiment)
    assert [(s.method, s.feeds, s.cfg.train_classes) for s in steps] == [
        ("toy", "teacher", "base"), ("toykd", "base_method", "all"), ("toykd+dpc", None, "base")]
    assert steps[1].experiment is not None and steps[0].experiment is None and steps[2].experiment is None
    assert effective_epochs(cfg) == {"epochs": 1, "step1_epochs": 1, "teacher_epochs": 1}
    res = run(cfg, experiment=experiment, plan=steps)
    teacher = res.method.base.teacher_run[0]
    saved = torch.load(steps[0].run_dir / "model.pt", weights_only=True)["state"]
    assert all(torch.equal(v, saved[k]) for k, v in learned_state(teacher).items())
    assert [s.action for s in plan_run(cfg, experiment)] == ["reuse"] * 3


TASK = Task(("cat", "dog", "red car", "tree"), "a photo of a {}.", "base", "eurosat")


def test_a_toy_prograd_projects_the_gradient_in_step_with_nothing_stashed_on_self(tiny_backbone):
    """ProGrad through the contract: ``loss`` returns the KL guide as a named term of weight 0, ``step`` receives it
    and removes the conflicting component of the cross-entropy gradient; the method object keeps no batch state."""
    method = ToyProGrad(tiny_backbone, ProGradConfig(init_std=0.5))
    x = torch.randn(4, 32, generator=torch.Generator().manual_seed(0))
    attributes = dict(vars(method))

    def gradients(y):
        out = method(x, TASK)
        ce = F.cross_entropy(out.logits, y)
        kl = method.loss_terms(out, x, y, TASK)["kl"][1]
        return (torch.autograd.grad(ce, method.shift, retain_graph=True)[0], torch.autograd.grad(kl, method.shift)[0])

    # labels whose cross-entropy gradient conflicts with the guide's (it pulls away from zero-shot CLIP)
    y = next(y for y in (torch.randperm(4, generator=torch.Generator().manual_seed(s)) for s in range(20))
             if (lambda g: (g[0] * g[1]).sum() < 0)(gradients(y)))
    g_ce, g_kl = gradients(y)
    loss = check_loss(method, x, y, TASK)
    assert set(loss.terms) == {"ce", "kl"} and loss.terms["kl"][0] == 0.0 and torch.equal(loss.total,
                                                                                         loss.terms["ce"][1])
    assert vars(method).keys() == attributes.keys() and all(vars(method)[k] is v for k, v in attributes.items())
    before = method.shift.detach().clone()
    method.step(loss, torch.optim.SGD([method.shift], lr=0.1), None)
    moved = method.shift.detach() - before
    projected = g_ce - (g_ce * g_kl).sum() / (g_kl * g_kl).sum() * g_kl
    assert torch.allclose(moved, -0.1 * projected, atol=1e-6) and not torch.allclose(moved, -0.1 * g_ce, atol=1e-6)
    assert abs(float((moved * g_kl).sum())) < 1e-6  # the update no longer works against the guide


def test_a_teacher_fed_method_is_planned_in_quick_mode(registered):
    """The notebooks' quick mode shortens a teacher's run through the option the table entry names (``guide_epochs``
    here, ``teacher_epochs`` for PromptKD): a teacher-fed method added as the guide says is planned like PromptKD."""
    from dpclab.lab.plan import Scope, requests

    scope = Scope.from_parameters({"quick": True})
    runs = {r.method: r for r in requests("06", scope)}  # notebook 06 reports every method of the installation
    assert dict(runs["toykd"].method_cfg) == {"guide_epochs": scope.epochs_for(resolve("toy").train["epochs"])}
    assert dict(runs["promptkd"].method_cfg)["teacher_epochs"] == scope.epochs_for(resolve("promptsrc").train["epochs"])
    assert resolve("toykd").teacher_epochs_option({"guide": "coop"}) == ("coop", "guide_epochs")
    assert resolve("toykd+dpc").teacher_epochs_option() == ("toy", "guide_epochs")  # its step 1's teacher


def test_a_plugin_that_trains_its_own_parameters_wraps_zero_shot_clip(registered, data_root, experiment, tmp_path):
    """``zeroshot+adapter``: CLIP-Adapter on zero-shot CLIP, planned as one trained run; only the adapter trains."""
    cfg = RunConfig.of(method="zeroshot+adapter", dataset="eurosat", data_root=data_root, shots=1, cache_dir=None,
                    progress=False, runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 1})
    steps = plan_run(cfg, experiment)
    assert [(s.method, s.action) for s in steps] == [("zeroshot+adapter", "train")]
    res = run(cfg, experiment=experiment, plan=steps)
    assert len(res.history) == 1 and set(trainable_parameters(res.method)) == {
        "adapter.0.weight", "adapter.0.bias", "adapter.2.weight", "adapter.2.bias"}
    assert [s.action for s in plan_run(cfg, experiment)] == ["reuse"]


def test_plugin_parameters_follow_the_run_precision(registered, tiny_backbone):
    """fp16: a plug-in's own parameters are half like its base's prompts, except those it declares float32 (DePT's
    CAT head)."""
    half = dataclasses.replace(tiny_backbone, precision="fp16")
    temp = resolve("coop+temp").build(half, seed=0)
    assert temp.log_t.dtype == torch.float16 and temp.base.ctx.dtype == torch.float16
    adapter = resolve("zeroshot+adapter").build(half, seed=0)
    assert {p.dtype for p in trainable_parameters(adapter).values()} == {torch.float16}
    dept = resolve("coop+dept").build(half, n_classes=4, seed=0)
    assert dept.base.ctx.dtype == torch.float16
    assert {p.dtype for n, p in trainable_parameters(dept).items() if not n.startswith("base.")} == {torch.float32}
    assert resolve("coop+temp").build(tiny_backbone, seed=0).log_t.dtype == torch.float32


@pytest.mark.parametrize("doc", sorted(DOC_TABLES))
def test_the_docs_copies_of_the_method_table_match_it(doc, registered, monkeypatch):
    """README's methods table and docs/protocol.md's hyperparameters: the table's names and training defaults. A
    changed default or a method added to the table without its docs row fails here, naming the row."""
    text, header = (ROOT / doc).read_text(), DOC_TABLES[doc]
    assert "toy: missing from the docs table" in mismatches(text, header)  # the toy methods registered above
    for name in ("toy", "toykd", "toyprograd"):
        monkeypatch.delitem(METHODS, name)
    for name in ("temp", "adapter"):
        monkeypatch.delitem(PLUGINS, name)
    assert mismatches(text, header) == []
    changed = dataclasses.replace(METHODS["coop"], train={**METHODS["coop"].train, "lr": 0.004})
    monkeypatch.setitem(METHODS, "coop", changed)
    assert mismatches(text, header) == ["coop: the docs say 200 / 32 / 0.002, dpclab/methods/table.py 200 / 32 / 0.004"]


# ----------------------------------------------------------------------------------------------- the guide


def guide_files(section: str) -> list[str]:
    """The backticked paths of the "Files to touch" list under ``## <section>`` of docs/extending.md."""
    text = GUIDE.read_text()
    body = text.split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    files = body.split("Files to touch:", 1)[1].split("\n\n", 2)[1]
    return re.findall(r"^- `([^`]+)`", files, flags=re.M)


@pytest.mark.parametrize("section,placeholder", [("Add a method", "<name>"), ("Add a plug-in", "<plugin>")])
def test_the_guide_lists_the_files_to_touch_and_they_exist(section, placeholder):
    files = guide_files(section)
    assert files[:2] == [f"dpclab/methods/{placeholder}.py", "dpclab/methods/table.py"]
    for f in files:
        path = ROOT / f
        assert (path.parent if placeholder in f else path).exists(), f
    table = (ROOT / "dpclab/methods/table.py").read_text()
    assert "METHODS: dict[str, MethodEntry] = {" in table and "PLUGINS: dict[str, PluginEntry] = {" in table
    # the file of every method (and plug-in) in the tables is dpclab/methods/<its module>.py, as the guide says
    for entry in (*METHODS.values(), *PLUGINS.values()):
        assert entry.cls.__module__.startswith("dpclab.methods.")
        assert (ROOT / "dpclab" / "methods" / (entry.cls.__module__.rpartition(".")[2] + ".py")).is_file()
