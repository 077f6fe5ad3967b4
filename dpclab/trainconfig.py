"""The training settings of one run (:class:`TrainConfig`) and the learning-rate schedule they define.

A leaf module (it imports nothing of dpclab): the method contract (:mod:`dpclab.methods.base`), the batches
(:mod:`dpclab.data.examples`) and the training loop (:mod:`dpclab.train`) all read it, none of them through another.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

#: a training setting that changes a run's numbers: part of its fingerprint (:mod:`dpclab.runkey`)
_FINGERPRINT = {"key": ("fingerprint",)}
#: TrainConfig fields saying how often a run checkpoints: they change neither its fingerprint nor its run directory
#: (not marked _FINGERPRINT, and never keyed among a run's ``train`` / ``base_train`` overrides)
CHECKPOINT_OPTIONS = ("checkpoint_steps", "checkpoint_minutes")


@dataclass
class TrainConfig:
    """Settings of :func:`dpclab.train.fit`. A method's protocol defaults (docs/protocol.md#hyperparameters) come from
    its resolved :class:`~dpclab.methods.MethodSpec` (``spec.train``); a run's ``train`` overrides go on top."""

    #: epochs to train (0: nothing to train, the method is only evaluated)
    epochs: int = field(default=200, metadata=_FINGERPRINT)
    #: images per SGD step (the anchors of a step for DPC, whose batches add hard negatives)
    batch_size: int = field(default=32, metadata=_FINGERPRINT)
    #: peak learning rate of the cosine schedule (per parameter group: methods may scale it, e.g. DePT's head)
    lr: float = field(default=0.002, metadata=_FINGERPRINT)
    #: SGD momentum
    momentum: float = field(default=0.9, metadata=_FINGERPRINT)
    #: SGD weight decay (L2 on every trainable tensor)
    weight_decay: float = field(default=5e-4, metadata=_FINGERPRINT)
    #: epochs at the constant ``warmup_lr`` before the cosine decay starts (Dassl's ConstantWarmupScheduler)
    warmup_epochs: int = field(default=1, metadata=_FINGERPRINT)
    #: learning rate of the warm-up epochs
    warmup_lr: float = field(default=1e-5, metadata=_FINGERPRINT)
    #: seeds the batch order (:func:`epoch_generator`) and the augmented views; the pipeline passes the run's seed
    seed: int = field(default=1, metadata=_FINGERPRINT)
    #: cached augmented views of the training images (features-kind methods); 0 = one fresh view per epoch
    n_views: int = field(default=0, metadata=_FINGERPRINT)
    #: DataLoader workers decoding training images (pixel methods); not part of a run's fingerprint
    num_workers: int = 0
    #: show a progress bar (tqdm.auto); not part of a run's fingerprint
    progress: bool = True
    #: also write a mid-epoch checkpoint every this many steps (0: at epoch ends only), so a run killed inside a long
    #: epoch (PromptKD on ImageNet) resumes from that step exactly; not part of a run's fingerprint
    checkpoint_steps: int = 0
    #: also write a mid-epoch checkpoint when this many minutes have passed since the last one inside an epoch (0:
    #: off; an epoch shorter than that writes none); not part of a run's fingerprint
    checkpoint_minutes: float = 10.0

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
