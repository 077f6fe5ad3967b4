"""DePT plug-in, channel importance, feature-channel invariance, plots, cross-dataset / DG entry points."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from dpclab.methods import PLUGINS, learned_state, load_learned_state, resolve
from dpclab.methods.base import Task
from dpclab.methods.dept import DePT, DePTConfig, fuse_log_probs
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
    return resolve("coop+dept").build(backbone, {"n_classes": 4, **cfg})


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
        DePT(resolve("coop").build(tiny_backbone), DePTConfig())


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
    hist = _train(m, feats, labels, epochs=4)
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
    other = resolve("coop+dept").build(tiny_backbone, {"n_classes": 5})
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
    """A base with a regulariser (its ``loss_terms``): by default it keeps its own weight (reference code), or is
    scaled by 1-lam. DePT reads the base only through the contract: the base's ``loss`` is never called."""
    feats, labels = _separable()
    m = _dept(tiny_backbone)
    m.base.loss_terms = lambda out, x, y, t: {"reg": (2.0, torch.tensor(0.25))}
    m.base.loss = None  # DePT must not fall back on the base's whole loss
    plain = m.loss(feats, labels, BASE)[1]
    cat, itm = plain["loss_cat"], plain["loss_itm"]
    assert plain["loss"] == pytest.approx(0.7 * cat + 0.3 * itm + 0.5, rel=1e-5)
    assert plain["loss_base"] == pytest.approx(itm + 0.5, rel=1e-5)
    m.cfg.scale_regularisers = True
    assert m.loss(feats, labels, BASE)[1]["loss"] == pytest.approx(0.7 * cat + 0.3 * (itm + 0.5), rel=1e-5)


def test_dept_adds_kgcoops_own_term_at_its_own_weight(tiny_backbone):
    """KgCoOp+DePT: the loss is lam*CE_cat + (1-lam)*CE_itm + W*(KgCoOp's term), the term as KgCoOp computes it."""
    m = resolve("kgcoop+dept").build(tiny_backbone, {"n_classes": 4}, seed=0)
    with torch.no_grad():  # away from the hand-written prompt, so KgCoOp's term is not 0
        m.base.ctx.add_(0.5 * torch.randn(m.base.ctx.shape, generator=torch.Generator().manual_seed(0)))
    feats, labels = _separable()
    loss, logs = m.loss(feats, labels, BASE)
    out = m.base(feats, BASE)
    terms = m.base.loss_terms(out, feats, labels, BASE)
    assert len(terms) == 1 and next(iter(terms.values()))[0] == 2.0  # W = 2.0 under DePT
    extra = sum(w * v.item() for w, v in terms.values())
    assert extra > 0
    expected = 0.7 * logs["loss_cat"] + 0.3 * logs["loss_itm"] + extra
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_per_image_text_features(tiny_backbone):
    """CoCoOp-style bases give text features per image [B, C, E]; DePT picks each image's own class row."""
    from dpclab.methods.base import Output
    from dpclab.methods.coop import CoOp

    class PerImage(CoOp):
        def forward(self, x, task):
            out = super().forward(x, task)
            return Output(out.logits, out.image_features, out.text_features.expand(len(x), -1, -1))

    feats, labels = _separable()
    ref = _dept(tiny_backbone)
    torch.manual_seed(0)
    odd = DePT(PerImage(tiny_backbone), DePTConfig(n_classes=4))
    load_learned_state(odd, learned_state(ref))
    assert odd.loss(feats, labels, BASE)[0].item() == pytest.approx(ref.loss(feats, labels, BASE)[0].item(), rel=1e-6)


def test_plugin_sets_base_config_defaults(tiny_backbone, monkeypatch):
    """``base_cfg_by_base`` (how KgCoOp+DePT gets W = 2.0): a plug-in default for the base's config that
    ``RunConfig.base_method_cfg`` still overrides."""
    from dpclab.methods import PluginEntry

    spec = PLUGINS["dept"]
    assert spec.base_cfg_by_base["kgcoop"] == {"weight": 2.0}
    monkeypatch.setitem(PLUGINS, "dept", PluginEntry(DePT, DePTConfig, base_cfg_by_base={"coop": {"ctx_init": None}}))
    m = resolve("coop+dept").build(tiny_backbone, {"n_classes": 4})
    assert m.base.cfg.ctx_init is None
    m = resolve("coop+dept").build(tiny_backbone, {"n_classes": 4}, base_overrides={"ctx_init": "a"})
    assert m.base.cfg.ctx_init == "a"


