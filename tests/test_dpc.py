"""DPC: decoupled inference is exact, the reference parameterisation is a rescaled SGD, DHNO's sampler and loss,
step 2 trains only P', checkpoints, the ω grid / routing, and the pipeline + CLI end to end."""

from __future__ import annotations

import time

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from dpclab.methods import PLUGINS, resolve
from dpclab.methods.base import Task, learned_state, load_learned_state, trainable_parameters
from dpclab.methods.dpc import DPC, DPCConfig, sample_negative_classes, symmetric_infonce
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.train import Examples, TrainConfig, fit

NAMES = tuple(f"thing {i}" for i in range(12))
BASE, NEW = Task(NAMES[:6], split="base"), Task(NAMES[6:], split="new")


def _dpc(backbone, seed: int = 0, **cfg) -> DPC:
    """A DPC whose P' differs from P (as after training), on a CoOp whose P differs from its init."""
    coop = resolve("coop").build(backbone)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        coop.ctx.add_(0.05 * torch.randn(coop.ctx.shape, generator=g))
    dpc = DPC(coop, DPCConfig(**cfg))
    with torch.no_grad():
        for p in dpc.prompt.values():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
    return dpc.eval()


def _features(n: int = 40, dim: int = 32, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, dim, generator=torch.Generator().manual_seed(seed))


def test_registered_with_spec_defaults():
    spec = PLUGINS["dpc"]
    assert spec.cls is DPC and spec.two_step
    assert spec.train == {"epochs": 20, "batch_size": 4, "lr": 0.002}
    cfg = DPCConfig()
    assert (cfg.omega_b, cfg.omega_n, cfg.top_k, cfg.mode) == (0.2, 0.0, 8, "paper")


@pytest.mark.parametrize("mode", ["paper", "reparam", "released"])
def test_omega_n_zero_gives_exactly_the_baseline_new_predictions(tiny_backbone, mode):
    dpc = _dpc(tiny_backbone, mode=mode)
    x = _features()
    with torch.no_grad():
        new = dpc(x, NEW).logits
        baseline = dpc.base(x, NEW).logits
        base, base_baseline = dpc(x, BASE).logits, dpc.base(x, BASE).logits
    assert torch.equal(new, baseline) and torch.equal(new.argmax(-1), baseline.argmax(-1))
    assert not torch.allclose(base, base_baseline)  # the base side does use P'


def test_omega_b_zero_gives_exactly_the_baseline_base_predictions(tiny_backbone):
    dpc = _dpc(tiny_backbone, omega_b=0.0, omega_n=0.5)
    x = _features()
    with torch.no_grad():
        assert torch.equal(dpc(x, BASE).logits, dpc.base(x, BASE).logits)
        assert not torch.allclose(dpc(x, NEW).logits, dpc.base(x, NEW).logits)


def test_mixing_is_on_prompt_vectors_and_reparam_infers_base_with_p_prime(tiny_backbone):
    dpc = _dpc(tiny_backbone, omega_b=0.2)
    x = _features(8)
    p, pp = dpc.frozen()["ctx"].detach().clone(), dpc.prime()["ctx"].detach().clone()
    with torch.no_grad():
        dpc.base.ctx.copy_(0.2 * pp + 0.8 * p)
        expected = dpc.base(x, BASE).logits
        dpc.base.ctx.copy_(p)
        assert torch.allclose(dpc(x, BASE).logits, expected, atol=1e-5)
    ref = _dpc(tiny_backbone, mode="reparam", omega_b=0.2)
    with torch.no_grad():
        assert torch.equal(ref(x, BASE).logits, ref.forward_at(x, BASE, 1.0).logits)
        m = ref.prompt["ctx"]
        assert torch.allclose(ref.prime()["ctx"], (m - 0.8 * ref.frozen()["ctx"]) / 0.2)


