"""Equivalences of the text path with open_clip's own encode_text, and backbone loading."""

from __future__ import annotations

import pytest
import torch

from dpclab.backbones import load_clip
from dpclab.methods.coop import CoOp, CoOpConfig
from dpclab.methods.zeroshot import ZeroShotCLIP
from dpclab.methods.base import Task
from dpclab.text import encode_embeddings, eot_positions, encode_texts

NAMES = ["cat", "golden retriever", "sea lion", "aircraft carrier", "a b c d e f g h"]


def _untrained_coop_matches_zero_shot(bb):
    coop = CoOp(bb, CoOpConfig(ctx_init="a photo of a"))
    with torch.no_grad():
        ours = coop.text_features(NAMES)
        ref = bb.model.encode_text(bb.tokenizer([f"a photo of a {n}." for n in NAMES]))
    assert ours.shape == ref.shape
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=0)
    # and the whole classifier: logits on random image features are identical to the zero-shot method's
    zs = ZeroShotCLIP(bb)
    x = torch.randn(7, ref.shape[1])
    task = Task(tuple(NAMES), "a photo of a {}.")
    with torch.no_grad():
        torch.testing.assert_close(coop(x, task).logits, zs(x, task).logits, atol=1e-4, rtol=0)


def test_untrained_coop_equals_zero_shot_tiny(tiny_backbone):
    _untrained_coop_matches_zero_shot(tiny_backbone)


def test_untrained_coop_equals_zero_shot_vit_b16():
    torch.manual_seed(0)
    _untrained_coop_matches_zero_shot(load_clip("ViT-B-16", None, "cpu"))


def test_untrained_coop_equals_zero_shot_embedded():
    _untrained_coop_matches_zero_shot(load_clip("dpclab-tiny", "embedded", "cpu"))


def test_truncated_equals_full_sequence_with_gradients(tiny_backbone):
    model = tiny_backbone.model.double()
    try:
        tokens = tiny_backbone.tokenizer([f"a photo of a {n}." for n in NAMES])
        eot = eot_positions(tokens)
        assert int(eot.max()) + 1 < tokens.shape[1]  # truncation actually shortens the sequence
        grads = []
        feats = []
        for truncate in (True, False):
            emb = model.token_embedding(tokens).detach().requires_grad_(True)
            f = encode_embeddings(model, emb, eot, truncate=truncate)
            (f ** 2).sum().backward()
            feats.append(f.detach())
            grads.append(emb.grad)
        torch.testing.assert_close(feats[0], feats[1], atol=1e-10, rtol=0)
        torch.testing.assert_close(grads[0], grads[1], atol=1e-10, rtol=0)
        # tokens after EOT get no gradient at all (that is why truncation is exact)
        assert grads[1][0, int(eot[0]) + 1:].abs().max() == 0
    finally:
        model.float()


def test_deep_prompt_at_block_zero_only_is_the_shallow_prompt(tiny_backbone):
    """A deep-prompt list that only names block 0 changes nothing (block 0 reads the embeddings)."""
    model = tiny_backbone.model
    tokens = tiny_backbone.tokenizer(["a photo of a cat."])
    emb = model.token_embedding(tokens)
    eot = eot_positions(tokens)
    with torch.no_grad():
        a = encode_embeddings(model, emb, eot)
        b = encode_embeddings(model, emb, eot, deep_prompts=[torch.randn(4, emb.shape[-1])])
        c = encode_embeddings(model, emb, eot, deep_prompts=[None, torch.randn(4, emb.shape[-1])])
    torch.testing.assert_close(a, b)
    assert (a - c).abs().max() > 1e-4


def test_encode_texts_matches_open_clip(tiny_backbone):
    bb = tiny_backbone
    texts = [f"a photo of a {n}." for n in NAMES]
    with torch.no_grad():
        ref = torch.nn.functional.normalize(bb.model.encode_text(bb.tokenizer(texts)), dim=-1)
    torch.testing.assert_close(encode_texts(bb.model, bb.tokenizer, texts, batch_size=2), ref, atol=1e-5, rtol=0)


def test_random_vit_b16_saved_to_file_loads_back(tmp_path):
    torch.manual_seed(1)
    bb = load_clip("ViT-B-16", None, "cpu")
    path = tmp_path / "vitb16.pt"
    torch.save(bb.model.state_dict(), path)
    again = load_clip("ViT-B-16", str(path), "cpu")
    assert again.weights_id != "random" and again.key != bb.key
    for (k, a), (_, b) in zip(bb.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(a, b), k
    assert not any(p.requires_grad for p in again.model.parameters())
    assert again.image_size == 224


def test_checkpoint_of_another_model_is_rejected(tmp_path, tiny_backbone):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    with pytest.raises(ValueError, match="does not fit model 'ViT-B-32'"):
        load_clip("ViT-B-32", str(path), "cpu")


@pytest.mark.parametrize("model,pretrained,exc,match", [
    ("ViT-B-61", None, ValueError, "Unknown open_clip model 'ViT-B-61'.*ViT-B-16"),
    ("ViT-B-16", "no_such_tag", ValueError, "Unknown pretrained tag"),
    ("ViT-B-16", "/nonexistent/weights.pt", FileNotFoundError, "does not exist"),
    ("ViT-B-16", "embedded", ValueError, "only exists for model"),
])
def test_bad_backbone_input_names_the_fix(model, pretrained, exc, match):
    with pytest.raises(exc, match=match):
        load_clip(model, pretrained, "cpu")


def test_offline_download_failure_points_to_embedded_model(monkeypatch):
    import open_clip

    def offline(*a, **k):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match="Offline\\? Use model='dpclab-tiny', pretrained='embedded'"):
        load_clip("ViT-B-16", "openai", "cpu")
