"""The generated world: determinism per seed, captions that describe the scene, a valid CoOp layout."""

import hashlib
import json
import math
from pathlib import Path

import numpy as np
import pytest

from dpclab.data import captions, downstream, scenes


def _digest(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_pretrain_stream_is_deterministic_per_seed():
    a_img, a_cap = captions.sample_pretrain_batch(seed=3, step=7, batch_size=16)
    b_img, b_cap = captions.sample_pretrain_batch(seed=3, step=7, batch_size=16)
    c_img, c_cap = captions.sample_pretrain_batch(seed=4, step=7, batch_size=16)
    assert a_img.shape == (16, scenes.IMAGE_SIZE, scenes.IMAGE_SIZE, 3) and a_img.dtype == np.uint8
    assert np.array_equal(a_img, b_img) and a_cap == b_cap
    assert not np.array_equal(a_img, c_img)


def test_captions_vary_and_name_the_shape():
    rng = np.random.default_rng(0)
    scene = scenes.random_scene(rng, shape="star", style="photo", colour="blue", shade="plain")
    texts = {captions.caption(scene, rng) for _ in range(200)}
    assert len(texts) > 20  # many templates / attribute subsets
    assert sum("star" in c for c in texts) > 0.7 * len(texts)
    assert any("blue" in c for c in texts) and any("blue" not in c for c in texts)
    sketch = scenes.random_scene(rng, shape="ring", style="outline")
    sketch_captions = [captions.caption(sketch, rng) for _ in range(50)]
    assert all(any(w in c for w in ("sketch", "drawing", "outline")) for c in sketch_captions)


def test_shapes_render_differently():
    masks = {s: scenes.shape_mask(s, 16, 16, 10, 0) for s in scenes.SHAPES}
    names = list(masks)
    for i, a in enumerate(names):
        assert 0.05 < masks[a].mean() < 0.6, a
        for b in names[i + 1:]:
            assert np.abs(masks[a] - masks[b]).mean() > 0.02, (a, b)


def test_write_world_is_deterministic_and_valid(tmp_path):
    names = ["WorldTint", "WorldTextures"]
    out1 = downstream.write_world(tmp_path / "a", names=names, seed=0)
    out2 = downstream.write_world(tmp_path / "b", names=names, seed=0)
    out3 = downstream.write_world(tmp_path / "c", names=names[:1], seed=1)
    assert set(out1) == set(names)
    for name in names:
        assert _digest(out1[name]) == _digest(out2[name])
    assert _digest(out1["WorldTint"]) != _digest(out3["WorldTint"])

    for name in names:
        info = downstream.WORLD_DATASETS[name]
        folder = tmp_path / "a" / info["dirname"]
        assert out1[name] == folder
        split = json.loads((folder / info["split_file"]).read_text())
        assert set(split) == {"train", "val", "test"}
        for key, entries in split.items():
            labels = sorted({e[1] for e in entries})
            assert labels == list(range(info["num_classes"])), key  # 0-based, contiguous
            for rel, label, classname in entries:
                assert (folder / "images" / rel).is_file()
                assert info["classnames"][label] == classname
                assert rel.split("/")[0] == classname.replace(" ", "_")
            counts = np.bincount([e[1] for e in entries])
            assert counts.min() == counts.max()
        assert len(split["train"]) // info["num_classes"] >= 16


@pytest.mark.parametrize("name", list(downstream.WORLD_DATASETS))
def test_base_and_new_classes_share_no_defining_attribute(name):
    """The world is built for the Base-New trade-off: base and new classes differ in kind."""
    ds = downstream.get_world_dataset(name)
    m = math.ceil(len(ds.classes) / 2)
    base, new = ds.classes[:m], ds.classes[m:]
    for key in ("shape", "pattern"):
        b = {attrs[key] for _, attrs in base if key in attrs}
        n = {attrs[key] for _, attrs in new if key in attrs}
        assert not (b & n), (key, b & n)
    if name == "WorldShades":
        assert not ({a["colour"] for _, a in base} & {a["colour"] for _, a in new})
    assert 10 <= len(ds.classes) <= 40


def test_world_datasets_use_the_gentler_crop_and_shades_are_warm_lit():
    assert all(spec.crop_scale == downstream.WORLD_CROP_SCALE == (0.5, 1.0) for spec in downstream.WORLD_SPECS.values())
    ds = downstream.get_world_dataset("WorldShades")
    scene = ds.make_scene(np.random.default_rng(0), dict(ds.classes[0][1]))
    assert scene.extra["cast"] == (1.0, 0.8, 0.6)
    unlit = scenes.Scene(**{**scene.__dict__, "extra": {"lighting": scene.extra["lighting"]}})
    lit_img = scenes.render(scene, np.random.default_rng(1)).astype(np.float64)
    unlit_img = scenes.render(unlit, np.random.default_rng(1)).astype(np.float64)
    gain = lit_img.reshape(-1, 3).sum(0) / unlit_img.reshape(-1, 3).sum(0)
    assert gain[0] == pytest.approx(1.0, abs=0.02)  # red unchanged (up to clipping)
    assert gain[2] == pytest.approx(0.6, abs=0.03) and gain[1] == pytest.approx(0.8, abs=0.03)


def test_placement_classes_are_compositions_of_caption_words_in_pretraining_photos():
    """WorldPlacement (issue 22): colour x shape x place, every class has a twin that differs only in place, the
    images are the pretraining stream's photo style (no shift) and the place is where the object is drawn."""
    from dpclab.data import captions, downstream

    ds = downstream.get_world_dataset("world_placement")
    names = ds.classnames
    assert len(names) == 36 and len(set(names)) == 36
    for name, attrs in ds.classes:
        words = downstream.PLACEMENT_WORDS[attrs["position"]]
        assert name == f"{attrs['colour']} {attrs['shape']} {words}"
        assert words in captions._POSITION_WORDS[attrs["position"]]  # a phrase the captions use
        twin = {**attrs, "position": "bottom" if attrs["position"] == "top" else "top"}
        assert sum(a == twin for _, a in ds.classes) == 1
    base, new = ds.classes[:18], ds.classes[18:]
    assert not ({a["colour"] for _, a in base} & {a["colour"] for _, a in new})
    rows = []
    for place in ("top", "bottom"):
        scene = ds.make_scene(np.random.default_rng(0), {"shape": "square", "colour": "red", "position": place})
        assert (scene.style, scene.pattern, scene.shade, scene.size) == ("photo", "plain", "plain", "medium")
        img = scenes.render(scene, np.random.default_rng(1)).astype(float)
        obj = (np.abs(img - np.asarray(scenes.BACKGROUNDS[scene.background])).sum(-1) > 90).astype(float)
        rows.append((obj.sum(1) * np.arange(scenes.IMAGE_SIZE)).sum() / obj.sum())  # the object's centre row
    assert rows[0] < 16 < rows[1]


def test_the_world_facade_re_exports_its_modules():
    from dpclab.data import captions, downstream, scenes

    assert captions.sample_pretrain_batch is captions.sample_pretrain_batch and scenes.render is scenes.render
    assert downstream.WORLD_DATASETS is downstream.WORLD_DATASETS and captions._STYLE_PREFIX is captions._STYLE_PREFIX