def test_no_decoupling_ablation_uses_the_base_prompt_for_new_classes(tiny_backbone):
    dpc = _dpc(tiny_backbone, decouple=False, omega_b=0.4)
    x = _features(8)
    with torch.no_grad():
        assert torch.equal(dpc(x, NEW).logits, dpc.forward_at(x, NEW, 0.4).logits)


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "0.2", True])
def test_omega_outside_unit_interval_is_rejected(tiny_backbone, bad):
    with pytest.raises(ValueError, match=r"omega_b must be a number in \[0, 1\]"):
        DPCConfig(omega_b=bad)
    with pytest.raises(ValueError, match=r"omega_n must be a number in \[0, 1\]"):
        DPCConfig(omega_n=bad)
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        _dpc(tiny_backbone).forward_at(_features(2), BASE, bad)


def test_bad_options_are_rejected_with_the_fix():
    with pytest.raises(ValueError, match="needs omega_b > 0.*mode='paper'"):
        DPCConfig(mode="reparam", omega_b=0.0)
    with pytest.raises(ValueError, match="mode must be one of"):
        DPCConfig(mode="bogus")
    with pytest.raises(ValueError, match="renamed.*'reparam'.*'released'"):
        DPCConfig(mode="reference")
    with pytest.raises(ValueError, match="top_k must be >= 2"):
        DPCConfig(top_k=1)


