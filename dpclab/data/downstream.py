"""Downstream datasets of the embedded world: each a fixed domain (how scenes are drawn) plus an ordered class list,
written to disk in the CoOp layout (``images/`` + ``split_zhou_<Name>.json``).

Class lists are ordered so that, under the base-to-new protocol (sorted labels, base = first half), base and new
classes share no shape / pattern / hue (WorldPlacement: no colour or shape): a prompt tuned on base classes then has
room to over-specialise, which is the Base-New trade-off the kit studies.
"""

from __future__ import annotations

import json
import os
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
from PIL import Image

from dpclab.data.coop import DatasetSpec
from dpclab.data.scenes import SHAPES, Scene, random_scene, render

_SEPIA = (200, 140, 70)


def _cls_shapes(shapes: Sequence[str]) -> list[tuple[str, dict]]:
    return [(s, {"shape": s}) for s in shapes]


def _scene_generic(rng: np.random.Generator, attrs: dict) -> Scene:
    # one 3x3 box blur (a low-resolution camera): sharp, the 10 000-step checkpoint knew these shapes at 93 / 98 %
    # zero-shot and left CoOp no base accuracy to gain (docs/embedded_benchmark.md, "World v4")
    return random_scene(rng, style="photo", extra={"blur": True}, **attrs)


#: sepia strength of WorldTint: 0.55 left the 10 000-step checkpoint at 98 / 95 % zero-shot, 0.7 at 64 / 59 % with CoOp
#: repairing the shift for every class; 0.6 (with the disjoint class halves below) gives 80 / 77 (seed-1 design world)
TINT_STRENGTH = 0.6


def _scene_tinted(rng: np.random.Generator, attrs: dict) -> Scene:
    return random_scene(rng, style="tinted", pattern="plain", background="gray", tint=_SEPIA,
                        tint_strength=TINT_STRENGTH, extra={"blur": True}, **attrs)


def _scene_outline(rng: np.random.Generator, attrs: dict) -> Scene:
    return random_scene(rng, style="outline", colour="gray", shade="dark", background="white",
                        extra={"thick_outline": True}, **attrs)


def _scene_texture(rng: np.random.Generator, attrs: dict) -> Scene:
    return random_scene(rng, style="texture", background="black", extra={"pattern_scale": 1.3}, **attrs)


_WARM_LIGHT = (1.0, 0.8, 0.6)  # per-channel gains of a warm (orange) lamp


def _scene_shades(rng: np.random.Generator, attrs: dict) -> Scene:
    lighting = float(rng.uniform(0.8, 1.2))
    return random_scene(rng, style="photo", pattern="plain", background="gray",
                        extra={"lighting": lighting, "cast": _WARM_LIGHT}, **attrs)


#: object size of WorldPlacement: "medium" (radius 10.5-12 px, centre 3-4.5 px above / below the middle)
PLACEMENT_SIZE = "medium"
#: where WorldPlacement's objects sit: vertical only, because the training augmentation flips images horizontally
PLACEMENT_WORDS = {"top": "at the top", "bottom": "at the bottom"}


def _scene_placement(rng: np.random.Generator, attrs: dict) -> Scene:
    # the pretraining stream's own photo style, no shift: plain, medium objects on a random background
    return random_scene(rng, style="photo", pattern="plain", shade="plain", size=PLACEMENT_SIZE, **attrs)


@dataclass(frozen=True)
class WorldDataset:
    """A downstream dataset: a domain (how scenes are drawn) and an ordered class list."""

    name: str
    dirname: str
    template: str
    classes: tuple[tuple[str, dict], ...]  # (classname, pinned scene attributes)
    make_scene: Callable[[np.random.Generator, dict], Scene]
    n_train: int = 24
    n_val: int = 8
    n_test: int = 20
    description: str = ""

    @property
    def split_file(self) -> str:
        return f"split_zhou_{self.name}.json"

    @property
    def classnames(self) -> list[str]:
        return [c for c, _ in self.classes]


