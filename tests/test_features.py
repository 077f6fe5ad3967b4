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
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig

    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=2, cache_dir=None, device="cpu",
                    progress=False)
    default = Experiment.prepare(cfg, tiny_backbone)
    specs = dict(DATASETS, eurosat=dataclasses.replace(DATASETS["eurosat"], crop_scale=(0.5, 1.0)))
    gentle = Experiment.prepare(cfg, tiny_backbone, specs=specs)
    assert default.train_transform_name == "train" and gentle.train_transform_name == "train-crop0.5-1"
    from torchvision import transforms as T

    crop = [t for t in gentle.transforms["train"].transforms if isinstance(t, T.RandomResizedCrop)][0]
    assert tuple(crop.scale) == (0.5, 1.0)
    items = gentle.train_split.train
    assert not torch.allclose(default.features(items, "train", 0), gentle.features(items, "train", 0))


def test_fast_transforms_give_torchvision_numbers_bit_for_bit():
    """The crop and ToTensor + Normalize of :func:`build_transforms` draw the same random numbers and give the same
    tensors as torchvision's own transforms, on square, wide (crop fallback) and non-RGB images and crop scales."""
    import numpy as np
    from PIL import Image
    from torchvision import transforms as T

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in
              [(32, 32), (32, 32), (48, 20), (7, 300), (224, 180)]]
    images.append(images[0].convert("YCbCr"))  # another 3-channel mode: torchvision's path
    mean, std = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
    bicubic = T.InterpolationMode.BICUBIC
    for crop in [(0.08, 1.0), (0.5, 1.0)]:
        ours = build_transforms(32, mean, std, crop_scale=crop)
        theirs = {"train": T.Compose([T.RandomResizedCrop(32, scale=crop, interpolation=bicubic),
                                      T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(mean, std)]),
                  "test": T.Compose([T.Resize(32, interpolation=bicubic), T.CenterCrop(32), T.ToTensor(),
                                     T.Normalize(mean, std)])}
        for name in ("train", "test"):
            no_rgb = T.Compose(ours[name].transforms[1:])  # the YCbCr image as it is (ToRGB would convert it)
            for k, im in enumerate(images * 20):
                torch.manual_seed(k)
                a = no_rgb(im) if im.mode != "RGB" else ours[name](im)
                torch.manual_seed(k)
                b = theirs[name](im)
                after_theirs = torch.rand(1)
                assert a.dtype == b.dtype and torch.equal(a, b), (name, crop, k, im.size)
                torch.manual_seed(k)
                no_rgb(im) if im.mode != "RGB" else ours[name](im)
                assert torch.equal(torch.rand(1), after_theirs)  # the same draws: later views unchanged too


def test_a_small_view_is_transformed_once_and_reads_the_same(json_root):
    """An augmented view of a small image is drawn once per ImageList (DPC's batches read an image several times per
    epoch): the second read returns the same tensor as the first and as a fresh list, without transforming again."""
    from dpclab.data.features import ImageList

    items = load_dataset(json_root, "eurosat").train[:4]
    tf = build_transforms(32, (0.5,) * 3, (0.25,) * 3)["train"]
    calls = []

    def counted(im):
        calls.append(1)
        return tf(im)

    images = ImageList(items, counted, view_seed=3)
    first = [images[i][0] for i in (2, 0, 2, 3, 0, 2)]
    assert len(calls) == 3  # images 2, 0 and 3, each once
    fresh = ImageList(items, tf, view_seed=3)
    assert all(torch.equal(x, fresh[i][0]) for x, i in zip(first, (2, 0, 2, 3, 0, 2)))
    assert not torch.equal(fresh[2][0], ImageList(items, tf, view_seed=4)[2][0])  # another view is drawn afresh
    big = ImageList(items, build_transforms(96, (0.5,) * 3, (0.25,) * 3)["train"], view_seed=3)
    assert torch.equal(big[1][0], big[1][0]) and not big._views  # large images are not kept
