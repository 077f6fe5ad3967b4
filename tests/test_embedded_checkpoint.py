"""The committed tiny CLIP: integrity, open_clip loading, reproducible zero-shot numbers, a working trainer."""

import json
from pathlib import Path

import pytest
import torch

from dpclab.lab import pretrain as P
from dpclab.data import captions, downstream

EMBEDDED = Path(__file__).resolve().parents[1] / "data" / "embedded"
CHECKPOINT = EMBEDDED / "dpclab-tiny.pt"
MANIFEST = EMBEDDED / "MANIFEST.json"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads(MANIFEST.read_text())


def test_checkpoint_matches_manifest(manifest):
    assert manifest["checkpoint"] == CHECKPOINT.name
    assert P.sha256_file(CHECKPOINT) == manifest["sha256"]
    assert CHECKPOINT.stat().st_size < 20 * 2**20
    assert manifest["command"].startswith("python -m dpclab pretrain ")


def test_world_still_generates_the_stream_the_checkpoint_was_trained_on(manifest):
    cfg = P.PretrainConfig(**manifest["config"])
    assert P.stream_digest(cfg) == manifest["stream_sha256"], (
        "dpclab/data/world.py no longer generates the pretraining stream of the committed checkpoint: re-run the "
        "command in data/embedded/MANIFEST.json (or revert the change to the stream)")


def test_stream_digest_sees_a_changed_stream(monkeypatch):
    cfg = P.PretrainConfig(steps=3, batch_size=4)
    before = P.stream_digest(cfg)
    assert P.stream_digest(cfg) == before
    assert P.stream_digest(P.PretrainConfig(steps=3, batch_size=4, seed=1)) != before
    monkeypatch.setitem(captions._STYLE_PREFIX, "photo", ["a snapshot of"])
    assert P.stream_digest(cfg) != before


def test_checkpoint_is_a_plain_open_clip_state_dict():
    state = torch.load(CHECKPOINT, map_location="cpu", weights_only=True)
    assert "token_embedding.weight" in state and "visual.conv1.weight" in state
    model, preprocess, tokenizer = P.load_model(CHECKPOINT)
    for attr in ("transformer", "attn_mask", "token_embedding", "positional_embedding", "ln_final", "text_projection"):
        assert hasattr(model, attr)
    assert torch.equal(model.token_embedding.weight, state["token_embedding.weight"].float())
    tokens = tokenizer(["a photo of a red star.", "a sketch of a ring."])
    full = model.encode_text(tokens)
    assert torch.allclose(full, P.encode_text_truncated(model, tokens), atol=1e-4)


def test_zero_shot_accuracy_reproduces_manifest(manifest, tmp_path):
    model, preprocess, tokenizer = P.load_model(CHECKPOINT)
    downstream.write_world(tmp_path, seed=manifest["zero_shot"]["eval_world_seed"])
    measured = P.evaluate_world(model, tokenizer, preprocess, tmp_path)
    recorded = manifest["zero_shot"]["datasets"]
    assert set(measured) == set(recorded)
    for name, accs in measured.items():
        for key in ("all", "base", "new"):
            assert abs(accs[key] - recorded[name][key]) <= 1.0, (name, key, accs[key], recorded[name][key])
    # a pretrained model transfers zero-shot: on average far above chance on the unseen (new) classes
    chance = [100.0 / (downstream.WORLD_DATASETS[n]["num_classes"] // 2) for n in measured]
    mean_new = sum(a["new"] for a in measured.values()) / len(measured)
    assert mean_new > sum(chance) / len(chance) + 15.0, measured


def test_pretraining_lowers_the_loss_and_is_deterministic():
    cfg = P.PretrainConfig(steps=12, batch_size=16, seed=0, warmup_steps=2, stream_length=1, threads=1)
    _, losses = P.train(cfg, progress=False)
    _, again = P.train(cfg, progress=False)
    assert losses == again
    assert losses[-1] < losses[0] - 0.2


def test_pretrain_writes_loadable_checkpoint_and_manifest(tmp_path):
    out = tmp_path / "tiny.pt"
    manifest = P.pretrain(out, steps=2, batch_size=8, evaluate=False, progress=False, command="test")
    assert P.sha256_file(out) == manifest["sha256"] == json.loads((tmp_path / "MANIFEST.json").read_text())["sha256"]
    model, _, _ = P.load_model(out)
    assert model.token_embedding.weight.dtype == torch.float32
    assert not list(tmp_path.glob("*.tmp"))
    again = P.pretrain(tmp_path / "again" / "tiny.pt", steps=2, batch_size=8, evaluate=False, progress=False,
                       command="test")
    assert again["sha256"] == manifest["sha256"]  # the same training gives the same bytes
    assert manifest["stream_sha256"] == P.stream_digest(P.PretrainConfig(steps=2, batch_size=8))


def test_remeasure_updates_metrics_of_the_described_checkpoint_only(tmp_path):
    out = tmp_path / "tiny.pt"
    P.pretrain(out, steps=2, batch_size=8, evaluate=False, progress=False, command="test")
    manifest = P.remeasure(out)
    assert set(manifest["zero_shot"]["datasets"]) == set(downstream.WORLD_DATASETS)
    on_disk = json.loads((tmp_path / "MANIFEST.json").read_text())
    assert on_disk["zero_shot"] == manifest["zero_shot"] and on_disk["command"] == "test"
    other = tmp_path / "other.pt"
    P.pretrain(other, steps=1, batch_size=8, evaluate=False, progress=False, command="test",
               manifest_path=tmp_path / "other.json")
    with pytest.raises(ValueError, match="sha256 differs"):
        P.remeasure(other, tmp_path / "MANIFEST.json")
