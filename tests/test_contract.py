"""The method contract, tested over the method table: every method and every base+plug-in pair the tables admit.

Names come from :func:`dpclab.methods.method_names`, so a method (or plug-in) added to the table is tested here
without touching this file. Per name: it is a declared :class:`PromptMethod`; output shapes; gradients reach
exactly its own trainable parameters (CLIP untouched); its loss is the weighted sum of its named terms, and a plug-in
trained jointly with its base keeps every term of the base; its learned state round-trips through a file into a fresh
instance; one ``fit`` epoch runs and its diagnostics are numbers. Then the hooks (every one declared on
:class:`PromptMethod` with a default, every one forwarded by :class:`Plugin`) and the refusal paths. Tiny random CLIP (2+2 layers)
and fixture images. :func:`run_contract` runs the per-name tests on a name registered elsewhere (tests/test_extending.py
registers a toy method from its own module).
"""

from __future__ import annotations

import inspect
import math

import pytest
import torch

from conftest import write_json_dataset
from dpclab.methods import METHODS, PLUGINS, method_names, resolve
from dpclab.methods.base import (INPUT_KINDS, Loss, Output, Plugin, PromptMethod, Task, learned_state,
                                 load_learned_state, trainable_parameters, weighted_sum)
from dpclab.methods.coop import CoOp, KgCoOp
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.train import Examples, TrainConfig, fit

NAMES = method_names()
TRAINABLE = [n for n in NAMES if resolve(n).trainable]
#: base+plug-in pairs trained jointly (the plug-in's loss must keep the base's terms; DPC's step 2 trains P' alone)
JOINT = [n for n in TRAINABLE if resolve(n).plugin and not resolve(n).two_step]
#: pairs of a method and a plug-in that the tables refuse (refused by the plug-in, or a base that trains nothing)
REFUSED = [f"{m}+{p}" for m in METHODS for p in PLUGINS if f"{m}+{p}" not in NAMES]

TASK = Task(("cat", "dog", "red car", "tree"), "a photo of a {}.", "base", "eurosat")
NEW = Task(("boat", "blue house", "apple"), "a photo of a {}.", "new", "eurosat")


def build(name: str, backbone, seed: int = 0) -> PromptMethod:
    return resolve(name).build(backbone, n_classes=len(TASK.classnames), seed=seed)


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
    assert all(resolve(n).base in trainable or PLUGINS[resolve(n).plugin].wraps_frozen for n in pairs)
    assert len(TRAINABLE) == len(trainable) + len(pairs)


@pytest.mark.parametrize("name", NAMES)
def test_method_declares_the_contract(name, tiny_backbone):
    method = build(name, tiny_backbone)
    spec = resolve(name)
    base_name, plugin = spec.base, spec.plugin
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
    assert bool(trainable_parameters(method)) == spec.trainable


@pytest.mark.parametrize("name", NAMES)
def test_output_shapes(name, tiny_backbone):
    method = build(name, tiny_backbone)
    x, y = inputs(method)
    if resolve(name).trainable:
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
    result = method.loss(x, y, TASK)
    loss, logs = result.total, result.logs
    assert torch.isfinite(loss) and {"loss", "acc"} <= set(logs)
    loss.backward()
    with_grad = {n for n, p in method.named_parameters(remove_duplicate=False) if p.grad is not None}
    assert with_grad == set(trainable_parameters(method))
    assert all(p.grad is None for p in method.clip.parameters())
    assert any(p.grad.abs().sum() > 0 for p in trainable_parameters(method).values())
    groups = method.param_groups(0.1)
    grouped = [p for g in groups for p in g["params"]]
    assert sorted(map(id, grouped)) == sorted(map(id, trainable_parameters(method).values()))


def check_loss(method: PromptMethod, x: torch.Tensor, y: torch.Tensor, task: Task = TASK) -> Loss:
    """The loss contract: a :class:`Loss` whose total is the weighted sum of its named terms (what ``step`` receives),
    logged as ``loss``; a plug-in trained jointly with its base keeps every term of the base (KgCoOp's ``kg``...)."""
    result = method.loss(x, y, task)
    assert isinstance(result, Loss) and isinstance(result.output, Output) and result.terms
    assert all(isinstance(k, str) and v.dim() == 0 for k, (w, v) in result.terms.items())
    assert torch.allclose(weighted_sum(result.terms).float(), result.total.float(), rtol=1e-5, atol=1e-6)
    assert result.logs["loss"] == pytest.approx(result.total.item(), rel=1e-6)
    if isinstance(method, Plugin):
        with torch.no_grad():
            out = method.base(x, task)
            own = set(method.base.loss_terms(out, x, y, task))
        missing = own - set(result.terms)
        assert not missing, f"{type(method).__name__} drops its base's loss term(s) {sorted(missing)}"
    return result