def test_zero_shot_cannot_be_wrapped(tiny_backbone):
    with pytest.raises(ValueError, match="no trainable tensors.*tuned prompt learner"):
        DPC(resolve("zeroshot").build(tiny_backbone))


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_reparam_mode_is_sgd_on_p_prime_with_lr_over_omega_squared(tiny_backbone, weight_decay):
    """SGD(lr, momentum .9, decay λ) on M = ω·P' + (1-ω)·P equals SGD(lr/ω², momentum .9, no decay) on P' plus the
    loss (λω²/2)·‖P' + (1-ω)/ω·P‖² (the decay of M). With λ = 0 that is plain SGD on P' with lr/ω²."""
    w, lr, steps = 0.2, 0.01, 5
    ref, paper = _dpc(tiny_backbone, mode="reparam", omega_b=w), _dpc(tiny_backbone, mode="paper", omega_b=w)
    with torch.no_grad():  # start both at the same P and P' (M = ω P' + (1-ω) P)
        paper.base.ctx.copy_(ref.base.ctx)
        paper.prompt["ctx"].copy_(ref.prime()["ctx"])
    p = ref.frozen()["ctx"].detach().clone()
    x, y = _features(12), torch.arange(6).repeat(2)
    opt_ref = torch.optim.SGD(ref.prompt.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    opt_pap = torch.optim.SGD(paper.prompt.parameters(), lr=lr / w ** 2, momentum=0.9)
    naive = _dpc(tiny_backbone, mode="paper", omega_b=w)
    with torch.no_grad():
        naive.base.ctx.copy_(p)
        naive.prompt["ctx"].copy_(paper.prompt["ctx"])
    opt_naive = torch.optim.SGD(naive.prompt.parameters(), lr=lr / w ** 2, momentum=0.9,
                                weight_decay=weight_decay * w ** 2)
    for _ in range(steps):
        for dpc, opt, anchor in ((ref, opt_ref, False), (paper, opt_pap, True), (naive, opt_naive, False)):
            loss = dpc.train().loss(x, y, BASE)[0]
            if anchor:
                loss = loss + weight_decay * w ** 2 / 2 * (dpc.prompt["ctx"] + (1 - w) / w * p).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
    moved = (paper.prime()["ctx"] - p).abs().max()
    assert moved > 1e-3  # the steps did something
    assert torch.allclose(ref.prime()["ctx"], paper.prime()["ctx"], rtol=1e-4, atol=1e-6)
    assert torch.equal(ref.frozen()["ctx"], p) and torch.equal(paper.frozen()["ctx"], p)
    if weight_decay:  # decaying P' itself (the naive reading) is a different trajectory
        assert not torch.allclose(ref.prime()["ctx"], naive.prime()["ctx"], rtol=1e-4, atol=1e-6)


def test_sampler_drops_true_class_never_repeats_and_gives_two_negatives():
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        # enough classes that earlier anchors (up to 7 negatives each) cannot use up the pool: 4 + 3*7 + 2
        n_classes = int(torch.randint(27, 60, (1,), generator=g))
        anchors = torch.randperm(n_classes, generator=g)[:4].tolist()
        scores = torch.randn(4, n_classes, generator=g)
        for s in (scores, None):
            negs = sample_negative_classes(anchors, s, n_classes, 8, 2, g)
            flat = [c for n in negs for c in n]
            assert len(flat) == len(set(flat)) and not set(flat) & set(anchors)
            assert all(len(n) >= 2 and y not in n for y, n in zip(anchors, negs))
            assert all(len(n) <= 7 for n in negs)


def test_sampler_takes_the_frozen_models_top_k_in_order_then_fills_randomly():
    scores = torch.tensor([[9., 8, 7, 6, 5, 4, 3, 2, 1, 0], [0., 1, 2, 3, 4, 5, 6, 7, 8, 9]])
    g = torch.Generator().manual_seed(0)
    negs = sample_negative_classes([0, 9], scores, 10, top_k=4, min_negatives=2, generator=g)
    assert negs[0] == [1, 2, 3]  # top-4 = 0,1,2,3 minus the true class 0
    assert negs[1] == [8, 7, 6]
    # the second anchor's top-3 is all taken: random fill from unused classes
    negs = sample_negative_classes([0, 1], torch.tensor([[9., 8, 7, 0, 0, 0], [8., 9, 7, 0, 0, 0]]), 6, 3, 2, g)
    assert negs[0] == [2] + negs[0][1:] and len(negs[0]) == 2 and negs[0][1] in (3, 4, 5)
    assert len(negs[1]) == 2 and set(negs[1]) <= {3, 4, 5} and not set(negs[1]) & set(negs[0])
    # when the classes run out, fewer negatives (never a repeat)
    negs = sample_negative_classes([0, 1, 2, 3], torch.randn(4, 5), 5, 8, 2, g)
    assert sorted(c for n in negs for c in n) == [4]


def test_dhno_batch_has_one_training_image_per_negative_class_and_is_deterministic(tiny_backbone):
    dpc = _dpc(tiny_backbone).train()
    labels = torch.arange(6).repeat_interleave(3)
    feats = _features(18)
    take = feats.__getitem__
    anchors = torch.tensor([0, 4, 8])
    out = [dpc.build_batch(feats[anchors], labels[anchors], labels, take, BASE, torch.Generator().manual_seed(3))
           for _ in range(2)]
    (x, y, negs), (x2, y2, _) = out
    assert torch.equal(x, x2) and torch.equal(y, y2)
    assert y.tolist()[0] == 0 and y.tolist()[1:1 + len(negs[0])] == negs[0]
    assert len(y) == 3 + sum(map(len, negs)) and len(set(y.tolist())) == len(y)
    for row, label in zip(x, y):  # every image is a training image of its label
        match = (feats == row).all(1).nonzero().flatten()
        assert len(match) == 1 and labels[match[0]] == label
    with torch.no_grad():
        top = dpc.base(feats[:1], BASE).logits[0].topk(6).indices.tolist()
    assert negs[0] == [c for c in top if c not in (0, 1, 2)][:len(negs[0])]


def test_loss_is_clip_loss_symmetric_and_finite():
    g = torch.Generator().manual_seed(0)
    img, txt = torch.randn(5, 16, generator=g), torch.randn(9, 16, generator=g)
    labels = torch.tensor([3, 0, 7, 1, 8])
    scale = torch.tensor(100.0)
    loss = symmetric_infonce(img, txt, labels, scale)
    i, t = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)[labels]
    target = torch.arange(5)
    clip_loss = (F.cross_entropy(scale * i @ t.t(), target) + F.cross_entropy(scale * t @ i.t(), target)) / 2
    assert torch.isfinite(loss) and torch.allclose(loss, clip_loss, atol=1e-5)
    # symmetric: swapping the roles of images and texts gives the same loss
    swapped = symmetric_infonce(txt[labels], torch.zeros(9, 16).index_copy(0, labels, img), labels, scale)
    assert torch.allclose(loss, swapped, atol=1e-5)
    # a class shared by two anchors makes both its images positives for its text row, loss stays finite
    dup = symmetric_infonce(img, txt, torch.tensor([3, 3, 7, 1, 8]), scale)
    assert torch.isfinite(dup)


