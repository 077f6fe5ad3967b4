"""The training settings of one run (:class:`TrainConfig`) and the learning-rate schedule they define.

A leaf module (it imports nothing of dpclab): the method contract (:mod:`dpclab.methods.base`), the batches
(:mod:`dpclab.data.examples`) and the training loop (:mod:`dpclab.train`) all read it, none of them through another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar

#: metadata of a training setting that never changes a run's numbers: left out of its fingerprint
#: (:mod:`dpclab.runkey`; every other field is in it, a new one too unless it says so)
_UNKEYED = {"key": ()}
#: TrainConfig fields saying how often a run checkpoints: they change neither its fingerprint nor its run directory
#: (never keyed among a run's ``train`` / ``base_train`` overrides either)
CHECKPOINT_OPTIONS = ("checkpoint_steps", "checkpoint_minutes")


@dataclass
class TrainConfig:
    """Settings of :func:`dpclab.train.fit`. A method's protocol defaults (docs/protocol.md#hyperparameters) come from
    its resolved :class:`~dpclab.methods.MethodSpec` (``spec.train``); a run's ``train`` overrides go on top."""

    #: the run identities a field belongs to unless its metadata says otherwise (:func:`dpclab.runkey.key_fields`):
    #: every training setting is part of a run's fingerprint
    KEY_DEFAULT: ClassVar[tuple] = ("fingerprint",)

    #: epochs to train (0: nothing to train, the method is only evaluated)
    epochs: int = 200
    #: images per SGD step (the anchors of a step for DPC, whose batches add hard negatives)
    batch_size: int = 32
    #: peak learning rate of the cosine schedule (per parameter group: methods may scale it, e.g. DePT's head)
    lr: float = 0.002
    #: SGD momentum
    momentum: float = 0.9
    #: SGD weight decay (L2 on every trainable tensor)
    weight_decay: float = 5e-4
    #: epochs at the constant ``warmup_lr`` before the cosine decay starts (Dassl's ConstantWarmupScheduler)
    warmup_epochs: int = 1
    #: learning rate of the warm-up epochs
    warmup_lr: float = 1e-5
    #: seeds the batch order (:func:`epoch_generator`) and the augmented views; the pipeline passes the run's seed
    seed: int = 1
    #: cached augmented views of the training images (features-kind methods); 0 = one fresh view per epoch
    n_views: int = 0
    #: DataLoader workers decoding training images (pixel methods); not part of a run's fingerprint
    num_workers: int = field(default=0, metadata=_UNKEYED)
    #: show a progress bar (tqdm.auto); not part of a run's fingerprint
    progress: bool = field(default=True, metadata=_UNKEYED)
    #: also write a mid-epoch checkpoint every this many steps (0: at epoch ends only), so a run killed inside a long
    #: epoch (PromptKD on ImageNet) resumes from that step exactly; not part of a run's fingerprint
    checkpoint_steps: int = field(default=0, metadata=_UNKEYED)
    #: also write a mid-epoch checkpoint when this many minutes have passed since the last one inside an epoch (0:
    #: off; an epoch shorter than that writes none); not part of a run's fingerprint
    checkpoint_minutes: float = field(default=10.0, metadata=_UNKEYED)

    def __post_init__(self):
        if self.checkpoint_steps < 0 or self.checkpoint_minutes < 0:
            raise ValueError(f"checkpoint_steps and checkpoint_minutes must be >= 0 (0: off), got "
                             f"{self.checkpoint_steps} and {self.checkpoint_minutes}.")

    def views(self) -> int:
        """How many distinct augmented views the epochs cycle through: ``n_views``, or one per epoch."""
        return self.n_views if self.n_views > 0 else self.epochs


def lr_at_epoch(epoch: int, base_lr: float, cfg: TrainConfig) -> float:
    """Learning rate used *during* ``epoch`` (0-based), matching Dassl's ConstantWarmupScheduler + cosine:
    warm-up epochs run at ``warmup_lr``; epoch ``e >= w`` uses ``0.5 * lr * (1 + cos(pi * (e - w) / epochs))``."""
    if epoch < cfg.warmup_epochs:
        return cfg.warmup_lr
    return 0.5 * base_lr * (1 + math.cos(math.pi * (epoch - cfg.warmup_epochs) / cfg.epochs))


__all__ = ["TrainConfig", "lr_at_epoch", "CHECKPOINT_OPTIONS"]
