"""CoCoOp, KgCoOp, MaPLe, PromptSRC and prompted image encoding, on the tiny random-weight CLIP.

Each method: a few steps lower its loss; exactly its own parameters train (CLIP frozen); checkpoints round-trip;
an exact equivalence with CoOp / open_clip where the method admits one; one end-to-end ``run``.
The tiny model has 2 text and 2 vision layers, so the default prompt depth 9 is capped at 2.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dpclab.methods import METHODS, resolve
from dpclab.methods.base import Task, learned_state, load_learned_state, trainable_parameters
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig, train_config
from dpclab.train import TrainConfig
from dpclab.vision import encode_images


def _train_config(cfg):
    """The run's training settings under its resolved method."""
    return train_config(cfg, resolve(cfg.method))


TASK = Task(("cat", "dog", "red car", "tree"), "a photo of a {}.", "base", "eurosat")
BASELINES = ["cocoop", "kgcoop", "maple", "promptsrc"]

TRAINABLE = {  # what each method says it trains (tiny model: depth capped at 2 layers)
    "cocoop": ["ctx", "meta_net.linear1.weight", "meta_net.linear1.bias", "meta_net.linear2.weight",
               "meta_net.linear2.bias"],
    "kgcoop": ["ctx"],
    "maple": ["ctx", "deep_text.0", "to_vision.0.weight", "to_vision.0.bias", "to_vision.1.weight",
              "to_vision.1.bias"],
    "promptsrc": ["ctx", "deep_text.0", "vision_prompts.0", "vision_prompts.1"],
}