def test_checkpoint_round_trips(tiny_backbone):
    dpc = _dpc(tiny_backbone, mode="reparam")
    state = learned_state(dpc)
    assert sorted(state) == ["base.ctx", "prompt.ctx"]  # no CLIP weights in a DPC checkpoint
    fresh = DPC(resolve("coop").build(tiny_backbone), DPCConfig(mode="reparam")).eval()
    load_learned_state(fresh, state)
    x = _features(6)
    with torch.no_grad():
        for task in (BASE, NEW):
            assert torch.equal(fresh(x, task).logits, dpc(x, task).logits)
    assert not any(p.requires_grad for p in fresh.base.parameters())


def test_step_two_trains_only_p_prime(tiny_backbone):
    dpc = _dpc(tiny_backbone, seed=1)
    assert list(trainable_parameters(dpc)) == ["prompt.ctx"]
    clip_before = {k: v.clone() for k, v in dpc.clip.state_dict().items()}
    p_before, pp_before = dpc.base.ctx.detach().clone(), dpc.prompt["ctx"].detach().clone()
    labels = torch.arange(6).repeat(4)
    feats = torch.randn(6, 32, generator=torch.Generator().manual_seed(2))[labels] + 0.1 * _features(24)
    hist = fit(dpc, Examples(labels, features=lambda v: feats), BASE,
               TrainConfig(epochs=3, batch_size=4, lr=0.5, progress=False))
    assert all(h["batch_images"] > 4 for h in hist)  # anchors plus negatives
    assert torch.equal(dpc.base.ctx, p_before)
    assert not torch.equal(dpc.prompt["ctx"], pp_before)
    assert all(torch.equal(v, clip_before[k]) for k, v in dpc.clip.state_dict().items())


def _cfg(root, tmp_path, **kw):
    base = dict(method="coop+dpc", dataset="eurosat", data_root=str(root), model="unused", pretrained="unused",
                shots=4, seed=1, device="cpu", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                results=str(tmp_path / "runs" / "results.csv"), train={"epochs": 3, "lr": 0.05},
                base_train={"epochs": 3, "batch_size": 4, "lr": 0.05}, progress=False)
    base.update(kw)
    return RunConfig.of(**base)