@pytest.mark.parametrize("name", TRAINABLE)
def test_the_loss_is_its_named_terms_and_a_joint_plugin_keeps_the_bases(name, tiny_backbone):
    method = build(name, tiny_backbone)
    x, y = inputs(method)
    if resolve(name).two_step:  # DPC's step 2: its own objective on P' alone (the base's terms belonged to step 1)
        result = method.loss(x, y, TASK)
        assert torch.allclose(weighted_sum(result.terms), result.total)
    else:
        check_loss(method, x, y)


class DropsTerms(Plugin):
    """A plug-in that forgets the contract: its loss is the base's cross-entropy alone."""

    def loss(self, x, y, task):
        out = self(x, task)
        ce = torch.nn.functional.cross_entropy(out.logits, y)
        return Loss(ce, {"ce": (1.0, ce)}, {"loss": ce.item(), "acc": 0.0}, out)


class Scaled(Plugin):
    """A plug-in that only defines ``forward`` (its base's logits, halved): the default loss keeps the base's terms,
    since :class:`Plugin` forwards ``loss_terms``."""

    def forward(self, x, task):
        out = self.base(x, task)
        return Output(out.logits / 2, out.image_features, out.text_features, out.extras)


def test_fit_refuses_a_loss_without_its_terms(tiny_backbone):
    """A loss in the old form ``(total, logs)`` is refused in one line: ``step`` needs the named terms."""
    method = CoOp(tiny_backbone)
    method.loss = lambda x, y, task: (torch.zeros((), requires_grad=True), {})
    x, y = inputs(method, n=4)
    with pytest.raises(TypeError, match="CoOp.loss returned a tuple; it must return a dpclab.methods.Loss"):
        fit(method, Examples(y, features=lambda v: x), TASK, TrainConfig(epochs=1, batch_size=4, progress=False))


def test_the_contract_fails_for_a_plugin_that_drops_a_bases_term(tiny_backbone):
    base = KgCoOp(tiny_backbone)
    x, y = inputs(base)
    with pytest.raises(AssertionError, match=r"DropsTerms drops its base's loss term\(s\) \['kg'\]"):
        check_loss(DropsTerms(base), x, y)
    kept = check_loss(Scaled(KgCoOp(tiny_backbone)), x, y)
    assert list(kept.terms) == ["ce", "kg"] and kept.terms["kg"][0] == 8.0


#: every hook :class:`PromptMethod` declares (beyond the forward pass and the loss): all have defaults there
HOOKS = ("loss_terms", "param_groups", "batches", "step", "on_epoch_end", "hard_negative_scores", "deep_prompt_names",
         "selection", "diagnostics")


def test_every_hook_is_declared_with_a_default_and_a_plugin_forwards_it(tiny_backbone):
    """The hooks are methods of :class:`PromptMethod` (no caller asks ``getattr(method, hook, None)``), and
    :class:`Plugin` overrides each one to forward it to its base: a plug-in that defines nothing behaves as its base."""
    own = {n for n, v in vars(PromptMethod).items() if callable(v) and not n.startswith("_")}
    assert own - {"forward", "loss", "image_features", "task_text_features"} == set(HOOKS)
    assert set(HOOKS) <= set(vars(Plugin))

    calls = []

    class Recorder(KgCoOp):
        pass

    for hook in HOOKS:
        def record(self, *args, _hook=hook, **kw):
            calls.append(_hook)
            return getattr(KgCoOp, _hook)(self, *args, **kw)
        setattr(Recorder, hook, record)

    class Data:
        def batches(self, epoch, cfg, generator):
            return ["the base's batches"]

    base = Recorder(tiny_backbone)
    plugin = Scaled(base)
    x, y = inputs(base)
    assert set(plugin.loss_terms(base(x, TASK), x, y, TASK)) == {"kg"}
    assert plugin.batches(Data(), 0, None, None) == ["the base's batches"]
    plugin.on_epoch_end(0, None)
    assert plugin.hard_negative_scores(x, TASK) is None and plugin.deep_prompt_names() == []
    assert plugin.selection() == "last" and plugin.diagnostics(None) == {}
    opt = torch.optim.SGD(plugin.param_groups(0.1), lr=0.1)
    plugin.step(plugin.loss(x, y, TASK), opt, torch.amp.GradScaler("cpu", enabled=False))
    assert set(calls) == set(HOOKS)


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
    method = resolve(name).build(tiny_backbone, n_classes=len(task.classnames), seed=0)
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
        loss.total.backward()
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
    dpc.step(dpc.loss(x, y, TASK), opt, torch.amp.GradScaler("cpu", enabled=False))
    assert calls == ["base"]


#: the per-name contract tests (tests that take a method ``name``), run by :func:`run_contract`
PER_NAME = (test_method_declares_the_contract, test_output_shapes, test_gradients_reach_exactly_the_methods_own_parameters,
            test_the_loss_is_its_named_terms_and_a_joint_plugin_keeps_the_bases,
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
        resolve(name)
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
