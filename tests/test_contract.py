"""The method contract, tested over the method table: every method and every base+plug-in pair the tables admit.

Names come from :func:`dpclab.methods.method_names`, so a method (or plug-in) added to the table is tested here
without touching this file. Per name: it is a declared :class:`PromptMethod`; output shapes; gradients reach
exactly its own trainable parameters (CLIP untouched); its learned state round-trips through a file into a fresh
instance; one ``fit`` epoch runs and its diagnostics are numbers. Then the refusal paths. Tiny random CLIP (2+2 layers)
and fixture images. :func:`run_contract` runs the per-name tests on a name registered elsewhere (tests/test_extending.py
registers a toy method from its own module).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from conftest import write_json_dataset
from dpclab.methods import METHODS, PLUGINS, method_names, parse_method, resolve
from dpclab.methods.base import (INPUT_KINDS, Plugin, PromptMethod, Task, learned_state, load_learned_state,
                                 trainable_parameters)
from dpclab.methods.coop import CoOp
from dpclab.methods import build_method
from dpclab.pipeline import Experiment, RunConfig
from dpclab.train import Examples, TrainConfig, fit

NAMES = method_names()
TRAINABLE = [n for n in NAMES if METHODS[parse_method(n)[0]].trainable]
#: pairs of a method and a plug-in that the tables refuse (refused by the plug-in, or a base that trains nothing)
REFUSED = [f"{m}+{p}" for m in METHODS for p in PLUGINS if f"{m}+{p}" not in NAMES]

TASK = Task(("cat", "dog", "red car", "tree"), "a photo of a {}.", "base", "eurosat")
NEW = Task(("boat", "blue house", "apple"), "a photo of a {}.", "new", "eurosat")


def build(name: str, backbone, seed: int = 0) -> PromptMethod:
    return build_method(name, backbone, n_classes=len(TASK.classnames), seed=seed)


def inputs(method: PromptMethod, seed: int = 0, n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """A labelled batch of the method's input kind: features [n, 32] or images [n, 3, 32, 32]."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(len(TASK.classnames)).repeat(n // len(TASK.classnames))
    if method.input_kind == "features":
        return torch.randn(n, 32, generator=g), y
    return torch.randn(n, 3, 32, 32, generator=g), y


def test_the_table_admits_every_trainable_pair():
    trainable = [m for m, spec in METHODS.items() if spec.trainable]
    assert set(NAMES) >= set(METHODS)
    pairs = {n for n in NAMES if "+" in n}
    assert len(pairs) + len(REFUSED) == len(METHODS) * len(PLUGINS)
    assert all(parse_method(n)[0] in trainable for n in pairs)
    assert len(TRAINABLE) == len(trainable) + len(pairs)


@pytest.mark.parametrize("name", NAMES)
def test_method_declares_the_contract(name, tiny_backbone):
    method = build(name, tiny_backbone)
    base_name, plugin = parse_method(name)
    assert isinstance(method, PromptMethod) and method.input_kind in INPUT_KINDS
    assert METHODS[base_name].cls.input_kind in INPUT_KINDS  # declared on the class
    assert method.clip is tiny_backbone.model and method.tokenizer is tiny_backbone.tokenizer
    assert not any(p.requires_grad for p in method.clip.parameters())
    if plugin is None:
        assert type(method) is METHODS[name].cls
    else:
        assert isinstance(method, Plugin) and type(method) is PLUGINS[plugin].cls
        assert isinstance(method.base, METHODS[base_name].cls)
        assert method.input_kind == method.base.input_kind and method.clip is method.base.clip
    assert bool(trainable_parameters(method)) == METHODS[base_name].trainable


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name, tiny_backbone):
    method = build(name, tiny_backbone)
    x, y = inputs(method)
    if METHODS[parse_method(name)[0]].trainable:
        method.loss(x, y, TASK)  # a plug-in's training-time state (DePT binds its head to the classes)
    method.eval()
    embed = tiny_backbone.model.text_projection.shape[-1]
    with torch.no_grad():
        for task in (TASK, NEW):
            out = method(x, task)
            c = len(task.classnames)
            assert out.logits.shape == (4, c) and torch.isfinite(out.logits).all()
            assert out.image_features.shape == (4, embed)
            assert out.text_features.shape in ((c, embed), (4, c, embed))