def test_run_coop_plus_dpc_end_to_end_keeps_new_and_resumes(json_root, tmp_path, tiny_backbone):
    from dpclab.pipeline import plan_run

    cfg = _cfg(json_root, tmp_path)
    exp = Experiment.prepare(cfg, tiny_backbone)
    res = run(cfg, experiment=exp)
    assert isinstance(res.method, DPC) and len(res.history) == 3
    table = pd.read_csv(cfg.source.results)
    assert list(table["method"]) == ["coop", "coop+dpc"]
    coop, dpc = table.iloc[0], table.iloc[1]
    assert dpc["new"] == coop["new"]  # omega_n = 0: new classes see the step-1 model exactly
    assert not torch.equal(res.method.prompt["ctx"], res.method.base.ctx)
    # step 1 reused from its run directory; the DPC run reused as a whole
    again = run(cfg, experiment=exp)
    assert again.reused and again.metrics == res.metrics
    assert torch.equal(again.method.prompt["ctx"], res.method.prompt["ctx"])
    # interrupted step 2 resumes to the same result (DHNO batches come from the epoch generator)
    cfg2 = _cfg(json_root, tmp_path, runs_dir=str(tmp_path / "runs2"), results=None)
    step1 = run(_cfg(json_root, tmp_path, method="coop", runs_dir=str(tmp_path / "runs2"), results=None,
                     train=cfg.base_train, base_train={}), experiment=exp)
    method = resolve("coop+dpc").build(tiny_backbone, n_classes=3, base_method=step1.method)
    step2 = plan_run(cfg2, exp)[-1]  # its run directory and fingerprint (dpclab.runkey)
    assert step2.fingerprint["revision"] == {"dpc": 2}
    fit(method, exp.train_examples("features"), exp.train_task, step2.train, step2.run_dir, step2.fingerprint,
        stop_after=2)
    resumed = run(cfg2, experiment=exp)
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in res.history]
    assert resumed.metrics == res.metrics


def test_a_run_of_an_older_dpc_revision_is_kept_and_not_reused(json_root, tmp_path, tiny_backbone, monkeypatch):
    """DPC's batches changed in issue 22 (revision 1) and its released mode's crops in issue 26 (revision 2): a step 2
    made by older code (revision 0, no revision in its key; revision 1) lives in another run directory, is left as it
    is, and is not reused; step 1 (CoOp) is the same run."""
    from dataclasses import replace

    from dpclab.methods import table
    from dpclab.pipeline import plan_run

    cfg = _cfg(json_root, tmp_path)
    exp = Experiment.prepare(cfg, tiny_backbone)
    assert PLUGINS["dpc"].revision == 2
    olds = []
    for revision in (0, 1):
        monkeypatch.setitem(table.PLUGINS, "dpc", replace(table.PLUGINS["dpc"], revision=revision))
        olds.append((run(cfg, experiment=exp), plan_run(cfg, exp)))
        monkeypatch.undo()
    new_plan = plan_run(cfg, exp)
    for old, old_plan in olds:
        assert new_plan[0].run_dir == old_plan[0].run_dir and new_plan[0].action == "reuse"
        assert new_plan[1].run_dir != old_plan[1].run_dir and new_plan[1].action == "train"
    assert olds[0][1][1].run_dir != olds[1][1][1].run_dir
    assert '"revision": {"dpc": 2}' in new_plan[1].full_fingerprint
    res = run(cfg, experiment=exp)
    assert not res.reused and res.run_dir == new_plan[1].run_dir
    assert all((old.run_dir / "result.json").is_file() for old, _ in olds)


def test_cli_trains_coop_plus_dpc(json_root, tmp_path, tiny_model_name, capsys):
    from dpclab.lab.cli import main

    rc = main(["train", "--method", "coop+dpc", "--dataset", "eurosat", "--data-root", str(json_root),
               "--model", tiny_model_name, "--pretrained", "random", "--shots", "2", "--seeds", "1",
               "--epochs", "2", "--base-train", "epochs=2", "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--runs-dir",
               str(tmp_path / "r"), "--results", str(tmp_path / "r.csv"), "--opt", "omega_b=0.5", "--no-progress"])
    assert rc == 0 and "coop+dpc eurosat seed 1: base" in capsys.readouterr().out
    assert list(pd.read_csv(tmp_path / "r.csv")["method"]) == ["coop", "coop+dpc"]
    assert main(["train", "--method", "coop+dpc", "--dataset", "eurosat", "--data-root", str(json_root),
                 "--model", tiny_model_name, "--pretrained", "random", "--shots", "2", "--seeds", "1",
                 "--device", "cpu", "--cache-dir", str(tmp_path / "c"), "--runs-dir", str(tmp_path / "r"),
                 "--opt", "omega_b=2", "--no-progress"]) == 2
    assert "omega_b must be a number in [0, 1]" in capsys.readouterr().err