def test_kgcoop_dept_uses_w_2(tiny_backbone):
    m = resolve("kgcoop+dept").build(tiny_backbone, {"n_classes": 4})
    assert m.base.cfg.weight == 2.0
    assert resolve("kgcoop").build(tiny_backbone).cfg.weight == 8.0


def test_run_coop_dept_end_to_end(json_root, tmp_path, tiny_backbone):
    from dpclab.pipeline import run
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig, train_config

    cfg = RunConfig.of(method="coop+dept", dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None,
                    train={"epochs": 3}, progress=False)
    tcfg = train_config(cfg, resolve(cfg.method))
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


# ------------------------------------------------------------------------------------------ channel importance
from dpclab.lab import analysis  # noqa: E402


def _ci_example():
    """N=2 images, M=3 classes, E=2 channels; scaled so that only L2 normalisation recovers the unit vectors."""
    img = torch.tensor([[3.0, 4.0], [0.8, 0.6]])  # -> (.6, .8) label 0, (.8, .6) label 1
    txt = torch.tensor([[2.0, 0.0], [8.0, 6.0], [0.0, 0.5]])  # -> (1, 0), (.8, .6), (0, 1)
    return img, txt, torch.tensor([0, 1])


def test_channel_importance_matches_hand_computation():
    img, txt, y = _ci_example()
    # channel 0: image 1 products (.6, .48, 0): own .6 / mean .36 = 5/3; image 2 (.8, .64, 0): .64 / .48 = 4/3
    # channel 1: image 1 products (0, .48, .8): own 0 -> 0; image 2 (0, .36, .6): .36 / .32 = 1.125
    ci = analysis.channel_importance(img, txt, y)
    assert ci.tolist() == pytest.approx([(5 / 3 + 4 / 3) / 2, (0 + 1.125) / 2], rel=1e-9)
    # window 2 of 2 channels: every window is the full cosine; image 1 cos (.6, .96, .8), image 2 (.8, 1.0, .6)
    w2 = analysis.windowed_channel_importance(img, txt, y, window=2)
    expected = (0.6 / (2.36 / 3) + 1.0 / (2.4 / 3)) / 2
    assert w2.tolist() == pytest.approx([expected, expected], rel=1e-9)
    # per-image text features [N, C, E] that repeat the class features give the same numbers
    assert torch.allclose(analysis.channel_importance(img, txt.expand(2, -1, -1), y), ci)
    with pytest.raises(ValueError, match="window must be between 1 and the feature size 2"):
        analysis.windowed_channel_importance(img, txt, y, window=3)


def test_windowed_ci_window_1_is_per_channel_and_full_window_is_constant():
    g = torch.Generator().manual_seed(3)
    img, txt, y = torch.randn(40, 16, generator=g), torch.randn(5, 16, generator=g), torch.randint(0, 5, (40,), generator=g)
    per = analysis.channel_importance(img, txt, y)
    assert torch.allclose(analysis.windowed_channel_importance(img, txt, y, window=1), per, rtol=1e-10, atol=1e-12)
    full = analysis.windowed_channel_importance(img, txt, y, window=16)
    cos = torch.relu(torch.nn.functional.normalize(img.double(), dim=-1)
                     @ torch.nn.functional.normalize(txt.double(), dim=-1).t())
    ref = (cos[torch.arange(40), y] / (cos.mean(1) + 1e-12)).mean()
    assert torch.allclose(full, ref.expand(16), rtol=1e-10)
    # window 3 at channel 15 wraps around to channels 0 and 1
    f = torch.nn.functional.normalize(img.double(), dim=-1)
    e = torch.nn.functional.normalize(txt.double(), dim=-1)
    idx = [15, 0, 1]
    s = torch.relu(f[:, idx] @ e[:, idx].t())
    wrap = (s[torch.arange(40), y] / (s.mean(1) + 1e-12)).mean()
    assert analysis.windowed_channel_importance(img, txt, y, window=3)[15].item() == pytest.approx(wrap.item())


