"""One dataset on one backbone for one few-shot seed: :class:`Experiment` (tasks, cached features, examples,
evaluation), the backbone cache and the table of known datasets. :func:`dpclab.pipeline.run` trains on it."""

from __future__ import annotations

from functools import lru_cache

import torch
from torch import nn
from torchvision import transforms as T

from dpclab.backbones import Backbone, load_clip
from dpclab.data.coop import DATASETS, DatasetSplits, few_shot, load_dataset, subsample_classes
from dpclab.data.items import Datum, Task
from dpclab.data.examples import Examples
from dpclab.data.features import build_transforms, cached_features, default_num_workers, items_digest
from dpclab.data.downstream import WORLD_SPECS
from dpclab.evaluate import accuracy, harmonic_mean, predict_logits
from dpclab.precision import autocast, input_dtype


@lru_cache(maxsize=4)
def cached_backbone(model: str, pretrained: str, device: str, precision: str = "fp32") -> Backbone:
    """Load a backbone once per process (notebooks run many experiments on the same one)."""
    return load_clip(model, pretrained, device, precision)


class Experiment:
    """One dataset on one backbone for one few-shot seed: tasks and (cached) examples for any method kind."""

    def __init__(self, backbone: Backbone, data: DatasetSplits, seed: int, cache_dir: str | None,
                 train_classes: str = "base", progress: bool = True):
        self.backbone, self.data, self.seed, self.cache_dir, self.progress = backbone, data, seed, cache_dir, progress
        self.base = subsample_classes(data, "base")
        self.new = subsample_classes(data, "new")
        self.train_split = self.base if train_classes == "base" else data
        #: DataLoader workers for decoding images (feature caches, pixel batches, pixel evaluation)
        self.num_workers = default_num_workers(backbone.image_size)
        scale = tuple(data.crop_scale)
        self.transforms = build_transforms(backbone.image_size, backbone.mean, backbone.std, crop_scale=scale)
        if backbone.precision == "fp16":  # pixels in half precision, as the reference's image.type(clip.dtype)
            self.transforms = {k: T.Compose([t, T.ConvertImageDtype(torch.float16)]) for k, t in self.transforms.items()}
        # the cache key of training views names a non-default crop scale
        self.train_transform_name = "train" if scale == (0.08, 1.0) else f"train-crop{scale[0]:g}-{scale[1]:g}"
        self.tasks = {
            "base": Task(tuple(self.base.classnames), data.template, "base", data.name),
            "new": Task(tuple(self.new.classnames), data.template, "new", data.name),
            "all": Task(tuple(data.classnames), data.template, "all", data.name),
        }
        self.train_task = self.tasks["base" if train_classes == "base" else "all"]

    @classmethod
    def prepare(cls, cfg, backbone: Backbone | None = None, specs: dict | None = None) -> "Experiment":
        """The experiment of a :class:`~dpclab.runconfig.RunConfig` ``cfg`` (its dataset, shots, seed, backbone)."""
        src = cfg.source
        backbone = backbone or cached_backbone(src.model, src.pretrained, src.device, src.precision)
        data = load_dataset(src.data_root, cfg.dataset, specs=specs or dataset_specs())
        data = few_shot(data, src.shots, cfg.seed, src.cache_dir)
        return cls(backbone, data, cfg.seed, src.cache_dir, cfg.train_classes, cfg.progress)

    def inputs_key(self) -> str:
        """Identifies the images a run reads: its training items and the base and new test items, by path, label
        and file (size, mtime_ns). Run directories are keyed on it, so a replaced image starts new runs."""
        return items_digest(self.train_split.train + self.data.test)

    def features(self, items: list[Datum], transform: str, view: int = 0) -> torch.Tensor:
        bb = self.backbone
        name = self.train_transform_name if transform == "train" else transform
        with autocast(bb.precision, bb.device):
            feats = cached_features(bb.model, bb.key, items, self.transforms[transform], name, bb.device,
                                    self.cache_dir, view=view, seed=self.seed, progress=self.progress,
                                    num_workers=self.num_workers)
        return feats.to(input_dtype(bb.precision))  # fp16: the cached float copy of half features, exactly

    def examples(self, items: list[Datum], kind: str, train: bool) -> Examples:
        labels = torch.tensor([d.label for d in items])
        name = "train" if train else "test"
        if kind == "features":
            if train:  # the images too: DPC's released mode crops each hard-negative draw afresh
                return Examples(labels, features=lambda v: self.features(items, "train", v), items=items,
                                transform=self.transforms["train"])
            return Examples(labels, features=lambda v: self.features(items, "test"))
        return Examples(labels, items=items, transform=self.transforms[name], num_workers=self.num_workers)

    def train_examples(self, kind: str) -> Examples:
        return self.examples(self.train_split.train, kind, train=True)

    def test_examples(self, split: str, kind: str) -> Examples:
        data = {"base": self.base, "new": self.new, "all": self.data}[split]
        return self.examples(data.test, kind, train=False)

    def accuracy(self, method: nn.Module, split: str) -> float:
        ex = self.test_examples(split, method.input_kind)
        with autocast(self.backbone.precision, self.backbone.device):
            logits = predict_logits(method, ex, self.tasks[split])
        return accuracy(logits, ex.labels)

    def evaluate(self, method: nn.Module) -> dict[str, float]:
        base, new = self.accuracy(method, "base"), self.accuracy(method, "new")
        return {"base": base, "new": new, "hm": harmonic_mean(base, new)}


def dataset_specs() -> dict:
    """The 11 CoOp datasets plus the embedded world's datasets."""
    return {**DATASETS, **WORLD_SPECS}


__all__ = ["Experiment", "cached_backbone", "dataset_specs"]