def test_omega_grid_matches_evaluation_saves_and_views_fast(json_root, tmp_path, tiny_backbone):
    from dpclab.omega import OmegaGrid, choose_omega_b, experiment_grid, omega_view, routing_report

    cfg = _cfg(json_root, tmp_path, results=None)
    exp = Experiment.prepare(cfg, tiny_backbone)
    res = run(cfg, experiment=exp)
    dpc = res.method
    grid = experiment_grid(dpc, exp, omegas=(0.0, 0.2, 0.5, 1.0))
    assert grid.text["base"].shape == (4, 3, 32) and grid.logits["new"].shape[0] == 4
    view = omega_view(grid, 0.2, 0.0)
    assert view["base"] == res.metrics["base"] and view["new"] == res.metrics["new"]
    assert omega_view(grid, 0.0, 0.0)["base"] == exp.accuracy(dpc.base, "base")
    assert omega_view(grid, 0.24, 0.0)["omega_b"] == 0.2  # nearest grid value
    path = grid.save(tmp_path / "grid.pt")
    loaded = OmegaGrid.load(path)
    assert torch.equal(loaded.accuracy["base"], grid.accuracy["base"]) and loaded.omegas == grid.omegas
    t0 = time.perf_counter()
    for i in range(1000):
        omega_view(loaded, (i % 11) / 10, 0.0)
    assert (time.perf_counter() - t0) / 1000 < 0.01  # well under 100 ms per slider move
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        omega_view(loaded, 1.2, 0.0)
    choice = choose_omega_b(dpc, exp, omegas=(0.0, 0.5, 1.0))
    assert choice.omega_b in (0.0, 0.5, 1.0) and len(choice.val_accuracy) == 3
    assert choice.val_accuracy[choice.omegas.index(choice.omega_b)] == max(choice.val_accuracy)
    report = routing_report(dpc, exp)
    assert 0 <= report["routing_accuracy"] <= 100 and 0 <= report["auto"] <= 100
    same = routing_report(dpc, exp, omega_b=0.0, omega_n=0.0)  # one prompt everywhere: routing cannot matter
    assert same["frozen"] == same["oracle"] == same["auto"] == same["base_prompt_everywhere"]


def test_routing_pieces():
    from dpclab.omega import auroc, base_mass, route_predictions

    logits = torch.tensor([[5.0, 0, 0, 0], [0, 0, 5, 0], [0, 5, 0, 0]])
    mask = torch.tensor([True, True, False, False])
    mass = base_mass(logits, mask)
    assert mass[0] > 0.9 and mass[1] < 0.1 and mass[2] > 0.9
    assert auroc(mass, torch.tensor([True, False, True])) == 1.0
    assert auroc(mass, torch.tensor([False, True, False])) == 0.0
    other = torch.tensor([[0.0, 0, 0, 9], [0, 0, 0, 9], [0, 0, 0, 9]])
    assert route_predictions(logits, other, mass > 0.5).tolist() == [0, 3, 1]


@pytest.mark.parametrize("name", ["kgcoop", "maple", "promptsrc"])
def test_dpc_covers_every_prompt_tensor_of_deep_prompt_bases(tiny_backbone, name):
    """For deep/multimodal prompts P is *all* trainable tensors; ω_n = 0 still reproduces the base exactly, and a
    training step moves only P'."""
    base = resolve(name).build(tiny_backbone)
    names = list(trainable_parameters(base))
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in base.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    dpc = DPC(base, DPCConfig())
    assert dpc.prompt_names == names
    assert sorted(trainable_parameters(dpc)) == sorted(f"prompt.{n.replace('.', '/')}" for n in names)
    x = _features(4) if dpc.input_kind == "features" else torch.randn(4, 3, 32, 32, generator=g)
    frozen = {n: p.detach().clone() for n, p in dpc.frozen().items()}
    opt = torch.optim.SGD(dpc.prompt.parameters(), lr=1.0)
    loss = dpc.train().loss(x, torch.tensor([0, 1, 2, 3]), BASE)[0]
    opt.zero_grad()
    loss.backward()
    opt.step()
    assert all(not torch.equal(dpc.prime()[n], frozen[n]) for n in names)  # every prompt tensor trained
    assert all(torch.equal(dpc.frozen()[n], frozen[n]) for n in names)
    dpc.eval()
    with torch.no_grad():
        assert torch.equal(dpc(x, NEW).logits, dpc.base(x, NEW).logits)
        assert not torch.allclose(dpc(x, BASE).logits, dpc.base(x, BASE).logits)