def _tint_classes() -> list[tuple[str, dict]]:
    """18 colour-shape classes whose halves share neither a colour nor a shape: base = {red, green, blue} x
    {circle, square, triangle}, new = {yellow, purple, cyan} x {star, cross, heart}. With shared colours (v3's
    list) the context CoOp learns to read colours under the sepia cast helps the new classes as much as the base
    ones, and the dataset shows domain adaptation instead of the Base-New trade-off."""
    halves = ((("red", "green", "blue"), ("circle", "square", "triangle")),
              (("yellow", "purple", "cyan"), ("star", "cross", "heart")))
    return [(f"{c} {s}", {"shape": s, "colour": c, "shade": "plain"})
            for colours, shapes in halves for c in colours for s in shapes]


def _placement_classes() -> list[tuple[str, dict]]:
    """36 compositions colour x shape x place ("red circle at the top"), halves as world_tint's: base = {red, green,
    blue} x {circle, square, triangle} x {top, bottom}, new = {yellow, purple, cyan} x {star, cross, heart} x {top,
    bottom}. The tiny CLIP binds colour and shape almost perfectly but the place words (in 30 % of its captions)
    loosely: zero-shot is moderate because the text prior is ambiguous, the images are the pretraining photos, and
    every class has a hard negative that shares its colour and shape (docs/embedded_benchmark.md, "WorldPlacement")."""
    halves = ((("red", "green", "blue"), ("circle", "square", "triangle")),
              (("yellow", "purple", "cyan"), ("star", "cross", "heart")))
    return [(f"{c} {s} {words}", {"shape": s, "colour": c, "position": place})
            for colours, shapes in halves for s in shapes for c in colours for place, words in PLACEMENT_WORDS.items()]


def _texture_classes() -> list[tuple[str, dict]]:
    patterns = ("striped", "dotted", "checkered", "grid")
    colours = ("red", "yellow", "blue", "purple")
    return [(f"{c} {p}", {"pattern": p, "colour": c, "shade": "plain"}) for p in patterns for c in colours]


def _shade_classes() -> list[tuple[str, dict]]:
    colours = ("red", "green", "blue", "orange", "purple", "pink", "cyan", "brown")
    out = []
    for c in colours:
        for s in ("light", "plain", "dark"):
            out.append((c if s == "plain" else f"{s} {c}", {"colour": c, "shade": s}))
    return out


_DATASETS: tuple[WorldDataset, ...] = (
    WorldDataset("WorldShapes", "world_shapes", "a photo of a {}.", tuple(_cls_shapes(SHAPES)), _scene_generic,
                 description="generic, slightly blurry object photos (Caltech-like): 16 shapes, any colour/pattern/"
                             "background"),
    WorldDataset("WorldTint", "world_tint", "a tinted photo of a {}.", tuple(_tint_classes()), _scene_tinted,
                 description="a fixed strong sepia tint and blur (EuroSAT-like shift): 3 colours x 3 shapes per half, "
                             "the halves share neither"),
    WorldDataset("WorldSketch", "world_sketch", "a sketch of a {}.",
                 tuple(_cls_shapes(SHAPES[8:] + SHAPES[:4])), _scene_outline,
                 description="thick dark outlines on white (sketch-like shift): 12 shapes"),
    WorldDataset("WorldTextures", "world_textures", "a {} texture.", tuple(_texture_classes()), _scene_texture,
                 description="texture-only swatches on black, coarser than in pretraining (DTD-like): 4 patterns x 4 colours"),
    WorldDataset("WorldShades", "world_shades", "a photo of a {} shape.", tuple(_shade_classes()), _scene_shades,
                 description="fine-grained colour shades of plain shapes on gray under a warm light of varying "
                             "exposure (Flowers-like): 8 hues x 3 shades"),
    WorldDataset("WorldPlacement", "world_placement", "a photo of a {}.", tuple(_placement_classes()),
                 _scene_placement,
                 description="compositions colour x shape x place in the pretraining's own photos (no shift): "
                             "3 colours x 3 shapes x top/bottom per half, the halves share neither colour nor shape"),
)

