"""DePT plug-in, channel importance, feature-channel invariance, plots, cross-dataset / DG entry points."""

from __future__ import annotations

import math

import pytest
import torch

from dpclab.methods import PLUGINS, learned_state, load_learned_state
from dpclab.methods.base import Task
from dpclab.methods.dept import DePT, DePTConfig, fuse_log_probs
from dpclab.pipeline import build_method
from dpclab.train import Examples, TrainConfig, fit

BASE = Task(("cat", "dog", "car", "tree"), split="base")
NEW = Task(("bird", "ship", "house"), split="new")


def _separable(n_classes: int = 4, per_class: int = 8, dim: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n_classes).repeat(per_class)
    centres = torch.randn(n_classes, dim, generator=g)
    return centres[labels] + 0.1 * torch.randn(len(labels), dim, generator=g), labels


def _dept(backbone, **cfg) -> DePT:
    torch.manual_seed(0)
    return build_method("coop+dept", backbone, {"n_classes": 4, **cfg})


def _train(method, feats, labels, epochs=6, lr=0.05, run_dir=None):
    return fit(method, Examples(labels, features=lambda v: feats), BASE,
               TrainConfig(epochs=epochs, batch_size=8, lr=lr, progress=False), run_dir)


# ------------------------------------------------------------------------------------------------------ DePT
def test_dept_is_registered_with_reference_defaults(tiny_backbone):
    spec = PLUGINS["dept"]
    assert spec.cls is DePT and not spec.two_step
    assert spec.train == {"epochs": 10, "batch_size": 4, "lr": 0.0035}
    assert spec.train_by_base["cocoop"] == {"batch_size": 1, "lr": 0.002}
    m = _dept(tiny_backbone)
    assert m.cfg.lam == 0.7 and m.cfg.head_lr_mult == 6.5 and m.input_kind == m.base.input_kind == "features"
    # CAT head starts as identity transforms and a default-initialised Linear(d -> n_base)
    assert torch.equal(m.cwt_img.gamma, torch.ones(32)) and torch.equal(m.cwt_text.beta, torch.zeros(32))
    assert m.head.weight.shape == (4, 32)
    with pytest.raises(ValueError, match="n_classes"):
        DePT(build_method("coop", tiny_backbone), DePTConfig())


def test_dept_trainable_params_are_prompt_and_cat_head_only(tiny_backbone):
    m = _dept(tiny_backbone)
    names = sorted(n for n, p in m.named_parameters() if p.requires_grad)
    assert names == sorted(["base.ctx", "cwt_img.gamma", "cwt_img.beta", "cwt_text.gamma", "cwt_text.beta",
                            "head.weight", "head.bias"])
    assert all(not p.requires_grad for p in m.clip.parameters())
    # the checkpoint holds what was learned, never the frozen CLIP (recognised by identity at base.clip)
    assert not any("clip" in k for k in learned_state(m))


def test_dept_loss_is_the_weighted_sum_and_training_lowers_it(tiny_backbone):
    feats, labels = _separable()
    m = _dept(tiny_backbone)
    loss, logs = m.loss(feats, labels, BASE)
    # for CoOp, L = 0.7 * CE(linear on [text[y]; image]) + 0.3 * CE(ITM)
    out = m.base(feats, BASE)
    txt = m.cwt_text(out.text_features[labels])
    img = m.cwt_img(out.image_features)
    cat = torch.nn.functional.cross_entropy(m.head(torch.cat([txt, img])), torch.cat([labels, labels]))
    itm = torch.nn.functional.cross_entropy(out.logits, labels)
    assert loss.item() == pytest.approx(0.7 * cat.item() + 0.3 * itm.item(), rel=1e-5)
    assert logs["loss_itm"] == pytest.approx(itm.item(), rel=1e-5)
    hist = _train(m, feats, labels)
    after = m.loss(feats, labels, BASE)[0].item()
    assert after < 0.8 * loss.item() and hist[-1]["loss"] < hist[0]["loss"]


def test_head_learns_at_6_5x_the_prompt_lr_inside_fit(tiny_backbone, tmp_path):
    feats, labels = _separable()
    m = _dept(tiny_backbone)
    _train(m, feats, labels, epochs=3, lr=0.0035, run_dir=tmp_path)
    groups = torch.load(tmp_path / "checkpoint.pt", weights_only=True)["optimizer"]["param_groups"]
    assert len(groups) == 2 and len(groups[0]["params"]) == 1 and len(groups[1]["params"]) == 6
    assert groups[0]["base_lr"] == pytest.approx(0.0035) and groups[1]["base_lr"] == pytest.approx(6.5 * 0.0035)
    assert groups[1]["lr"] == pytest.approx(6.5 * groups[0]["lr"])  # the cosine schedule scales both alike


def test_dept_checkpoint_round_trip(tiny_backbone):
    feats, labels = _separable()
    m = _dept(tiny_backbone)
    _train(m, feats, labels, epochs=3)
    fresh = _dept(tiny_backbone)
    assert not torch.equal(fresh(feats, BASE).logits, m(feats, BASE).logits)
    load_learned_state(fresh, learned_state(m))
    fresh.eval()
    assert torch.equal(fresh.head_class_ids, m.head_class_ids)
    assert torch.equal(fresh(feats, BASE).logits, m(feats, BASE).logits)
    other = build_method("coop+dept", tiny_backbone, {"n_classes": 5})
    with pytest.raises(ValueError, match="shape mismatch head"):
        load_learned_state(other, learned_state(m))


