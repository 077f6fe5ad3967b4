"""Loading that works where users run it: image loaders with worker processes under ``spawn`` (macOS, Windows) and
``forkserver`` (Linux from Python 3.14), and files saved on a GPU read on a CPU-only host (a SLURM login node)."""

from __future__ import annotations

import io
import multiprocessing as mp
import pickle
import zipfile
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from dpclab.data.coop import load_dataset
from dpclab.data.features import ImageList, build_transforms, cached_features

MEAN, STD = (0.48, 0.46, 0.41), (0.27, 0.26, 0.28)


# ------------------------------------------------------------------------------------ loader workers
def test_transforms_pickle():
    from torchvision import transforms as T

    for crop in [(0.08, 1.0), (0.5, 1.0)]:
        for name, tf in build_transforms(224, MEAN, STD, crop_scale=crop).items():
            pickle.loads(pickle.dumps(tf))
            # as the pipeline composes them for fp16 backbones
            pickle.loads(pickle.dumps(T.Compose([tf, T.ConvertImageDtype(torch.float16)])))


@pytest.mark.parametrize("method", ["spawn", "forkserver"])
def test_loader_workers_start_with(method, json_root):
    """A real DataLoader with a worker process started by ``method`` over the fixture's PNG files: the batches equal
    those loaded in this process (augmented views are seeded per image, whichever process draws them)."""
    if method not in mp.get_all_start_methods():
        pytest.skip(f"{method} is not available on this platform")
    items = load_dataset(json_root, "eurosat").train[:6]
    images = ImageList(items, build_transforms(32, MEAN, STD)["train"], view_seed=11)
    here = [x for x, _, _ in DataLoader(images, batch_size=3)]
    there = [x for x, _, _ in DataLoader(images, batch_size=3, num_workers=1, multiprocessing_context=method)]
    assert len(there) == 2 and all(torch.equal(a, b) for a, b in zip(here, there))


# ------------------------------------------------------------------------------------ files saved on a GPU
def tag_cuda(path: Path) -> int:
    """Rewrite a ``torch.save`` archive as if its tensors had been saved on ``cuda:0``: the storage location in
    ``data.pkl`` (pickled as the string ``cpu``) becomes ``cuda:0``. Returns how many tags were rewritten."""
    cpu, cuda = b"X\x03\x00\x00\x00cpu", b"X\x06\x00\x00\x00cuda:0"  # protocol-2 BINUNICODE strings
    src = zipfile.ZipFile(path)
    out = io.BytesIO()
    n = 0
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename.endswith("/data.pkl"):
                n = data.count(cpu)
                data = data.replace(cpu, cuda)
            dst.writestr(info, data)
    src.close()
    path.write_bytes(out.getvalue())
    return n


def tag_all(paths) -> None:
    paths = list(paths)
    assert paths
    for p in paths:
        assert tag_cuda(p) > 0, p


def test_tagging_makes_a_file_that_needs_map_location(tmp_path):
    path = tmp_path / "t.pt"
    torch.save({"w": torch.arange(4.0), "b": torch.ones(2)}, path)
    assert tag_cuda(path) == 1  # one location string; the second storage refers to it (pickle memo)
    loaded = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(loaded["w"], torch.arange(4.0)) and loaded["b"].device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)


class JobEnded(Exception):
    pass


def _interrupt_at(epoch: int):
    def hook(e, method):
        if e == epoch:
            raise JobEnded("simulated end of the job")
        return {}
    return hook


def test_gpu_saved_checkpoints_load_on_this_host(json_root, tmp_path):
    """Every dpclab path that reads a saved tensor file, on files whose storages say ``cuda:0``: resuming training
    (the run plan and the training loop), reusing a finished run's model.pt, the feature cache, the ω grid."""
    from dpclab.pipeline import plan_run, run
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig

    cfg = RunConfig.of(method="coop", dataset="eurosat", data_root=str(json_root), model="dpclab-tiny",
                    pretrained="embedded", shots=2, seed=1, device="cpu", cache_dir=str(tmp_path / "cache"),
                    runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 2}, progress=False)
    with pytest.raises(JobEnded):
        run(cfg, on_epoch=_interrupt_at(1))  # epoch 0 checkpointed, then the "job" ends
    (ckpt,) = (tmp_path / "runs").rglob("checkpoint.pt")
    tag_all([ckpt])
    exp = Experiment.prepare(cfg)
    assert [(s.action, s.resume_epoch) for s in plan_run(cfg, exp)] == [("resume", 1)]
    res = run(cfg, experiment=exp)
    assert [h["epoch"] for h in res.history] == [0, 1] and not res.reused

    tag_all([res.run_dir / "model.pt"])
    again = run(cfg, experiment=exp)
    assert again.reused and again.metrics == res.metrics

    feature_files = list((tmp_path / "cache" / "features").rglob("*.pt"))
    tag_all(feature_files)

    class NoEncoder(torch.nn.Module):
        def encode_image(self, x):
            raise AssertionError("the cached features should have been read")

    items = exp.base.test  # as the run's evaluation on the base classes asked for them
    feats = cached_features(NoEncoder(), exp.backbone.key, items, exp.transforms["test"], "test", "cpu",
                            cfg.source.cache_dir)
    assert feats.device.type == "cpu" and feats.shape[0] == len(items)

    from dpclab.omega import OmegaGrid

    grid = OmegaGrid([0.0, 1.0], {"base": torch.tensor([0.5, 0.6])}, {"base": torch.tensor([1, 0])})
    path = grid.save(tmp_path / "grid.pt")
    tag_all([path])
    assert torch.equal(OmegaGrid.load(path).accuracy["base"], torch.tensor([0.5, 0.6]))
