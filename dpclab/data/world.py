"""A procedurally generated image world: the offline stand-in for web images and benchmark datasets.

Real CLIP learns from web (image, caption) pairs and is evaluated on downstream datasets whose images
differ systematically from the web (satellite photos, textures, fine-grained categories). This package
builds a miniature of that situation which runs on a laptop CPU, in three modules (import them directly):

* :mod:`dpclab.data.scenes` — a **scene** is one coloured, patterned shape of some size and position on a
  background, drawn in a **style** (plain photo, outline drawing, tinted photo, blurry photo, or a texture-only
  swatch);
* :mod:`dpclab.data.captions` — :func:`sample_pretrain_batch`, the pretraining stream: random scenes with
  **captions** from many templates that mention a random subset of the attributes ("a sketch of a small striped
  star", "blue heart on the left", ...), so a text encoder trained on them has to read every word;
* :mod:`dpclab.data.downstream` — :data:`WORLD_DATASETS`, six downstream "datasets", each a fixed domain plus a
  class list; :func:`write_world` writes them to disk in the CoOp layout (``images/`` + ``split_zhou_<Name>.json``).

This module adds the **stamping**: which generator wrote a dataset on disk, and writing missing ones under a lock.
Everything is a pure function of a seed: the same seed gives the same images, byte for byte.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Iterable

from dpclab.io import atomic_write_text, file_lock
from dpclab.data import downstream, scenes
from dpclab.data.downstream import WORLD_SPECS, get_world_dataset, write_world

log = logging.getLogger(__name__)

# ----------------------------------------------------------------------------------------------------
# Stamping: which generator wrote a dataset on disk, and writing missing ones under a lock
# ----------------------------------------------------------------------------------------------------

STAMP_FILE = ".world_stamp"


def world_stamp(seed: int = 0) -> str:
    """Identifies the world generator's code and seed: a change of scenes.py or downstream.py changes the images,
    and the feature cache (keyed by file paths) must not be reused across such a change."""
    digest = hashlib.sha1()
    for module in (scenes, downstream):  # the code that draws the downstream images (not the captions)
        digest.update(Path(module.__file__).read_bytes())
    return f"seed{seed}-{digest.hexdigest()[:12]}"


def world_datasets() -> list[str]:
    """The world's dataset names as the pipeline knows them (folder names, e.g. ``world_tint``)."""
    return list(WORLD_SPECS)


def ensure_world(data_root: str | Path, datasets: Iterable[str], seed: int = 0) -> list[str]:
    """Write the world datasets among ``datasets`` that are missing under ``data_root``; returns the names
    written. Datasets that are not world datasets are left alone. A world dataset written by a different version
    of the generator is regenerated (one log line says so); its new image files have new (size, mtime) stamps, so
    feature caches and runs made from the old images are not reused."""
    root, stamp, written = Path(data_root), world_stamp(seed), []
    # notebooks run in parallel: the first writes a missing dataset, the others wait and then find it
    with file_lock(root / ".world.lock"):
        for name in datasets:
            if name not in WORLD_SPECS:
                continue
            folder = root / get_world_dataset(name).dirname
            stamp_path = folder / STAMP_FILE
            if folder.is_dir() and stamp_path.is_file():
                found = stamp_path.read_text().strip()
                if found == stamp:
                    continue
                log.warning("regenerating %s: written by world generator %s, current %s", folder, found, stamp)
                _write_stamped(root, name, seed, stamp)
                written.append(name)
                continue
            if folder.is_dir() and any(folder.iterdir()):
                log.warning("%s exists without %s; using it as is", folder, STAMP_FILE)
                continue
            _write_stamped(root, name, seed, stamp)
            written.append(name)
    return written


def _write_stamped(root: Path, name: str, seed: int, stamp: str) -> Path:
    write_world(root, [name], seed=seed)
    folder = root / get_world_dataset(name).dirname
    atomic_write_text(folder / STAMP_FILE, stamp + "\n")
    return folder


def rewrite_world(data_root: str | Path, datasets: Iterable[str] | None = None, seed: int = 0) -> dict[str, Path]:
    """(Re)write world datasets (default: all) with the current generator and stamp them, under the world lock.
    Feature caches and runs made from the replaced images stay on disk but are not reused (they are keyed by the
    images' (size, mtime) stamps)."""
    names = world_datasets() if datasets is None else list(datasets)
    root, stamp = Path(data_root), world_stamp(seed)
    with file_lock(root / ".world.lock"):
        return {name: _write_stamped(root, name, seed, stamp) for name in names}
