"""Shared fixtures: a tiny random-weight open_clip model and CoOp-layout fixture datasets written per test."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

#: pytest-xdist workers share the cores: each takes its share (2 workers on 2 cores: one thread each)
WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
torch.set_num_threads(max(1, min(2, (os.cpu_count() or 1) // WORKERS)))

TINY_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "patch_size": 8, "head_width": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
TINY_MODEL = "dpclab-test-tiny"


@pytest.fixture(scope="session")
def tiny_model_name(tmp_path_factory) -> str:
    """Register a tiny open_clip config (random weights) once per session."""
    if TINY_MODEL not in open_clip.list_models():
        d = tmp_path_factory.mktemp("model_configs")
        (d / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
        open_clip.add_model_config(d)
    return TINY_MODEL


@pytest.fixture(scope="session")
def tiny_backbone(tiny_model_name):
    from dpclab.backbones import load_clip

    torch.manual_seed(0)
    return load_clip(tiny_model_name, None, "cpu")


def write_image(path: Path, colour, size: int = 16, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    arr = np.clip(np.array(colour)[None, None, :] + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def write_json_dataset(root: Path, dirname: str = "eurosat", image_dir: str = "2750",
                       split_file: str = "split_zhou_EuroSAT.json", n_classes: int = 5,
                       per_class=(20, 5, 6)) -> Path:
    """A CoOp-layout json dataset: ``per_class`` = (train, val, test) images per class, colour = class."""
    base = root / dirname
    split = {"train": [], "val": [], "test": []}
    rng = np.random.default_rng(n_classes)
    colours = rng.integers(0, 255, (n_classes, 3))
    for c in range(n_classes):
        name = f"class_{c}"
        for s, n in zip(("train", "val", "test"), per_class):
            for i in range(n):
                rel = f"{name}/{s}_{i}.png"
                write_image(base / image_dir / rel, colours[c], seed=hash((c, s, i)) % 10_000)
                split[s].append([rel, c, name])
    (base / split_file).write_text(json.dumps(split))
    return base


@pytest.fixture
def json_root(tmp_path) -> Path:
    write_json_dataset(tmp_path)
    return tmp_path


@pytest.fixture
def cli_source(json_root, tmp_path, tiny_model_name) -> list[str]:
    """The CLI options that point a grid command (benchmark, dpc-study) at the fixture data and the tiny random model,
    with every output under ``tmp_path``."""
    return ["--datasets", "eurosat", "--data-root", str(json_root), "--model", tiny_model_name, "--pretrained",
            "random", "--shots", "2", "--device", "cpu", "--runs-dir", str(tmp_path / "runs"), "--cache-dir",
            str(tmp_path / "cache"), "--results", str(tmp_path / "results.csv"), "--no-progress", "--epochs", "1"]
