"""CoOp-layout loading, few-shot sampling, base/new relabelling, and bad-input errors."""

from __future__ import annotations

import json
import random

import pytest
from PIL import Image

from conftest import write_image, write_json_dataset
from dpclab.data.coop import base_new_classes, clean_classname, few_shot, load_dataset, subsample_classes
from dpclab.data.items import DatasetError
from dpclab.data.features import load_image


def test_json_dataset_loads_with_clean_names(json_root):
    data = load_dataset(json_root, "eurosat")
    assert data.num_classes == 5 and data.classnames[0] == "class 0"
    assert len(data.train) == 100 and len(data.val) == 25 and len(data.test) == 30
    assert data.template == "a centered satellite photo of {}."
    assert all(d.classname == data.classnames[d.label] for d in data.train + data.test)


@pytest.mark.parametrize("k", [1, 4, 16, 30])
def test_few_shot_counts_and_determinism(json_root, tmp_path, k):
    data = load_dataset(json_root, "eurosat")
    a = few_shot(data, k, seed=1)
    b = few_shot(data, k, seed=1)
    c = few_shot(data, k, seed=2)
    per_class = min(k, 20)
    assert len(a.train) == 5 * per_class and len(a.val) == 5 * min(k, 4, 5)
    assert [d.impath for d in a.train] == [d.impath for d in b.train]
    if k < 20:
        assert [d.impath for d in a.train] != [d.impath for d in c.train]
    # the reference semantics: random.seed(seed), then random.sample per class in order of first appearance
    rng = random.Random(1)
    groups = {}
    for d in data.train:
        groups.setdefault(d.label, []).append(d)
    expected = [x for g in groups.values() for x in (rng.sample(g, k) if len(g) >= k else g)]
    assert a.train == expected
    # cached on disk and identical when read back
    cached = few_shot(data, k, seed=1, cache_dir=tmp_path / "cache")
    again = few_shot(data, k, seed=1, cache_dir=tmp_path / "cache")
    assert cached.train == a.train == again.train and again.val == a.val
    assert list((tmp_path / "cache" / "fewshot").iterdir())


@pytest.mark.parametrize("n,base_n", [(5, 3), (10, 5), (47, 24), (37, 19), (1, 1)])
def test_base_new_split_sizes(n, base_n):
    base, new = base_new_classes(n)
    assert len(base) == base_n and base + new == list(range(n))


def test_base_new_relabelling_odd_classes(tmp_path):
    write_json_dataset(tmp_path, n_classes=7, per_class=(3, 1, 2))
    data = load_dataset(tmp_path, "eurosat")
    base, new = subsample_classes(data, "base"), subsample_classes(data, "new")
    assert base.classnames == ["class 0", "class 1", "class 2", "class 3"]
    assert new.classnames == ["class 4", "class 5", "class 6"]
    for split in (base, new):
        for d in split.train + split.val + split.test:
            assert split.classnames[d.label] == d.classname
        assert sorted({d.label for d in split.test}) == list(range(split.num_classes))
    assert len(new.test) == 6 and len(base.train) == 12


def test_aircraft_imagenet_and_folder_layouts(tmp_path):
    air = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "F-16A/B"]
    (air / "images").mkdir(parents=True)
    (air / "variants.txt").write_text("\n".join(variants) + "\n")
    for split in ("train", "val", "test"):
        lines = []
        for c, v in enumerate(variants):
            for i in range(2):
                img = f"{split}{c}{i:05d}"
                write_image(air / "images" / f"{img}.jpg", (c * 80, 0, 0))
                lines.append(f"{img} {v}")
        (air / f"images_variant_{split}.txt").write_text("\n".join(lines) + "\n")
    data = load_dataset(tmp_path, "fgvc_aircraft")
    assert data.classnames == variants and len(data.train) == 6
    assert data.template == "a photo of a {}, a type of aircraft."

    inet = tmp_path / "imagenet"
    (inet / "classnames.txt").parent.mkdir()
    (inet / "classnames.txt").write_text("n01 tench\nn02 great_white shark\n")
    for split in ("train", "val"):
        for wnid in ("n01", "n02"):
            for i in range(3):
                write_image(inet / "images" / split / wnid / f"{i}.JPEG", (0, 0, 100))
    data = load_dataset(tmp_path, "imagenet")
    assert data.classnames == ["tench", "great white shark"]
    assert data.test == data.val and len(data.test) == 6

    folder = tmp_path / "my_pets"
    for split in ("train", "test"):
        for c in ("tabby_cat", "beagle"):
            for i in range(2):
                write_image(folder / split / c / f"{i}.png", (0, 100, 0))
    data = load_dataset(tmp_path, str(folder))
    assert data.classnames == ["beagle", "tabby cat"] and len(data.test) == 4 and data.val == []


