"""precision = fp32 | fp16 | amp (dpclab.precision) on the embedded model and a random ViT-B/16, on the CPU.

Stated tolerances (bfloat16 keeps 8 bits of mantissa, relative step 2^-8 = 0.004): L2-normalised image and text
features under CPU amp (bf16) agree with fp32 within 5e-3 per entry, logits (scale 100) within 0.25; fp16 within the
same bounds. Measured here: features 0.8e-3-1.5e-3, logits 0.03-0.08. CUDA (amp = fp16 autocast with a gradient
scaler, fp16 on the GPU) is not exercised by these tests: no GPU in the test environment.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from dpclab.backbones import load_clip
from dpclab.methods import METHODS, PLUGINS, resolve
from dpclab.methods.base import Task
from dpclab.methods.coop import CoOp
from dpclab.pipeline import run
from dpclab.runconfig import RunConfig
from dpclab.precision import PRECISIONS, autocast, cast_learned, check_precision, input_dtype
from dpclab.train import Examples, TrainConfig, fit

CPU = torch.device("cpu")
NAMES = ["cat", "golden retriever", "sea lion", "aircraft carrier"]
FEATURE_TOL, LOGIT_TOL = 5e-3, 0.25


@pytest.fixture(scope="module")
def embedded():
    return {p: load_clip("dpclab-tiny", "embedded", "cpu", precision=p) for p in PRECISIONS}


def _text_and_image(bb, precision: str, images: torch.Tensor | None):
    coop = cast_learned(CoOp(bb), precision)
    with torch.no_grad(), autocast(precision, CPU):
        txt = F.normalize(coop.text_features(NAMES).float(), dim=-1)
        img = None if images is None else F.normalize(
            bb.model.encode_image(images.to(input_dtype(precision))).float(), dim=-1)
    return txt, img


@pytest.mark.parametrize("precision", ["amp", "fp16"])
def test_low_precision_agrees_with_fp32_on_the_embedded_model(embedded, precision):
    images = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    t32, i32 = _text_and_image(embedded["fp32"], "fp32", images)
    t, i = _text_and_image(embedded[precision], precision, images)
    assert (t - t32).abs().max() < FEATURE_TOL and (i - i32).abs().max() < FEATURE_TOL
    assert (100 * i @ t.t() - 100 * i32 @ t32.t()).abs().max() < LOGIT_TOL
    assert (t - t32).abs().max() > 0  # it really ran in another precision


def test_amp_bf16_text_features_agree_with_fp32_on_a_random_vit_b16():
    """ViT-B/16 text tower only: bf16 autocast of the 224-px image tower takes minutes on CPUs without bf16 units."""
    torch.manual_seed(0)
    bb = load_clip("ViT-B-16", None, "cpu")
    t32, _ = _text_and_image(bb, "fp32", None)
    t16, _ = _text_and_image(bb, "amp", None)
    assert 0 < (t16 - t32).abs().max() < FEATURE_TOL


def test_precision_is_checked_and_part_of_the_backbone_key(embedded):
    with pytest.raises(ValueError, match="precision must be one of"):
        check_precision("bf16", CPU)
    assert embedded["fp32"].key + "-fp16" == embedded["fp16"].key
    assert embedded["fp32"].key + "-amp" == embedded["amp"].key
    assert embedded["fp16"].model.visual.conv1.weight.dtype == torch.float16
    assert embedded["amp"].model.visual.conv1.weight.dtype == torch.float32


METHOD_NAMES = [m for m, spec in METHODS.items() if spec.trainable] + [f"coop+{p}" for p in PLUGINS]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("name", METHOD_NAMES)
def test_every_method_fits_in_every_precision(embedded, name, precision):
    """One short fit (3 SGD steps) per method and precision on the embedded model: finite loss, the learned
    tensors move, and in fp16 the prompts are half precision (the reference's learned context inherits CLIP's dtype)."""
    bb = embedded[precision]
    torch.manual_seed(0)
    base_name, plugin = name.partition("+")[::2]
    if plugin == "dpc":  # DPC wraps a tuned base: its prompts are P
        method = resolve(name).build(bb, base_method=resolve(base_name).build(bb, seed=1), seed=1)
    else:
        method = resolve(name).build(bb, n_classes=4, seed=1)
    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(3)
    if method.input_kind == "pixels":
        x = torch.randn(len(labels), 3, bb.image_size, bb.image_size, generator=g)
    else:
        x = torch.randn(len(labels), bb.model.visual.output_dim, generator=g)
    x = x.to(input_dtype(precision))
    before = {n: p.detach().clone() for n, p in method.named_parameters() if p.requires_grad}
    task = Task(("cat", "dog", "car", "tree"))
    hist = fit(method, Examples(labels, features=lambda v: x), task,
               TrainConfig(epochs=2, batch_size=4, lr=0.01, warmup_epochs=1, progress=False), precision=precision)
    assert len(hist) == 2 and all(torch.isfinite(torch.tensor(h["loss"])) for h in hist)
    after = {n: p.detach() for n, p in method.named_parameters() if p.requires_grad}
    assert any(not torch.equal(before[n], after[n]) for n in before)
    prompt_dtypes = {p.dtype for n, p in after.items() if not n.startswith(("head", "cwt_"))}
    assert prompt_dtypes == {torch.float16 if precision == "fp16" else torch.float32}
    with torch.no_grad(), autocast(precision, CPU):
        logits = method(x[:4], Task(task.classnames, split="new")).logits
    assert torch.isfinite(logits.float()).all()


def test_pipeline_keys_runs_and_results_by_precision(json_root, tmp_path, embedded):
    common = dict(method="coop", dataset="eurosat", data_root=str(json_root), model="dpclab-tiny",
                  pretrained="embedded", shots=2, device="cpu", cache_dir=str(tmp_path / "cache"),
                  runs_dir=str(tmp_path / "runs"), results=str(tmp_path / "results.csv"),
                  train={"epochs": 2, "batch_size": 2}, progress=False)
    dirs = {p: run(RunConfig.of(**common, precision=p), backbone=embedded[p]).run_dir for p in ("fp32", "fp16")}
    assert dirs["fp32"] != dirs["fp16"] and "-fp16" in str(dirs["fp16"])
    feature_dirs = {d.name for d in (tmp_path / "cache" / "features").iterdir()}
    assert feature_dirs == {embedded["fp32"].key, embedded["fp16"].key}
    import pandas as pd

    assert list(pd.read_csv(common["results"])["precision"]) == ["fp32", "fp16"]
    with pytest.raises(ValueError, match="precision='fp32'"):
        run(RunConfig.of(**common, precision="amp"), backbone=embedded["fp32"])
