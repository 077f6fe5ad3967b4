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
