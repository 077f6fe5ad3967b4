"""Where a training step's time goes: the image and text towers' forward passes and the optimiser step."""

from __future__ import annotations

import time
from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn
from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

from dpclab.lab.timing import sync


@contextmanager
def tower_profile(clip: nn.Module, device: torch.device) -> Iterator[dict]:
    """Seconds spent in the image tower's and the text tower's forward blocks, and in optimiser steps, during the
    block (forward hooks on every residual block, global optimiser hooks; CUDA synchronised at each hook)."""
    acc = {"image_forward": 0.0, "text_forward": 0.0, "optimizer": 0.0}
    start: dict[str, float] = {}
    handles = []

    def pre(key):
        def hook(*_):
            sync(device)
            start[key] = time.perf_counter()
        return hook

    def post(key):
        def hook(*_):
            sync(device)
            acc[key] += time.perf_counter() - start.pop(key, time.perf_counter())
        return hook

    for key, blocks in (("image_forward", clip.visual.transformer.resblocks),
                        ("text_forward", clip.transformer.resblocks)):
        handles += [blocks[0].register_forward_pre_hook(pre(key)), blocks[-1].register_forward_hook(post(key))]
    handles += [register_optimizer_step_pre_hook(pre("optimizer")), register_optimizer_step_post_hook(post("optimizer"))]
    try:
        yield acc
    finally:
        for h in handles:
            h.remove()