# ------------------------------------------------------------------------------------------------ invariance
def test_correlations():
    x = torch.tensor([0.3, -1.0, 2.0, 0.5, 0.5])
    assert analysis.pearson(x, x) == pytest.approx(1.0) and analysis.spearman(x, x) == pytest.approx(1.0)
    assert analysis.spearman(x, -x) == pytest.approx(-1.0)
    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert analysis.spearman(a, a ** 3) == pytest.approx(1.0) and analysis.pearson(a, a ** 3) < 0.99
    # ties get average ranks: ranks of (1, 2, 2, 3) are (1, 2.5, 2.5, 4)
    assert analysis.spearman(torch.tensor([1.0, 2.0, 2.0, 3.0]), torch.tensor([1.0, 2.5, 2.5, 4.0])) == pytest.approx(1.0)


def test_linearity_gap_zero_for_linear_encoder_positive_for_nonlinear():
    g = torch.Generator().manual_seed(0)
    p, pp = torch.randn(6, 8, generator=g, dtype=torch.float64), torch.randn(6, 8, generator=g, dtype=torch.float64)
    w = torch.randn(8, 12, generator=g, dtype=torch.float64)
    omegas = [0.0, 0.25, 0.5, 1.0]
    lin = analysis.features_along_omega(lambda om: (om * pp + (1 - om) * p) @ w, omegas)
    nonlin = analysis.features_along_omega(lambda om: torch.tanh((om * pp + (1 - om) * p) @ w), omegas)
    assert all(analysis.linearity_gap(lin, om)[0] < 1e-12 for om in omegas)
    gaps = [analysis.linearity_gap(nonlin, om) for om in omegas]
    assert gaps[0][0] == 0 and gaps[-1][0] == 0 and gaps[2][0] > 1e-2 and gaps[2][1] > 1e-3
    table = analysis.invariance_table(nonlin)
    first = table.iloc[0]
    assert first.omega == 0 and first.pearson_mean == pytest.approx(1) and first.spearman_var == pytest.approx(1)
    assert first.gap == 0 and list(table.omega) == omegas
    stats = analysis.channel_stats_table(lin)
    assert len(stats) == 4 * 12 and set(stats.columns) == {"omega", "channel", "mean", "var"}


def test_prompt_mix_fn_on_coop(tiny_backbone):
    torch.manual_seed(0)
    coop = resolve("coop").build(tiny_backbone)
    p = coop.ctx.detach().clone()
    pp = p + 0.5 * torch.randn_like(p)
    fn = analysis.prompt_mix_fn(coop, {"ctx": (p, pp)}, BASE)
    feats = analysis.features_along_omega(fn, [0.5])
    assert torch.allclose(feats[0.0], coop.text_features(BASE.classnames).double())
    assert torch.equal(coop.ctx, p)  # functional_call leaves the method untouched
    with torch.no_grad():
        coop.ctx.copy_(pp)
    assert torch.allclose(feats[1.0], coop.text_features(BASE.classnames).double(), atol=1e-6)
    assert analysis.linearity_gap(feats, 0.5)[0] > 0  # the text transformer is not linear in its prompt
    with pytest.raises(ValueError, match="not parameters of CoOp.*ctx"):
        analysis.prompt_mix_fn(coop, {"prompt": (p, pp)}, BASE)


# ------------------------------------------------------------------------------------- study, plots, transfer
def _run_cfg(root, tmp_path, **kw):
    from dpclab.runconfig import RunConfig

    base = dict(method="coop", dataset="eurosat", data_root=str(root), shots=4, seed=1, device="cpu",
                cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                results=str(tmp_path / "results.csv"), train={"epochs": 2, "batch_size": 4, "lr": 0.05},
                progress=False)
    base.update(kw)
    return RunConfig.of(**base)


def test_channel_importance_study_and_plots(json_root, tmp_path, tiny_backbone):
    import pandas as pd

    from dpclab.lab import plots

    cfg = _run_cfg(json_root, tmp_path)
    table, metrics = analysis.channel_importance_study(cfg, window=8, backbone=tiny_backbone)
    assert list(metrics.model) == ["coop", "coop+dept", "oracle"]
    assert len(table) == 3 * 32 and table[["base", "new"]].notna().all().all() and (table.base >= 0).all()
    answered = table.new > 0
    assert answered.any() and table.ratio[answered].notna().all() and table.ratio[~answered].isna().all()
    assert torch.allclose(torch.tensor(table.ratio[answered].to_numpy()),
                          torch.tensor((table.base / table.new)[answered].to_numpy()))
    assert sorted(table[table.model == "oracle"]["rank"]) == list(range(32))
    # the oracle saw all classes: its row says so, and summaries keep it apart from the base-to-new coop rows
    table_csv = pd.read_csv(cfg.source.results)
    assert list(zip(table_csv.method, table_csv.train_classes)) == [("coop", "base"), ("coop+dept", "base"),
                                                                     ("coop", "all")]
    from dpclab.evaluate import summarize
    assert list(zip(*[summarize(cfg.source.results)[k] for k in ("method", "train_classes", "runs")])) == [
        ("coop", "base", 1), ("coop+dept", "base", 1), ("coop", "all", 1)]
    g = torch.Generator().manual_seed(0)
    p, pp = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    inv = analysis.invariance_table(analysis.features_along_omega(lambda om: torch.tanh(om * pp + (1 - om) * p)))
    for fn, data in ((plots.channel_importance, table), (plots.ci_ratio_hist, table), (plots.invariance, inv)):
        fig = fn(data, title="t")
        saved = plots.save_figure(fig, fn.__name__, alt="a test figure", folder=tmp_path / "fig")
        assert saved.path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and fig.axes


