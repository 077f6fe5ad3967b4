"""Synthetic data for the measuring tools (``speed``, ``estimate``, ``gpu-check``): class names of realistic token
lengths and CoOp-layout datasets of generated images, whose decode cost is a photo's and whose content is noise.

Nothing here is a benchmark of accuracy; the images only make the loaders, the transforms and the model do the
work a real dataset of that shape makes them do.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image

from dpclab.data.coop import DatasetSpec
from dpclab.data.shapes import DatasetShape

#: class names of realistic token lengths (the text tower's cost depends on them)
CLASSNAMES = ("annual crop land", "forest", "herbaceous vegetation land", "highway or road", "industrial buildings",
              "pasture land", "permanent crop land", "residential buildings", "river", "sea or lake",
              "golden retriever", "aircraft carrier", "sea lion", "boeing 747-400", "red velvet cake",
              "playing the cello", "banded texture", "tabby cat", "sunflower", "mountain bike")
#: the dataset :func:`write_bench_dataset` writes
BENCH_SPEC = DatasetSpec("bench", "bench", "json", "images", "split_bench.json")


def class_names(n: int) -> list[str]:
    """``n`` distinct class names: :data:`CLASSNAMES` cycled, each with its index appended."""
    return [f"{CLASSNAMES[i % len(CLASSNAMES)]} {i}" for i in range(n)]


def write_images(folder: Path, n: int, px: int, seed: int = 0) -> list[Path]:
    """``n`` JPEGs of ``px`` x ``3/4 px`` smooth random colour (a photo's decode cost, not its content)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        small = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize((px, px * 3 // 4), Image.BICUBIC)
        arr = np.clip(np.asarray(img, dtype=np.int16) + rng.integers(-12, 12, (px * 3 // 4, px, 3)), 0, 255)
        paths.append(folder / f"img_{i}.jpg")
        Image.fromarray(arr.astype(np.uint8)).save(paths[-1], quality=90)
    return paths


def write_bench_dataset(root: Path, n_classes: int, per_class: int, px: int, seed: int = 0) -> Path:
    """:data:`BENCH_SPEC` under ``root``: coloured noise PNGs, ``per_class`` train and 2 test images per class of
    the first ``n_classes`` :data:`CLASSNAMES`."""
    if n_classes > len(CLASSNAMES):
        raise ValueError(f"The bench dataset has at most {len(CLASSNAMES)} classes; pass --classes <= that.")
    base = root / BENCH_SPEC.dirname
    rng = np.random.default_rng(seed)
    split = {"train": [], "val": [], "test": []}
    for c, name in enumerate(CLASSNAMES[:n_classes]):
        colour = rng.integers(0, 255, 3)
        for part, n in (("train", per_class), ("test", 2)):
            for i in range(n):
                rel = f"c{c}/{part}_{i}.png"
                arr = np.clip(colour + rng.normal(0, 30, (px, px, 3)), 0, 255).astype(np.uint8)
                (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(base / "images" / rel)
                split[part].append([rel, c, name])
    (base / BENCH_SPEC.split_file).write_text(json.dumps(split))
    return root


def write_shape_dataset(root: Path, shape: DatasetShape, shots: int, image_px: int, seed: int = 0) -> DatasetSpec:
    """A CoOp-layout dataset of ``shape`` (its class count and test size) with ``shots`` training and
    ``min(shots, 4)`` validation images per class, all pointing into a pool of 16 JPEGs; returns its spec."""
    name = f"{shape.name}-synthetic"
    base = root / name
    pool = write_images(base / "pool", 16, image_px, seed)
    split = {"train": [], "val": [], "test": []}
    per_test = [shape.test // shape.classes + (1 if c < shape.test % shape.classes else 0)
                for c in range(shape.classes)]
    k = 0
    for c, cname in enumerate(class_names(shape.classes)):
        for part, n in (("train", shots), ("val", min(shots, 4)), ("test", per_test[c])):
            for _ in range(n):
                split[part].append([f"pool/{pool[k % len(pool)].name}", c, cname])
                k += 1
    (base / "split.json").write_text(json.dumps(split))
    return DatasetSpec(name, name, "json", "", "split.json")


__all__ = ["CLASSNAMES", "BENCH_SPEC", "class_names", "write_images", "write_bench_dataset", "write_shape_dataset"]
