"""DPC's three modes and DePT's released switches (docs/fidelity.md), on the tiny random-weight CLIP."""

from __future__ import annotations

import pytest
import torch

from dpclab.methods.base import Task
from dpclab.methods.dept import DePT, DePTConfig
from dpclab.lab.paper_numbers import DEPT_COOP_BASELINE, DEPT_KGCOOP_BASELINE, released_setting, reproduction_runs
from dpclab.methods.dpc import DPC, DPCConfig, duplicate_row_infonce
from dpclab.pipeline import build_method

NAMES = tuple(f"thing {i}" for i in range(6))
BASE, NEW = Task(NAMES, split="base"), Task(tuple(f"other {i}" for i in range(4)), split="new")


def _released(backbone, omega_b: float = 0.2) -> DPC:
    coop = build_method("coop", backbone)
    with torch.no_grad():
        coop.ctx.add_(0.05 * torch.randn(coop.ctx.shape, generator=torch.Generator().manual_seed(0)))
    return DPC(coop, DPCConfig(mode="released", omega_b=omega_b))


def _batch(n: int = 8, dim: int = 32, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, dim, generator=g), torch.tensor([0, 1, 2, 3, 4, 5, 0, 2])[:n]  # classes 0 and 2 repeat


@pytest.mark.parametrize("weight_decay", [0.0, 5e-4])
def test_released_mode_step_is_sgd_at_lr_over_omega_with_decay_omega_lambda(tiny_backbone, weight_decay):
    """SGD(lr, momentum .9, decay λ) on the released code's M equals SGD(lr/ω_b, momentum .9, decay ω_b·λ) on P'
    trained directly, step for step."""
    w, lr = 0.2, 0.05
    dpc = _released(tiny_backbone, w)
    direct = build_method("coop", tiny_backbone)  # P' trained directly with the claimed hyper-parameters
    with torch.no_grad():
        direct.ctx.copy_(dpc.prime()["ctx"])
    x, y = _batch()
    opt_m = torch.optim.SGD(dpc.prompt.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    opt_p = torch.optim.SGD([direct.ctx], lr=lr / w, momentum=0.9, weight_decay=weight_decay * w)
    start = direct.ctx.detach().clone()
    for _ in range(3):
        loss_m = dpc.train().loss(x, y, BASE)[0]
        out = direct(x, BASE)
        loss_p = duplicate_row_infonce(out.image_features, out.text_features, y, tiny_backbone.logit_scale)
        torch.testing.assert_close(loss_m, loss_p, atol=1e-6, rtol=0)
        for opt, loss in ((opt_m, loss_m), (opt_p, loss_p)):
            opt.zero_grad()
            loss.backward()
            opt.step()
        torch.testing.assert_close(dpc.prime()["ctx"], direct.ctx, atol=2e-6, rtol=0)
        torch.testing.assert_close(dpc.prompt["ctx"], direct.ctx, atol=2e-6, rtol=0)  # P' is M itself
    moved = (direct.ctx - start).norm()
    assert moved > 1e-3
    # and not the intended reparameterisation: lr/ω_b² would have moved P' 1/ω_b = 5 times further per step
    assert not torch.allclose(dpc.prime()["ctx"], start + (direct.ctx - start) / w, atol=1e-4)


def test_released_loss_is_the_duplicate_row_infonce(tiny_backbone):
    dpc = _released(tiny_backbone)
    x, y = _batch()
    with torch.no_grad():
        loss = dpc.loss(x, y, BASE)[0]
        txt = dpc.base(x, BASE).text_features  # P' = M = P at the start
    # computed here independently: one text row per image, arange targets, both directions
    i = x / x.norm(dim=-1, keepdim=True)
    t = txt / txt.norm(dim=-1, keepdim=True)
    s = tiny_backbone.logit_scale
    rows = t[y]
    n = len(y)
    i2t = -torch.log_softmax(s * i @ rows.t(), dim=1)[range(n), range(n)].mean()
    t2i = -torch.log_softmax(s * rows @ i.t(), dim=1)[range(n), range(n)].mean()
    torch.testing.assert_close(loss, (i2t + t2i) / 2, atol=1e-5, rtol=0)
    merged = DPC(build_method("coop", tiny_backbone), DPCConfig(mode="paper"))
    with torch.no_grad():
        merged.base.ctx.copy_(dpc.base.ctx)
        merged.prompt["ctx"].copy_(dpc.base.ctx)
        assert abs(merged.loss(x, y, BASE)[0] - loss) > 1e-3  # the paper/reparam modes merge duplicates


def test_released_mode_leaves_new_classes_exactly_at_step_one(tiny_backbone):
    dpc = _released(tiny_backbone)
    x, y = _batch()
    opt = torch.optim.SGD(dpc.prompt.parameters(), lr=0.5)
    loss = dpc.train().loss(x, y, BASE)[0]
    loss.backward()
    opt.step()
    dpc.eval()
    with torch.no_grad():
        assert torch.equal(dpc(x, NEW).logits, dpc.base(x, NEW).logits)
        assert not torch.allclose(dpc(x, BASE).logits, dpc.base(x, BASE).logits)
        assert torch.equal(dpc(x, BASE).logits, dpc.forward_at(x, BASE, 1.0).logits)  # base uses P' itself


# ------------------------------------------------------------------------------------------------------ DePT


def _dept(backbone, **cfg) -> DePT:
    torch.manual_seed(0)
    dept = DePT(build_method("coop", backbone), DePTConfig(n_classes=len(NAMES), **cfg))
    dept._bind_classes(NAMES)
    with torch.no_grad():
        dept.head.weight.normal_(0, 1.0)
    return dept.eval()


def test_dept_released_fusion_adds_logits(tiny_backbone):
    x, _ = _batch()
    paper, released = _dept(tiny_backbone), _dept(tiny_backbone, fusion="logits")
    with torch.no_grad():
        out_p, out_r = paper(x, BASE), released(x, BASE)
        itm, cat = out_r.extras["itm_logits"], out_r.extras["cat_logits"]
        torch.testing.assert_close(out_r.logits, 0.3 * itm.float() + 0.7 * cat, atol=1e-5, rtol=0)
        probs = 0.7 * cat.softmax(-1) + 0.3 * itm.float().softmax(-1)
        torch.testing.assert_close(out_p.logits.exp(), probs, atol=1e-5, rtol=0)
        assert not torch.allclose(out_p.logits.softmax(-1), out_r.logits.softmax(-1), atol=1e-3)
        torch.testing.assert_close(released(x, NEW).logits, paper(x, NEW).logits)  # new classes: ITM alone
    with pytest.raises(ValueError, match="fusion must be 'probs'.*or 'logits'"):
        DePTConfig(n_classes=3, fusion="mean")


def test_dept_released_prompt_setting():
    coop = released_setting("coop+dept")
    assert coop["base_method_cfg"] == {"n_ctx": 16, "ctx_init": None}
    baseline = released_setting(DEPT_COOP_BASELINE)
    assert baseline["method_cfg"] == {"n_ctx": 16, "ctx_init": None}
    assert baseline["train"]["epochs"] == 10
    for name in ("kgcoop+dept", "maple+dept", "cocoop+dept"):  # their released configs are dpclab's defaults
        assert released_setting(name) == {}
    with pytest.raises(ValueError, match=r"no released setting for 'promptsrc\+dept'"):
        released_setting("promptsrc+dept")
    assert released_setting("maple+dpc") == {"method_cfg": {"mode": "released"}}  # DPC on every base


def test_reproduction_runs_are_the_released_settings_as_data():
    runs = reproduction_runs(["coop", "coop+dpc", "promptsrc+dpc", "coop+dept", "kgcoop+dept", "promptsrc+dept"])
    assert list(runs) == ["coop", "coop+dpc", "promptsrc+dpc", "coop+dept", DEPT_COOP_BASELINE, "kgcoop+dept",
                          DEPT_KGCOOP_BASELINE, "promptsrc+dept"]
    assert runs["coop"] == ("coop", {}) and runs["promptsrc+dept"] == ("promptsrc+dept", {})
    assert runs["promptsrc+dpc"] == ("promptsrc+dpc", {"method_cfg": {"mode": "released"}})
    assert runs["coop+dept"] == ("coop+dept", {"base_method_cfg": {"n_ctx": 16, "ctx_init": None}})
    assert runs[DEPT_COOP_BASELINE] == ("coop", released_setting(DEPT_COOP_BASELINE))


def test_coop_with_16_random_tokens_builds(tiny_backbone):
    m = build_method("coop", tiny_backbone, released_setting(DEPT_COOP_BASELINE)["method_cfg"], seed=1)
    assert m.ctx.shape[0] == 16


@pytest.mark.parametrize("name,cfg", [("coop", {"n_ctx": 16}), ("cocoop", {"n_ctx": 8}), ("kgcoop", {"n_ctx": 2}),
                                      ("promptsrc", {"n_ctx_text": 16})])
def test_ctx_init_with_another_token_count_is_refused(tiny_backbone, name, cfg):
    with pytest.raises(ValueError, match="ctx_init='a photo of a' has 4 tokens.*ctx_init=None"):
        build_method(name, tiny_backbone, cfg)


def test_ctx_init_alone_sets_the_count_and_matching_counts_work(tiny_backbone):
    assert build_method("coop", tiny_backbone, {"ctx_init": "a photo"}).ctx.shape[0] == 2
    assert build_method("coop", tiny_backbone, {"n_ctx": 4}).ctx.shape[0] == 4
    assert build_method("coop", tiny_backbone, {"n_ctx": 8, "ctx_init": None}, seed=1).ctx.shape[0] == 8
    assert build_method("coop", tiny_backbone, {"ctx_init": None}, seed=1).ctx.shape[0] == 4
