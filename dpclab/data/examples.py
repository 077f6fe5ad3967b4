"""What a method is trained and evaluated on: :class:`Examples` (labelled inputs of a
:class:`~dpclab.data.items.Task`, as cached frozen features or as images), with the batches of one training epoch.

The training loop (:mod:`dpclab.train`) builds and reads them; the method contract (:mod:`dpclab.methods.base`) and
evaluation (:mod:`dpclab.evaluate`) only name them in annotations, so neither stands on the image pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterator

import torch
from torch.utils.data import DataLoader

from dpclab.data.items import Datum, Task
from dpclab.data.features import ImageList, loader_options
from dpclab.trainconfig import TrainConfig


@dataclass
class Examples:
    """Labelled examples for one task. ``features(view) -> [N, E]`` for features-kind methods (cached frozen
    image features; the view is ignored for test data); ``items`` + ``transform`` for pixel-kind methods (images
    loaded with a per-view seed for training, in order for evaluation)."""

    #: class index of every example [N]
    labels: torch.Tensor
    #: ``features(view) -> [N, E]``: the frozen image features of augmented view ``view`` (features-kind methods)
    features: Callable[[int], torch.Tensor] | None = None
    #: the images (pixel-kind methods)
    items: list[Datum] | None = None
    #: the image transform (random crops for training, deterministic for evaluation)
    transform: Callable | None = None
    #: the task whose classes ``labels`` index (:func:`dpclab.train.fit` fills it in for the ``batches`` hook)
    task: Task | None = None
    #: DataLoader workers decoding images for evaluation (pixel methods); training uses ``TrainConfig.num_workers``
    num_workers: int = 0
    #: leading batches of an epoch :meth:`batches` passes over without loading them, yielded as ``(None, None)``
    #: (a run resumed mid-epoch: :func:`dpclab.train.fit` skips the steps it has done)
    skip_batches: int = 0

    def __len__(self) -> int:
        return len(self.labels)

    def index_batches(self, batch_size: int, generator: torch.Generator) -> list[torch.Tensor]:
        """The shuffled index batches of one epoch (a last incomplete batch is dropped)."""
        order = torch.randperm(len(self), generator=generator)
        n = len(self) // batch_size * batch_size if len(self) >= batch_size else len(self)
        return [order[i:i + batch_size] for i in range(0, n, batch_size)]

    def epoch_view(self, epoch: int, cfg: TrainConfig) -> int:
        """The augmented view training epoch ``epoch`` reads: cached view ``epoch % cfg.views()`` of the features,
        or a fresh view of the images every epoch."""
        return epoch % cfg.views() if self.features is not None else epoch

    def _images(self, view: int, cfg: TrainConfig) -> ImageList:
        return ImageList(self.items, self.transform, view_seed=cfg.seed * 7919 + view)

    def take(self, view: int, cfg: TrainConfig) -> Callable[[torch.Tensor], torch.Tensor]:
        """``take(idx)``: the inputs of the examples ``idx`` as seen in augmented view ``view`` (one cached feature
        view, or the images with the transform seeded by the view). The one place a view becomes inputs: the plain
        batches and a method's own batches (DPC's hard negatives) both read it."""
        if self.features is not None:
            features = self.features(view)
            return lambda idx: features[idx]
        images = self._images(view, cfg)
        return lambda idx: torch.stack([images[int(i)][0] for i in idx])

    def inputs(self, idx: torch.Tensor, epoch: int, cfg: TrainConfig) -> torch.Tensor:
        """Inputs for the examples ``idx`` as seen in ``epoch`` (one augmented view)."""
        return self.take(self.epoch_view(epoch, cfg), cfg)(idx)

    def ordered_batches(self, batch_size: int) -> Iterator[tuple]:
        """All examples in order (evaluation): cached features, or images with the (deterministic) transform."""
        if self.features is not None:
            feats = self.features(0)
            for i in range(0, len(self), batch_size):
                yield feats[i:i + batch_size], self.labels[i:i + batch_size]
            return
        loader = DataLoader(ImageList(self.items, self.transform), batch_size=batch_size, shuffle=False,
                            **loader_options(self.num_workers))
        for x, y, _ in loader:
            yield x, y

    def batches(self, epoch: int, cfg: TrainConfig, generator: torch.Generator) -> Iterator[tuple]:
        """The plain shuffled training batches ``(x, y)`` of ``epoch`` in its augmented view."""
        chunks = self.index_batches(cfg.batch_size, generator)
        view = self.epoch_view(epoch, cfg)
        skip = min(self.skip_batches, len(chunks))
        for _ in range(skip):
            yield None, None
        chunks = chunks[skip:]
        if self.features is not None:
            take = self.take(view, cfg)
            for idx in chunks:
                yield take(idx), self.labels[idx]
            return
        if not chunks:
            return
        loader = DataLoader(self._images(view, cfg), batch_sampler=[c.tolist() for c in chunks],
                            **loader_options(cfg.num_workers))
        for x, y, _ in loader:
            yield x, y


__all__ = ["Task", "Examples"]