def test_clean_classname():
    assert clean_classname("Annual_Crop_Land") == "Annual Crop Land"


# ------------------------------------------------------------------------------------------------- bad input
def test_missing_data_root(tmp_path):
    with pytest.raises(DatasetError, match="Data root not found.*--data-root"):
        load_dataset(tmp_path / "nope", "eurosat")


def test_missing_dataset_folder(tmp_path):
    with pytest.raises(DatasetError, match="Dataset folder for 'dtd' not found"):
        load_dataset(tmp_path, "dtd")


def test_unknown_dataset(tmp_path):
    with pytest.raises(DatasetError, match="Unknown dataset 'eurosatt'"):
        load_dataset(tmp_path, "eurosatt")


def test_missing_split_file(json_root):
    (json_root / "eurosat" / "split_zhou_EuroSAT.json").unlink()
    with pytest.raises(DatasetError, match="Split file not found.*split_zhou_EuroSAT.json.*Download"):
        load_dataset(json_root, "eurosat")


def test_split_file_not_json(json_root):
    (json_root / "eurosat" / "split_zhou_EuroSAT.json").write_text("{not json")
    with pytest.raises(DatasetError, match="split_zhou_EuroSAT.json is not valid JSON"):
        load_dataset(json_root, "eurosat")


@pytest.mark.parametrize("entry", [["a.png", 0], ["a.png", "0", "x"], ["a.png", -1, "x"], "a.png 0 x"])
def test_malformed_split_entry(json_root, entry):
    path = json_root / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(path.read_text())
    split["train"][3] = entry
    path.write_text(json.dumps(split))
    with pytest.raises(DatasetError, match="entry 3 of 'train'.*expected \\[relative_image_path"):
        load_dataset(json_root, "eurosat")


def test_classname_label_mismatch(json_root):
    path = json_root / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(path.read_text())
    split["test"][0][2] = "some other name"
    path.write_text(json.dumps(split))
    with pytest.raises(DatasetError, match="label 0 is used for two class names"):
        load_dataset(json_root, "eurosat")


def test_missing_image_file(json_root):
    path = json_root / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(path.read_text())
    (json_root / "eurosat" / "2750" / split["train"][0][0]).unlink()
    with pytest.raises(DatasetError, match="Image listed in .* is missing"):
        load_dataset(json_root, "eurosat", check_images=0)


def test_unreadable_image(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not a png at all")
    with pytest.raises(DatasetError, match="cannot be read: .*broken.png"):
        load_image(str(bad))
    good = tmp_path / "ok.png"
    Image.new("RGB", (4, 4)).save(good)
    assert load_image(str(good)).size == (4, 4)


def test_small_images_stay_decoded_and_a_replaced_file_is_read_again(tmp_path):
    import os

    small, large = tmp_path / "small.png", tmp_path / "large.png"
    Image.new("RGB", (32, 32), (255, 0, 0)).save(small)
    Image.new("RGB", (128, 128), (255, 0, 0)).save(large)
    first = load_image(str(small))
    assert load_image(str(small)) is first  # decoded once
    assert load_image(str(large)) is not load_image(str(large))  # real-dataset sizes: decoded every time
    Image.new("RGB", (32, 32), (0, 0, 255)).save(small)  # replaced in place (another size or mtime)
    st = os.stat(small)
    os.utime(small, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    again = load_image(str(small))
    assert again is not first and again.getpixel((0, 0)) == (0, 0, 255)
    small.unlink()
    with pytest.raises(DatasetError, match="missing"):
        load_image(str(small))