def batch(method, n: int = 8, seed: int = 0):
    """A fixed labelled batch of the method's input kind (features [n, 32] or images [n, 3, 32, 32])."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(len(TASK.classnames)).repeat(n // len(TASK.classnames))
    if method.input_kind == "features":
        return torch.randn(4, 32, generator=g)[y] + 0.3 * torch.randn(n, 32, generator=g), y
    return torch.randn(4, 3, 1, 1, generator=g)[y] + torch.randn(n, 3, 32, 32, generator=g), y


def sgd_steps(method, x, y, lr: float, steps: int) -> list[float]:
    opt = torch.optim.SGD(list(trainable_parameters(method).values()), lr=lr, momentum=0.9)
    losses = []
    for _ in range(steps):
        loss, _ = method.loss(x, y, TASK)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    losses.append(method.loss(x, y, TASK)[0].item())
    return losses


# ---------------------------------------------------------------------------------------------- vision encoder

def test_vision_encoding_without_prompts_is_encode_image(tiny_backbone):
    x = torch.randn(3, 3, 32, 32)
    model = tiny_backbone.model
    assert torch.equal(encode_images(model, x), model.encode_image(x))
    assert torch.equal(encode_images(model, x, []), model.encode_image(x))


def test_vision_prompts_change_features_and_are_checked(tiny_backbone):
    model = tiny_backbone.model
    x = torch.randn(2, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    p0, p1 = torch.randn(3, 32, generator=g), torch.randn(3, 32, generator=g)
    shallow = encode_images(model, x, [p0])
    deep = encode_images(model, x, [p0, p1])
    assert shallow.shape == (2, 32) and not torch.allclose(shallow, model.encode_image(x))
    assert not torch.allclose(shallow, deep)
    # per-image prompts [B, n, W]: image b with prompt b equals image b alone with that prompt
    per_image = torch.stack([p0, p1])
    mixed = encode_images(model, x, [per_image])
    assert torch.allclose(mixed[1], encode_images(model, x[1:], [p1])[0], atol=1e-6)
    with pytest.raises(ValueError, match="layer 1 has 2 tokens.*lengths must match"):
        encode_images(model, x, [p0, p1[:2]])
    with pytest.raises(ValueError, match="only 2 blocks"):
        encode_images(model, x, [p0, p1, p1])


# ---------------------------------------------------------------------------------------------- all baselines

def test_method_table_has_the_spec_defaults():
    expected = {"cocoop": (10, 1, 0.002), "kgcoop": (100, 128, 0.002), "maple": (5, 4, 0.0035),
                "promptsrc": (20, 4, 0.0025)}
    for name, (epochs, bs, lr) in expected.items():
        t = _train_config(RunConfig.of(method=name, progress=False))
        assert (t.epochs, t.batch_size, t.lr) == (epochs, bs, lr), name
    assert _train_config(RunConfig.of(method="maple", train={"epochs": 2})).epochs == 2


@pytest.mark.parametrize("name", BASELINES)
def test_trainable_parameters_are_exactly_the_methods(name, tiny_backbone):
    method = resolve(name).build(tiny_backbone, seed=1)
    assert list(trainable_parameters(method)) == TRAINABLE[name]
    frozen = [n for n, p in method.named_parameters() if not p.requires_grad]
    assert frozen and all(n.startswith("clip.") for n in frozen)
    assert all(not p.requires_grad for p in method.clip.parameters())
    x, y = batch(method)
    method.loss(x, y, TASK)[0].backward()
    assert all(p.grad is None for p in method.clip.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable_parameters(method).values())


@pytest.mark.parametrize("name,lr", [("cocoop", 0.02), ("kgcoop", 0.005), ("maple", 0.005), ("promptsrc", 0.005)])
def test_a_few_steps_lower_the_loss(name, lr, tiny_backbone):
    method = resolve(name).build(tiny_backbone, seed=1)
    x, y = batch(method)
    losses = sgd_steps(method, x, y, lr, steps=6)
    assert losses[-1] < 0.97 * losses[0], losses


@pytest.mark.parametrize("name", BASELINES)
def test_checkpoint_round_trip(name, tiny_backbone):
    trained = resolve(name).build(tiny_backbone, seed=1)
    x, y = batch(trained)
    sgd_steps(trained, x, y, 0.05, steps=1)
    if name == "promptsrc":  # give the aggregation buffers content too
        trained.on_epoch_end(0, TrainConfig(epochs=3))
    state = learned_state(trained)
    gpa = {k for k in state if k.startswith("gpa_")}
    assert set(state) - gpa == set(TRAINABLE[name])
    assert (len(gpa) == len(TRAINABLE[name])) == (name == "promptsrc")
    fresh = resolve(name).build(tiny_backbone, seed=2)
    assert not torch.equal(fresh(x, TASK).logits, trained(x, TASK).logits)
    load_learned_state(fresh, state)
    assert torch.equal(fresh(x, TASK).logits, trained(x, TASK).logits)
    assert all(torch.equal(v, learned_state(fresh)[k]) for k, v in state.items())
    other = "maple" if name == "promptsrc" else "promptsrc"
    with pytest.raises(ValueError, match="does not fit"):
        load_learned_state(resolve(other).build(tiny_backbone), state)


def test_seeded_build_is_reproducible_and_leaves_global_rng_alone(tiny_backbone):
    torch.manual_seed(123)
    before = torch.get_rng_state()
    a = resolve("promptsrc").build(tiny_backbone, seed=5)
    assert torch.equal(torch.get_rng_state(), before)
    b = resolve("promptsrc").build(tiny_backbone, seed=5)
    c = resolve("promptsrc").build(tiny_backbone, seed=6)
    assert torch.equal(a.vision_prompts[0], b.vision_prompts[0])
    assert not torch.equal(a.vision_prompts[0], c.vision_prompts[0])


# ---------------------------------------------------------------------------------------------- CoCoOp

def test_cocoop_with_zeroed_meta_net_output_is_coop(tiny_backbone):
    cocoop = resolve("cocoop").build(tiny_backbone, seed=1)
    coop = resolve("coop").build(tiny_backbone)
    x, _ = batch(cocoop)
    out = cocoop(x, TASK)
    assert out.text_features.shape == (8, 4, 32)
    assert not torch.allclose(out.text_features[0], out.text_features[1])  # per-image prompts
    with torch.no_grad():
        cocoop.meta_net.linear2.weight.zero_()
        cocoop.meta_net.linear2.bias.zero_()
    out = cocoop(x, TASK)
    ref = coop(x, TASK)
    assert torch.allclose(out.text_features, ref.text_features.expand(8, -1, -1), atol=1e-6)
    assert torch.allclose(out.logits, ref.logits, atol=1e-5)


def test_cocoop_chunked_per_image_encoding_matches_one_pass(tiny_backbone):
    one = resolve("cocoop").build(tiny_backbone, seed=1)
    chunked = resolve("cocoop").build(tiny_backbone, {"max_sequences": 4}, seed=1)  # one image per chunk
    full = resolve("cocoop").build(tiny_backbone, {"truncate": False}, seed=1)  # all 77 tokens
    x, _ = batch(one)
    ref = one(x, TASK).logits
    assert torch.allclose(chunked(x, TASK).logits, ref, atol=1e-5)
    assert torch.allclose(full(x, TASK).logits, ref, atol=1e-4)


# ---------------------------------------------------------------------------------------------- KgCoOp

def test_kgcoop_with_weight_zero_has_coops_loss(tiny_backbone):
    kg = resolve("kgcoop").build(tiny_backbone, {"weight": 0.0})
    coop = resolve("coop").build(tiny_backbone)
    x, y = batch(coop)
    assert kg.loss(x, y, TASK)[0].item() == coop.loss(x, y, TASK)[0].item()


def test_kgcoop_guidance_term_and_anchor_template(tiny_backbone):
    kg = resolve("kgcoop").build(tiny_backbone)
    x, y = batch(kg)
    # untrained context "a photo of a" *is* the anchor template -> the guidance term is zero
    loss, logs = kg.loss(x, y, TASK)
    assert abs(logs["kg"]) < 1e-5 and loss.item() == pytest.approx(logs["ce"], abs=1e-4)
    with torch.no_grad():
        kg.ctx.add_(0.5 * torch.randn_like(kg.ctx))
    loss, logs = kg.loss(x, y, TASK)
    assert logs["kg"] > 1e-4 and loss.item() == pytest.approx(logs["ce"] + 8.0 * logs["kg"], rel=1e-5)
    dtd = Task(TASK.classnames, "{} texture.", "base", "dtd")
    assert kg.anchor_template(dtd) == "a photo of a {}, a type of texture."
    assert kg.anchor_template(TASK) == "a photo of a {}."
    own = resolve("kgcoop").build(tiny_backbone, {"template": "itap of a {}."})
    assert own.anchor_template(dtd) == "itap of a {}."
    with pytest.raises(ValueError, match="exactly one"):
        resolve("kgcoop").build(tiny_backbone, {"template": "no placeholder"})


# ---------------------------------------------------------------------------------------------- MaPLe

def test_maple_depth_one_without_vision_prompts_is_coop(tiny_backbone):
    shallow = {"prompt_depth": 1, "vision_prompts": False}
    maple4 = resolve("maple").build(tiny_backbone, {**shallow, "n_ctx": 4})
    assert maple4.input_kind == "features" and list(trainable_parameters(maple4)) == ["ctx"]
    coop = resolve("coop").build(tiny_backbone)
    x, _ = batch(coop)
    assert torch.equal(maple4(x, TASK).logits, coop(x, TASK).logits)
    # MaPLe's default: "a photo" learned, "of a" fixed words == CoOp with ctx "a photo" before "of a {class}"
    maple2 = resolve("maple").build(tiny_backbone, shallow)
    assert maple2.fixed_words == "of a" and maple2.ctx.shape == (2, 32)
    coop2 = resolve("coop").build(tiny_backbone, {"ctx_init": "a photo"})
    task_of_a = Task(tuple(f"of a {c}" for c in TASK.classnames))
    assert torch.equal(maple2(x, TASK).logits, coop2(x, task_of_a).logits)


def test_maple_vision_prompts_are_coupled_to_text_prompts(tiny_backbone):
    maple = resolve("maple").build(tiny_backbone, seed=1)
    assert maple.depth == 2 and maple.input_kind == "pixels"
    x, _ = batch(maple)
    maple.image_features(x).sum().backward()  # the image side alone
    assert maple.ctx.grad.abs().sum() > 0 and maple.deep_text[0].grad.abs().sum() > 0
    with pytest.raises(ValueError, match="n_ctx=5 does not cover whole words"):
        resolve("maple").build(tiny_backbone, {"n_ctx": 5})


# ---------------------------------------------------------------------------------------------- PromptSRC

def test_promptsrc_gpa_of_identical_epochs_is_that_epoch(tiny_backbone):
    method = resolve("promptsrc").build(tiny_backbone, seed=1)
    before = {k: v.detach().clone() for k, v in trainable_parameters(method).items()}
    cfg = TrainConfig(epochs=20)
    for epoch in range(20):
        method.on_epoch_end(epoch, cfg)
    for k, p in trainable_parameters(method).items():
        assert torch.allclose(p, before[k], atol=1e-7, rtol=1e-6), k


def test_promptsrc_gpa_weights_epochs_by_a_gaussian(tiny_backbone):
    """Parameters equal to the 1-based epoch number, Gaussian centred at 2.5 over 4 epochs: by symmetry the
    aggregate is exactly 2.5; centred at 15 over 4 epochs, it is (numerically) the last epoch."""
    for mean, expected in [(2.5, 2.5), (15.0, 4.0)]:
        method = resolve("promptsrc").build(tiny_backbone, {"gpa_mean": mean}, seed=1)
        params = trainable_parameters(method)
        cfg = TrainConfig(epochs=4)
        for epoch in range(4):
            with torch.no_grad():
                for p in params.values():
                    p.fill_(epoch + 1.0)
            method.on_epoch_end(epoch, cfg)
        for p in params.values():
            assert torch.allclose(p, torch.full_like(p, expected), atol=1e-5)


def test_promptsrc_loss_terms(tiny_backbone):
    method = resolve("promptsrc").build(tiny_backbone, seed=1)
    x, y = batch(method)
    loss, logs = method.loss(x, y, TASK)
    assert loss.item() == pytest.approx(logs["ce"] + 25 * logs["l1_text"] + 10 * logs["l1_image"] + logs["kl"],
                                        rel=1e-5)
    # KL(p_zs || p) / (B*C), written out
    out = method(x, TASK)
    anchor = method.anchor_text_features(TASK.classnames)
    zs = method.clip.logit_scale.exp() * F.normalize(method.clip.encode_image(x), dim=-1) @ anchor.t()
    p_zs, logp = zs.softmax(-1), out.logits.log_softmax(-1)
    kl = (p_zs * (p_zs.log() - logp)).sum() / out.logits.numel()
    assert logs["kl"] == pytest.approx(kl.item(), rel=1e-4, abs=1e-7)
    # without vision prompts the prompted image features are the frozen ones: no image term
    text_only = resolve("promptsrc").build(tiny_backbone, {"vision_depth": 0}, seed=1)
    assert list(trainable_parameters(text_only)) == ["ctx", "deep_text.0"]
    assert text_only.loss(x, y, TASK)[1]["l1_image"] == 0.0
    assert anchor.shape == (4, 32) and torch.allclose(anchor.norm(dim=-1), torch.ones(4))


def test_promptsrc_interrupted_training_resumes_with_its_aggregate(json_root, tmp_path, tiny_backbone):
    from dpclab.train import fit

    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=2, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), progress=False)
    exp = Experiment.prepare(cfg, tiny_backbone)
    tcfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, progress=False)
    # the aggregate mixes all three epochs; two anchor templates keep the test fast
    method_cfg = {"gpa_mean": 2.0, "templates": ("a photo of a {}.", "itap of a {}.")}

    def train(run_dir, stop_after=None, method=None):
        method = method or resolve("promptsrc").build(tiny_backbone, method_cfg, seed=1)
        fit(method, exp.train_examples("pixels"), exp.train_task, tcfg, run_dir, {}, stop_after=stop_after)
        return method

    full = train(tmp_path / "a")
    train(tmp_path / "b", stop_after=2)
    resumed = train(tmp_path / "b")
    for k, v in learned_state(full).items():
        assert torch.equal(v, learned_state(resumed)[k]), k


# ---------------------------------------------------------------------------------------------- end to end

@pytest.mark.parametrize("name", BASELINES)
def test_run_end_to_end(name, json_root, tmp_path, tiny_backbone):
    cfg = RunConfig.of(method=name, dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                    results=str(tmp_path / "results.csv"), train={"epochs": 2, "batch_size": 4, "lr": 0.01},
                    progress=False)
    exp = Experiment.prepare(cfg, tiny_backbone)
    clip_before = {k: v.clone() for k, v in tiny_backbone.model.state_dict().items()}
    res = run(cfg, experiment=exp)
    assert [h["epoch"] for h in res.history] == [0, 1] and all(h["steps"] == 3 for h in res.history)
    assert set(res.metrics) == {"base", "new", "hm"} and 0 <= res.metrics["new"] <= 100
    assert (res.run_dir / "model.pt").is_file() and name in METHODS
    assert all(torch.equal(v, tiny_backbone.model.state_dict()[k]) for k, v in clip_before.items())
    again = run(cfg, experiment=exp)
    assert again.reused and again.metrics == res.metrics
