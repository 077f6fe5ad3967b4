"""docs/extending.md, checked: a method and a plug-in added the way the guide says (a class here, one plain dict entry
in the tables via ``monkeypatch.setitem``, nothing imported for its side effects) pass the contract tests, with every
plug-in, and run through the pipeline untouched; every file the guide lists exists."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from conftest import write_json_dataset
from dpclab.methods import METHODS, PLUGINS, MethodEntry, PluginEntry, method_names, resolve
from dpclab.methods.base import Output, Plugin, PromptMethod, Task, frozen_result
from dpclab.pipeline import Experiment, RunConfig, plan_run, run
from dpclab.text import encode_texts
from test_contract import run_contract

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


class ToyStudent(Toy):
    """A toy distillation student: built on a tuned teacher (the pipeline runs the teacher first), its text features
    are the teacher's plus its own shift."""

    def __init__(self, backbone, cfg: ToyConfig | None = None, teacher: PromptMethod | None = None):
        super().__init__(backbone, cfg)
        self.teacher_run = (teacher,)  # not a submodule: the teacher is not part of the student's learned state

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        teacher = self.teacher_run[0]
        if teacher is None:
            return super().task_text_features(task, image_features)
        with torch.no_grad():
            fixed = teacher.task_text_features(task, image_features)
        return fixed + self.shift


def toy_teacher(cfg: RunConfig, method_cfg: ToyConfig) -> RunConfig:
    """The student's teacher run: the toy method on the run's dataset and seed, few-shot base classes."""
    return cfg.replace(method="toy", shots=1, train_classes="base", method_cfg={}, base_method_cfg={},
                       base_train={}, train={"epochs": 1})


@dataclass
class TemperatureConfig:
    #: initial log-temperature multiplier of the base's logits
    init: float = 0.0


class Temperature(Plugin):
    """A toy plug-in trained jointly with its base: a learned multiplier ``exp(t)`` on the base's logits."""

    def __init__(self, base: PromptMethod, cfg: TemperatureConfig | None = None):
        super().__init__(base, cfg or TemperatureConfig())
        self.log_t = nn.Parameter(torch.full((), self.cfg.init, device=base.clip.logit_scale.device))

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        out = self.base(x, task)
        return Output(out.logits * self.log_t.exp(), out.image_features, out.text_features, out.extras)

    def loss_terms(self, out, x, y, task):
        return self.base.loss_terms(out, x, y, task)  # the base's own terms, through the contract

    def param_groups(self, lr: float) -> list[dict]:
        return [*self.base.param_groups(lr), {"params": [self.log_t], "lr": lr}]


@pytest.fixture
def registered(monkeypatch):
    """The toy method and plug-in as a newcomer adds them: one plain dict entry each (docs/extending.md)."""
    monkeypatch.setitem(METHODS, "toy", MethodEntry(Toy, ToyConfig, {"epochs": 2, "batch_size": 2, "lr": 0.01}))
    monkeypatch.setitem(METHODS, "toykd", MethodEntry(ToyStudent, ToyConfig, {"epochs": 1, "batch_size": 2, "lr": 0.01},
                                                      data={"train_classes": "all"}, teacher=toy_teacher))
    monkeypatch.setitem(PLUGINS, "temp", PluginEntry(Temperature, TemperatureConfig, {"epochs": 1, "lr": 0.01},
                                                     refuses={"cocoop": "a toy refusal"}))


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("extending_data")
    write_json_dataset(root, n_classes=6, per_class=(2, 1, 1))
    return str(root)


@pytest.fixture(scope="module")
def experiment(data_root, tiny_backbone) -> Experiment:
    cfg = RunConfig.of(dataset="eurosat", data_root=data_root, shots=1, cache_dir=None, progress=False)
    return Experiment.prepare(cfg, tiny_backbone)


NEW_NAMES = ["toy", "toy+dpc", "toy+dept", "toy+temp", "coop+temp", "toykd", "toykd+dpc"]


def test_the_tables_admit_the_new_names(registered):
    names = method_names()
    assert set(NEW_NAMES) <= set(names) and "cocoop+temp" not in names
    assert resolve("toykd").teacher is toy_teacher and resolve("toykd+dpc").teacher is None  # step 1's, not step 2's
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
    assert len(ran) == 5


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
                    base_train={"epochs": 1})
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