def test_inference_fusion_and_its_limits(tiny_backbone):
    feats, labels = _separable()
    m = _dept(tiny_backbone)
    _train(m, feats, labels, epochs=4)
    itm = m.base(feats, BASE).logits
    # lambda_test = 0: the ITM head exactly; 1: the CAT head exactly; 0.7: the paper's probability mix
    m.cfg.lam_test = 0.0
    assert torch.equal(m(feats, BASE).logits.argmax(-1), itm.argmax(-1))
    assert torch.allclose(m(feats, BASE).logits, torch.log_softmax(itm, -1))
    m.cfg.lam_test = 1.0
    cat = m.head(m.cwt_img(feats))
    assert torch.equal(m(feats, BASE).logits.argmax(-1), cat.argmax(-1))
    m.cfg.lam_test = None
    p = 0.7 * cat.softmax(-1) + 0.3 * itm.softmax(-1)
    out = m(feats, BASE)
    assert torch.allclose(out.logits.exp(), p, atol=1e-6) and torch.equal(out.extras["cat_logits"], cat)
    # new classes (and any class list the head was not trained on): the ITM head only, fused or not
    for task in (NEW, Task(BASE.classnames + NEW.classnames, split="all"), Task(BASE.classnames, split="new")):
        assert torch.equal(m(feats, task).logits, m.base(feats, task).logits)
        assert "cat_logits" not in m(feats, task).extras
    # a subset of the trained classes (a domain-shifted test set of the same classes) uses the matching rows
    sub = Task(("tree", "cat"), split="all")
    assert torch.allclose(m(feats, sub).logits,
                          fuse_log_probs(cat[:, [3, 0]], m.base(feats, sub).logits, 0.7))
    with pytest.raises(ValueError, match="trained on other classes"):
        m.loss(feats, labels, Task(("a", "b", "c", "d")))


def test_dept_untrained_head_does_not_answer(tiny_backbone):
    feats, _ = _separable()
    m = _dept(tiny_backbone)
    assert torch.equal(m(feats, BASE).logits, m.base(feats, BASE).logits)


def test_regulariser_weighting_modes(tiny_backbone):
    """A base with a regulariser: by default it keeps its own weight (reference code), or is scaled by 1-lam."""
    feats, labels = _separable()
    m = _dept(tiny_backbone)
    reg = torch.tensor(0.5)
    orig = m.base.loss
    m.base.loss = lambda x, y, t: ((lambda l, g: (l + reg, g))(*orig(x, y, t)))
    plain = m.loss(feats, labels, BASE)[1]
    cat, itm = plain["loss_cat"], plain["loss_itm"]
    assert plain["loss"] == pytest.approx(0.7 * cat + 0.3 * itm + 0.5, rel=1e-5)
    m.cfg.scale_regularisers = True
    assert m.loss(feats, labels, BASE)[1]["loss"] == pytest.approx(0.7 * cat + 0.3 * (itm + 0.5), rel=1e-5)


def test_plugin_sets_base_config_defaults(tiny_backbone, monkeypatch):
    """``base_cfg_by_base`` (how KgCoOp+DePT gets W = 2.0): a plug-in default for the base's config that
    ``RunConfig.base_method_cfg`` still overrides."""
    from dpclab.methods import PluginSpec

    spec = PLUGINS["dept"]
    assert spec.base_cfg_by_base["kgcoop"] == {"w": 2.0}
    monkeypatch.setitem(PLUGINS, "dept", PluginSpec(DePT, DePTConfig, base_cfg_by_base={"coop": {"ctx_init": None}}))
    m = build_method("coop+dept", tiny_backbone, {"n_classes": 4})
    assert m.base.cfg.ctx_init is None
    m = build_method("coop+dept", tiny_backbone, {"n_classes": 4}, base_overrides={"ctx_init": "a"})
    assert m.base.cfg.ctx_init == "a"


def test_kgcoop_dept_uses_w_2(tiny_backbone):
    from dpclab.methods import METHODS

    if "kgcoop" not in METHODS:
        pytest.skip("KgCoOp is not merged on this branch")
    m = build_method("kgcoop+dept", tiny_backbone, {"n_classes": 4})
    assert m.base.cfg.w == 2.0


def test_run_coop_dept_end_to_end(json_root, tmp_path, tiny_backbone):
    from dpclab.pipeline import Experiment, RunConfig, run, train_config

    cfg = RunConfig(method="coop+dept", dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None,
                    train={"epochs": 3}, progress=False)
    tcfg = train_config(cfg)
    assert (tcfg.epochs, tcfg.batch_size, tcfg.lr) == (3, 4, 0.0035)
    exp = Experiment.prepare(cfg, tiny_backbone)
    res = run(cfg, experiment=exp)
    assert isinstance(res.method, DePT) and len(res.history) == 3 and res.history[-1]["loss_cat"] > 0
    assert res.metrics["hm"] >= 0 and (res.run_dir / "model.pt").is_file()
    # new-class accuracy is the ITM head's: the same as evaluating the wrapped CoOp alone
    assert res.metrics["new"] == exp.accuracy(res.method.base, "new")
    again = run(cfg, experiment=exp)
    assert again.reused and again.metrics == res.metrics
    assert torch.equal(again.method.head.weight, res.method.head.weight)
