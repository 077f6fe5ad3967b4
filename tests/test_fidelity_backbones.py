"""Real-CLIP fidelity of the backbone (docs/fidelity.md): QuickGELU for OpenAI weights, OpenAI's TorchScript .pt files.

Offline: the tag's download is replaced by random weights saved from the ``-quickgelu`` model, and the TorchScript
archive is made here from random weights in OpenAI's layout (half-precision weights, extra integer entries).
"""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.model import convert_weights_to_lp
from open_clip.transformer import QuickGELU
from torch import nn

from dpclab.backbones import is_torchscript_archive, load_clip, openai_file_reason, tag_needs_quick_gelu


def _activations(model: nn.Module) -> set[type]:
    return {type(block.mlp.gelu) for block in [*model.visual.transformer.resblocks, *model.transformer.resblocks]}


def _features(model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    images = torch.randn(2, 3, 224, 224, generator=g)
    tokens = open_clip.get_tokenizer("ViT-B-32")(["a photo of a cat.", "a sketch of a dog."])
    with torch.no_grad():
        return model.encode_image(images), model.encode_text(tokens)


@pytest.fixture(scope="module")
def quickgelu_b32():
    """A random ViT-B-32-quickgelu (the architecture OpenAI's ViT-B/32 weights were trained with)."""
    torch.manual_seed(3)
    return open_clip.create_model("ViT-B-32-quickgelu").eval()


@pytest.fixture(scope="module")
def quickgelu_file(tmp_path_factory, quickgelu_b32):
    path = tmp_path_factory.mktemp("weights") / "open_clip_pytorch_model.bin"
    torch.save(quickgelu_b32.state_dict(), path)
    return path


def test_quick_gelu_tags_come_from_open_clips_registry():
    assert tag_needs_quick_gelu("ViT-B-32", "openai") and tag_needs_quick_gelu("ViT-B-16", "openai")
    assert tag_needs_quick_gelu("ViT-B-32", "laion400m_e32")  # not only OpenAI's: whatever the config says
    assert not tag_needs_quick_gelu("ViT-B-32", "laion2b_s34b_b79k")


def test_openai_tag_builds_quick_gelu_and_equals_the_quickgelu_model(quickgelu_file, monkeypatch, quickgelu_b32):
    path = quickgelu_file
    asked = []

    def fake_download(cfg, *args, **kwargs):  # what open_clip downloads for the tag: here, the random weights
        asked.append(cfg)
        return str(path)

    monkeypatch.setattr(open_clip.factory, "download_pretrained", fake_download)
    empty = quickgelu_file.parent / "no_cache"  # a machine that has the tag cached must still take the download path
    for var in ("HF_HUB_CACHE", "HF_HOME", "HOME"):
        monkeypatch.setenv(var, str(empty))
    bb = load_clip("ViT-B-32", "openai", "cpu")
    assert asked and asked[0].get("quick_gelu") is True
    assert _activations(bb.model) == {QuickGELU}
    assert bb.quick_gelu_forced and bb.key == "ViT-B-32-openai-quickgelu"  # no reuse of GELU-era caches
    for ours, ref in zip(_features(bb.model), _features(quickgelu_b32)):
        torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # what open_clip alone builds from the same tag and weights: GELU, and other features (the bug fixed here)
    with pytest.warns(UserWarning, match="QuickGELU mismatch"):
        plain = open_clip.create_model("ViT-B-32", pretrained="openai").eval()
    assert QuickGELU not in _activations(plain)
    assert (_features(plain)[0] - _features(quickgelu_b32)[0]).abs().max() > 1e-3


def test_a_plain_state_dict_file_keeps_the_configs_activation(quickgelu_file):
    path = quickgelu_file
    assert openai_file_reason("ViT-B-32", path, "0" * 64) is None
    assert QuickGELU not in _activations(load_clip("ViT-B-32", str(path), "cpu").model)
    # the documented way for OpenAI-derived weights saved elsewhere: the -quickgelu model name
    bb = load_clip("ViT-B-32-quickgelu", str(path), "cpu")
    assert _activations(bb.model) == {QuickGELU} and not bb.quick_gelu_forced


def test_files_known_to_be_openais(tmp_path):
    url = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["url"]
    sha = url.rstrip("/").split("/")[-2]
    assert len(sha) == 64
    assert "checksum of ViT-B-16" in openai_file_reason("ViT-B-16", tmp_path / "x.pt", sha)
    hub = open_clip.get_pretrained_cfg("ViT-B-16", "openai")["hf_hub"].strip("/").split("/")
    cached = tmp_path / f"models--{hub[0]}--{hub[1]}" / "snapshots" / "abc" / "open_clip_model.safetensors"
    assert "Hugging Face cache" in openai_file_reason("ViT-B-16", cached, "0" * 64)


def _openai_archive(model: nn.Module, path) -> None:
    """A TorchScript archive in OpenAI's layout: the CLIP state dict (conv/linear/attention weights in fp16, as
    OpenAI's convert_weights leaves them) plus OpenAI's integer entries, in a scripted module tree."""

    class Node(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    state = dict(model.state_dict())
    state.update(input_resolution=torch.tensor(224), context_length=torch.tensor(77), vocab_size=torch.tensor(49408))
    root = Node()
    for key, value in state.items():
        *parents, leaf = key.split(".")
        node = root
        for name in parents:
            if name not in node._modules:
                node.add_module(name, Node())
            node = node._modules[name]
        if value.is_floating_point():
            node.register_parameter(leaf, nn.Parameter(value.clone(), requires_grad=False))
        else:
            node.register_buffer(leaf, value.clone())
    torch.jit.save(torch.jit.script(root), str(path))


@pytest.fixture(scope="module")
def openai_archive(tmp_path_factory, quickgelu_b32):
    """(archive path, the -quickgelu model holding exactly the archive's weights in fp32)."""
    half = open_clip.create_model("ViT-B-32-quickgelu").eval()
    half.load_state_dict(quickgelu_b32.state_dict())
    convert_weights_to_lp(half, torch.float16)
    path = tmp_path_factory.mktemp("clip_cache") / "ViT-B-32.pt"
    _openai_archive(half, path)
    return path, half.float()


def test_openai_torchscript_archive_loads_offline_with_quick_gelu(openai_archive):
    path, ref = openai_archive
    assert is_torchscript_archive(path)
    with pytest.raises(RuntimeError, match="weights_only"):  # why it needs its own path: not a weights_only file
        torch.load(path, weights_only=True)
    bb = load_clip("ViT-B-32", str(path), "cpu")
    assert _activations(bb.model) == {QuickGELU} and bb.quick_gelu_forced
    assert type(bb.model) is open_clip.CLIP and bb.image_size == 224
    assert all(p.dtype == torch.float32 for p in bb.model.parameters())
    for ours, theirs in zip(_features(bb.model), _features(ref)):
        torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    assert not any(p.requires_grad for p in bb.model.parameters())


def test_openai_archive_for_another_architecture_is_refused(openai_archive):
    path, _ = openai_archive
    with pytest.raises(ValueError, match="does not fit model 'ViT-B-16'.*ViT-B-16.pt -> ViT-B-16"):
        load_clip("ViT-B-16", str(path), "cpu")


def test_a_torch_save_checkpoint_is_not_taken_for_an_archive(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    assert not is_torchscript_archive(path)