@pytest.mark.parametrize("name", TRAINABLE)
def test_gradients_reach_exactly_the_methods_own_parameters(name, tiny_backbone):
    method = build(name, tiny_backbone)
    x, y = inputs(method)
    loss, logs = method.loss(x, y, TASK)
    assert torch.isfinite(loss) and {"loss", "acc"} <= set(logs)
    loss.backward()
    with_grad = {n for n, p in method.named_parameters(remove_duplicate=False) if p.grad is not None}
    assert with_grad == set(trainable_parameters(method))
    assert all(p.grad is None for p in method.clip.parameters())
    assert any(p.grad.abs().sum() > 0 for p in trainable_parameters(method).values())
    groups = method.param_groups(0.1)
    grouped = [p for g in groups for p in g["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, trainable_parameters(method).values()))


@pytest.mark.parametrize("name", TRAINABLE)
def test_learned_state_round_trips_through_a_file(name, tiny_backbone, tmp_path):
    method = build(name, tiny_backbone, seed=0)
    x, y = inputs(method)
    method.loss(x, y, TASK)
    g = torch.Generator().manual_seed(1)
    moved = {k: v + 0.05 * torch.randn(v.shape, generator=g) if v.is_floating_point() else v
             for k, v in learned_state(method).items()}
    load_learned_state(method, moved)
    torch.save(learned_state(method), tmp_path / "state.pt")
    assert not any(k.startswith("clip.") or ".clip." in k for k in moved)

    fresh = build(name, tiny_backbone, seed=1)
    method.eval()
    fresh.eval()
    with torch.no_grad():
        assert not torch.equal(fresh(x, TASK).logits, method(x, TASK).logits)
        load_learned_state(fresh, torch.load(tmp_path / "state.pt", weights_only=True))
        for task in (TASK, NEW):
            assert torch.equal(fresh(x, task).logits, method(x, task).logits)


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_backbone) -> Experiment:
    root = tmp_path_factory.mktemp("contract_data")
    write_json_dataset(root, n_classes=6, per_class=(2, 1, 1))
    cfg = RunConfig.of(dataset="eurosat", data_root=str(root), shots=1, cache_dir=None, progress=False)
    return Experiment.prepare(cfg, tiny_backbone)


@pytest.mark.parametrize("name", TRAINABLE)
def test_one_fit_epoch_trains_the_method_and_nothing_else(name, tiny_backbone, experiment):
    task = experiment.train_task
    method = build_method(name, tiny_backbone, n_classes=len(task.classnames), seed=0)
    clip_before = {k: v.clone() for k, v in method.clip.state_dict().items()}
    own_before = {k: v.detach().clone() for k, v in trainable_parameters(method).items()}
    cfg = TrainConfig(epochs=1, batch_size=2, lr=0.01, warmup_epochs=0, n_views=1, progress=False)
    history = fit(method, experiment.train_examples(method.input_kind), task, cfg)
    assert len(history) == 1 and history[0]["steps"] >= 1 and torch.isfinite(torch.tensor(history[0]["loss"]))
    assert all(torch.equal(v, clip_before[k]) for k, v in method.clip.state_dict().items())
    assert any(not torch.equal(p, own_before[k]) for k, p in trainable_parameters(method).items())
    diagnostics = method.diagnostics(experiment)  # the benchmark's extra columns: numbers, keyed by name
    assert isinstance(diagnostics, dict) and all(isinstance(k, str) and isinstance(v, (int, float))
                                                 for k, v in diagnostics.items())
    assert not any(math.isnan(v) for k, v in diagnostics.items() if k != "rel_dist")


class Recording(CoOp):
    """CoOp whose hooks record that the training loop called them."""

    def __init__(self, backbone):
        super().__init__(backbone)
        self.calls: list[tuple] = []

    def param_groups(self, lr):
        self.calls.append(("param_groups", lr))
        return super().param_groups(lr)

    def batches(self, data, epoch, cfg, generator):
        self.calls.append(("batches", epoch))
        return list(super().batches(data, epoch, cfg, generator))[:1]

    def step(self, loss, optimizer, scaler):
        self.calls.append(("step",))
        super().step(loss, optimizer, scaler)

    def on_epoch_end(self, epoch, cfg):
        self.calls.append(("on_epoch_end", epoch))


def test_fit_calls_every_hook_of_the_contract(tiny_backbone):
    method = Recording(tiny_backbone)
    x, y = inputs(method, n=8)
    history = fit(method, Examples(y, features=lambda v: x), TASK,
                  TrainConfig(epochs=2, batch_size=4, lr=0.01, progress=False))
    assert method.calls == [("param_groups", 0.01), ("batches", 0), ("step",), ("on_epoch_end", 0), ("batches", 1),
                            ("step",), ("on_epoch_end", 1)]
    assert [h["steps"] for h in history] == [1, 1]  # the method's own batches, not the plain ones


class SignSGD(CoOp):
    """A method that changes the update itself (sign of the gradient, fixed size), through the ``step`` hook."""

    def step(self, loss, optimizer, scaler):
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        with torch.no_grad():
            for p in trainable_parameters(self).values():
                p -= 0.01 * p.grad.sign()


def test_the_step_hook_owns_the_update_and_plugins_honour_it(tiny_backbone):
    """``step`` replaces the SGD update (no surrogate loss); DePT, trained jointly, forwards it to its base; DPC's
    step 2 (P' alone) keeps the plain step."""
    from dpclab.methods.dept import DePT, DePTConfig
    from dpclab.methods.dpc import DPC

    method = SignSGD(tiny_backbone)
    x, y = inputs(method, n=8)
    before = method.ctx.detach().clone()
    fit(method, Examples(y, features=lambda v: x), TASK, TrainConfig(epochs=1, batch_size=8, lr=5.0, warmup_epochs=0,
                                                                      progress=False))
    moved = (method.ctx - before).abs()
    assert torch.allclose(moved, torch.full_like(moved, 0.01), atol=1e-6)  # exactly one sign step, lr ignored

    calls = []
    base = SignSGD(tiny_backbone)
    base.step = lambda loss, opt, scaler: calls.append("base")
    DePT(base, DePTConfig(n_classes=len(TASK.classnames))).step(torch.zeros(()), None, None)
    assert calls == ["base"]
    dpc = DPC(SignSGD(tiny_backbone))
    dpc.base.step = lambda loss, opt, scaler: calls.append("dpc base")
    x, y = inputs(dpc, n=4)
    opt = torch.optim.SGD(dpc.param_groups(0.1), lr=0.1)
    dpc.step(dpc.loss(x, y, TASK)[0], opt, torch.amp.GradScaler("cpu", enabled=False))
    assert calls == ["base"]


#: the per-name contract tests (tests that take a method ``name``), run by :func:`run_contract`
PER_NAME = (test_method_declares_the_contract, test_output_shapes, test_gradients_reach_exactly_the_methods_own_parameters,
            test_learned_state_round_trips_through_a_file, test_one_fit_epoch_trains_the_method_and_nothing_else)


def run_contract(name: str, backbone, experiment: Experiment, tmp_path) -> list[str]:
    """Every per-name contract test on ``name`` (a method or pair registered after this module was imported, e.g. by
    another test module); the tests for trainable methods only when it trains. Returns the tests that ran."""
    values = {"name": name, "tiny_backbone": backbone, "experiment": experiment, "tmp_path": tmp_path}
    trainable = resolve(name).trainable
    ran = []
    for test in PER_NAME:
        if not trainable and test not in (test_method_declares_the_contract, test_output_shapes):
            continue
        test(**{k: values[k] for k in inspect.signature(test).parameters})
        ran.append(test.__name__)
    return ran


# -------------------------------------------------------------------------------------------------- refusals

@pytest.mark.parametrize("name", ["nope", "coop+nope", "nope+dpc"])
def test_unknown_names_are_refused_with_the_choices(name, tiny_backbone):
    with pytest.raises(ValueError, match=r"Unknown (method|plug-in) 'nope'.*Available: .*"):
        build(name, tiny_backbone)


@pytest.mark.parametrize("name", REFUSED)
def test_refused_pairs_fail_before_anything_is_built(name, tiny_backbone):
    base, plugin = name.split("+")
    with pytest.raises(ValueError, match=rf"'{plugin}' cannot wrap '{base}': .*Choose one of .*{plugin}"):
        parse_method(name)
    with pytest.raises(ValueError, match="cannot wrap"):
        build(name, tiny_backbone)


def test_the_table_refuses_cocoop_under_dpc():
    assert "cocoop+dpc" in REFUSED and "cocoop" in PLUGINS["dpc"].refuses


@pytest.mark.parametrize("name", TRAINABLE)
def test_a_checkpoint_of_another_method_is_refused(name, tiny_backbone):
    method = build(name, tiny_backbone)
    keys = set(learned_state(method))
    state = next(s for s in (learned_state(build(n, tiny_backbone)) for n in ("coop", "cocoop")) if set(s) != keys)
    before = learned_state(method)
    with pytest.raises(ValueError, match=f"does not fit this {type(method).__name__}.*another method"):
        load_learned_state(method, state, "other.pt")
    assert all(torch.equal(v, before[k]) for k, v in learned_state(method).items())  # nothing half-loaded