# ------------------------------------------------------------------------ released code's protocol details
@pytest.mark.parametrize("mode", ["paper", "released"])
def test_all_split_takes_the_new_class_rule_except_on_imagenet_as_released(tiny_backbone, mode):
    """sple_coop.py l.689: the ω_n prompt for "new" and for "all" on every dataset but ImageNet (the source)."""
    dpc = _dpc(tiny_backbone, mode=mode, omega_b=0.2, omega_n=0.0)
    x = _features(8)
    names = NAMES[:6]
    with torch.no_grad():
        step1 = dpc.base(x, Task(names, split="all", name="imagenet_sketch")).logits
        assert torch.equal(dpc(x, Task(names, split="all", name="imagenet_sketch")).logits, step1)  # ω_n = 0
        assert torch.equal(dpc(x, Task(names, split="new", name="imagenet")).logits, step1)
        on_imagenet = dpc(x, Task(names, split="all", name="imagenet")).logits
        assert torch.equal(on_imagenet, dpc(x, Task(names, split="base", name="imagenet")).logits)
    assert not torch.allclose(on_imagenet, step1)
    assert dpc.omega_for("all", "imagenet") == dpc.base_omega and dpc.omega_for("all", "caltech101") == 0.0


def test_released_mode_crops_every_hard_negative_draw_afresh_and_other_modes_read_the_epoch_view(
        json_root, tmp_path, tiny_backbone):
    cfg = RunConfig.of(method="coop", dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None, progress=False)
    exp = Experiment.prepare(cfg, tiny_backbone)
    data = exp.train_examples("features")
    data.task = exp.train_task
    tcfg = TrainConfig(epochs=20, batch_size=2, progress=False)
    from dpclab.methods.dpc import step2_view

    view = data.features(step2_view(3, tcfg))  # the epoch's step-2 view of every training image
    found = {}
    for mode in ("paper", "released"):
        dpc = _dpc(tiny_backbone, mode=mode, top_k=3, min_negatives=2).train()
        batches = [x for x, _ in dpc.batches(data, 3, tcfg, torch.Generator().manual_seed(3))]
        again = [x for x, _ in dpc.batches(data, 3, tcfg, torch.Generator().manual_seed(3))]
        assert all(torch.equal(a, b) for a, b in zip(batches, again))  # reproducible (a resumed run rebuilds them)
        rows = torch.cat(batches)
        in_view = [bool((view == r).all(1).any()) for r in rows]
        found[mode] = (rows, in_view)
    rows, in_view = found["paper"]
    assert all(in_view)  # paper (and reparam): anchors and negatives all read the epoch's view, as before
    rows, in_view = found["released"]
    anchors = [i for i, hit in enumerate(in_view) if hit]
    assert 0 < len(anchors) < len(rows)  # anchors keep the epoch's view, negatives are crops of their own
    negatives = rows[[i for i, hit in enumerate(in_view) if not hit]]
    assert len({tuple(r.tolist()) for r in negatives}) == len(negatives)  # every draw its own crop
    # a negative is that image's own crop through the frozen encoder: the same size and scale as the cached views
    assert negatives.shape[1] == view.shape[1]
    assert 0.5 < negatives.norm(dim=1).mean() / view.norm(dim=1).mean() < 2.0
