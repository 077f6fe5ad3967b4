"""The frozen-feature cache: what it stores equals what the encoder computes, keyed by weights/items/transform/view."""

from __future__ import annotations

import torch

from dpclab.data.coop import load_dataset
from dpclab.data.features import build_transforms, cached_features, encode_image_list


def test_cache_hit_equals_fresh_encoding_and_views_differ(json_root, tmp_path, tiny_backbone):
    bb = tiny_backbone
    items = load_dataset(json_root, "eurosat").train[:10]
    tf = build_transforms(bb.image_size, bb.mean, bb.std)
    cache = tmp_path / "cache"
    test1 = cached_features(bb.model, bb.key, items, tf["test"], "test", bb.device, cache)
    files = list((cache / "features").rglob("*.pt"))
    assert len(files) == 1
    test2 = cached_features(bb.model, bb.key, items, tf["test"], "test", bb.device, cache)
    fresh = encode_image_list(bb.model, items, tf["test"], bb.device)
    assert torch.equal(test1, test2) and torch.allclose(test1, fresh, atol=1e-6)

    v0 = cached_features(bb.model, bb.key, items, tf["train"], "train", bb.device, cache, view=0, seed=1)
    v0_again = cached_features(bb.model, bb.key, items, tf["train"], "train", bb.device, None, view=0, seed=1)
    v1 = cached_features(bb.model, bb.key, items, tf["train"], "train", bb.device, cache, view=1, seed=1)
    s2 = cached_features(bb.model, bb.key, items, tf["train"], "train", bb.device, cache, view=0, seed=2)
    assert torch.equal(v0, v0_again)  # augmentation of a view is reproducible without the cache
    assert not torch.allclose(v0, v1) and not torch.allclose(v0, s2)
    assert len(list((cache / "features").rglob("*.pt"))) == 4
    # another item list is another cache entry, never a stale hit
    other = cached_features(bb.model, bb.key, items[:5], tf["test"], "test", bb.device, cache)
    assert other.shape[0] == 5 and torch.allclose(other, test1[:5], atol=1e-5)


def test_dataset_crop_scale_reaches_the_transform_and_the_cache_key(json_root, tiny_backbone):
    import dataclasses

    from dpclab.data.coop import DATASETS
    from dpclab.pipeline import Experiment, RunConfig

    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=2, cache_dir=None, device="cpu",
                    progress=False)
    default = Experiment.prepare(cfg, tiny_backbone)
    specs = dict(DATASETS, eurosat=dataclasses.replace(DATASETS["eurosat"], crop_scale=(0.5, 1.0)))
    gentle = Experiment.prepare(cfg, tiny_backbone, specs=specs)
    assert default.train_transform_name == "train" and gentle.train_transform_name == "train-crop0.5-1"
    crop = [t for t in gentle.transforms["train"].transforms if type(t).__name__ == "RandomResizedCrop"][0]
    assert tuple(crop.scale) == (0.5, 1.0)
    items = gentle.train_split.train
    assert not torch.allclose(default.features(items, "train", 0), gentle.features(items, "train", 0))