WORLD_DATASETS: dict[str, dict] = {
    d.name: {
        "key": d.dirname,
        "dirname": d.dirname,
        "split_file": d.split_file,
        "template": d.template,
        "classnames": d.classnames,
        "num_classes": len(d.classes),
        "description": d.description,
    }
    for d in _DATASETS
}


#: training crops keep at least half the image: at 32 px, RandomResizedCrop's usual (0.08, 1) often crops the one
#: object away (measured with CoOp on world_textures: base/new 42.5/40.4 with (0.08, 1), 51.9/64.4 with (0.5, 1))
WORLD_CROP_SCALE = (0.5, 1.0)


def _world_specs() -> dict:
    """The world datasets as the core loader's :class:`~dpclab.data.coop.DatasetSpec`, keyed by dirname."""
    return {
        d.dirname: DatasetSpec(d.dirname, d.dirname, "json", "images", d.split_file, d.template,
                               crop_scale=WORLD_CROP_SCALE)
        for d in _DATASETS
    }


WORLD_SPECS = _world_specs()


def get_world_dataset(name: str) -> WorldDataset:
    """The :class:`WorldDataset` called ``name`` (a key of :data:`WORLD_DATASETS`, or its dirname)."""
    for d in _DATASETS:
        if name in (d.name, d.dirname):
            return d
    raise KeyError(f"unknown world dataset {name!r}; known: {sorted(WORLD_DATASETS)}")


def generate_dataset(ds: WorldDataset, seed: int = 0) -> dict[str, list[tuple[np.ndarray, int, str]]]:
    """All images of a dataset in memory: split -> list of (uint8 image, label, classname)."""
    out: dict[str, list[tuple[np.ndarray, int, str]]] = {"train": [], "val": [], "test": []}
    sizes = {"train": ds.n_train, "val": ds.n_val, "test": ds.n_test}
    base_seed = zlib.crc32(ds.name.encode())
    for split_idx, split in enumerate(("train", "val", "test")):
        for label, (classname, attrs) in enumerate(ds.classes):
            rng = np.random.default_rng([seed, base_seed, split_idx, label])
            for _ in range(sizes[split]):
                out[split].append((render(ds.make_scene(rng, attrs), rng), label, classname))
    return out


def write_dataset(root: str | Path, ds: WorldDataset, seed: int = 0) -> Path:
    """Write one dataset in the CoOp layout under ``root/ds.dirname``; returns that folder.

    The dataset is written to a temporary folder and renamed into place, so a reader (another notebook running in
    parallel) sees either no dataset or a complete one, never half-written images.
    """
    final = Path(root) / ds.dirname
    folder = Path(root) / f".{ds.dirname}.tmp{os.getpid()}"
    if folder.exists():
        shutil.rmtree(folder)
    split_json: dict[str, list[list]] = {}
    for split, items in generate_dataset(ds, seed).items():
        entries = []
        for i, (img, label, classname) in enumerate(items):
            classdir = classname.replace(" ", "_")
            rel = f"{classdir}/{split}_{i:05d}.png"
            path = folder / "images" / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(path, format="PNG", optimize=False)
            entries.append([rel, label, classname])
        split_json[split] = entries
    (folder / ds.split_file).write_text(json.dumps(split_json, indent=0))
    if final.exists():
        shutil.rmtree(final)
    os.replace(folder, final)
    return final


def write_world(root: str | Path, names: Sequence[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """Write the downstream datasets (all, or ``names``) under ``root``; returns name -> dataset folder.

    Layout per dataset: ``<root>/<dirname>/images/<classdir>/<split>_<i>.png`` and
    ``<root>/<dirname>/split_zhou_<Name>.json`` with ``train``/``val``/``test`` lists of
    ``[relative_impath, label, classname]``. Deterministic per ``seed`` (same bytes).
    """
    names = list(WORLD_DATASETS) if names is None else list(names)
    return {n: write_dataset(root, get_world_dataset(n), seed) for n in names}