def test_cross_dataset_and_domain_generalization(json_root, tmp_path, tiny_backbone):
    from conftest import write_json_dataset

    from dpclab.transfer import cross_dataset, domain_generalization, summarize_transfer, task_accuracy, target_experiment

    write_json_dataset(json_root, "dtd", "images", "split_zhou_DescribableTextures.json", n_classes=4)
    write_json_dataset(json_root, "oxford_pets", "images", "split_zhou_OxfordPets.json", n_classes=7)
    cfg = _run_cfg(json_root, tmp_path, method="coop+dept", train={"epochs": 2})
    out = tmp_path / "transfer.csv"
    cross = cross_dataset(cfg, ["dtd"], tiny_backbone, results=out)
    assert list(cross.role) == ["source", "target"] and cross.accuracy.between(0, 100).all()
    # the all-class source run is recorded as such
    assert pd_read(cfg.source.results)[["method", "train_classes"]].values.tolist() == [["coop+dept", "all"]]
    dg = domain_generalization(cfg, ["dtd"], tiny_backbone)  # reuses the finished source run
    assert dg.accuracy[0] == cross.accuracy[0]
    from dpclab.pipeline import run

    src = run(replace_cfg(cfg), backbone=tiny_backbone)
    method = src.method
    assert method.cfg.n_classes == 5 and src.reused
    exp = target_experiment(cfg, "dtd", tiny_backbone)
    classes = tuple(exp.data.classnames)
    # cross-dataset: targets are new classes, ITM head only; DG: the linear head's rows of the target classes
    assert cross.accuracy[1] == task_accuracy(method.base, exp, Task(classes, exp.data.template, "new"))
    dg_task = Task(classes, exp.data.template, "all")
    assert method.head_rows(dg_task).tolist() == [0, 1, 2, 3]
    assert dg.accuracy[1] == task_accuracy(method, exp, dg_task)
    with pytest.raises(ValueError, match="target's classes to be source classes.*cross_dataset"):
        domain_generalization(cfg, ["oxford_pets"], tiny_backbone)
    s = summarize_transfer(pd_read(out))
    assert s[s.target == "average"].accuracy.iloc[0] == pytest.approx(cross.accuracy[1])


def replace_cfg(cfg):
    return cfg.replace(train_classes="all", results=None)


def pd_read(path):
    import pandas as pd

    return pd.read_csv(path)


def test_cli_transfer(json_root, tmp_path, tiny_backbone, monkeypatch, capsys):
    from conftest import write_json_dataset

    from dpclab import experiment
    from dpclab.lab import cli

    write_json_dataset(json_root, "dtd", "images", "split_zhou_DescribableTextures.json", n_classes=4)
    monkeypatch.setattr(experiment, "cached_backbone", lambda *a: tiny_backbone)
    rc = cli.main(["transfer", "--method", "coop", "--dataset", "eurosat", "--data-root", str(json_root),
                   "--targets", "dtd", "--seeds", "1", "--epochs", "1", "--shots", "2", "--no-progress",
                   "--cache-dir", str(tmp_path / "c"), "--runs-dir", str(tmp_path / "r"),
                   "--transfer-results", str(tmp_path / "t.csv"), "--results", str(tmp_path / "results.csv")])
    assert rc == 0 and "average" in capsys.readouterr().out and (tmp_path / "t.csv").is_file()
    recorded = pd.read_csv(tmp_path / "results.csv")  # the source run is recorded, as trained on all its classes
    assert list(recorded["train_classes"]) == ["all"] and list(recorded["dataset"]) == ["eurosat"]
