"""The method table: name -> (class, its config dataclass, its training defaults from SPEC §2).

A plain dict, no registry decorators: adding a method means adding one line here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .base import Output, Task, learned_state, load_learned_state
from .coop import CoOp, CoOpConfig
from .zeroshot import ZeroShotCLIP, ZeroShotConfig


@dataclass(frozen=True)
class MethodSpec:
    cls: type
    config: type
    #: overrides of :class:`dpclab.train.TrainConfig` defaults for this method
    train: dict = field(default_factory=dict)
    trainable: bool = True


METHODS: dict[str, MethodSpec] = {
    "zeroshot": MethodSpec(ZeroShotCLIP, ZeroShotConfig, {"epochs": 0}, trainable=False),
    "coop": MethodSpec(CoOp, CoOpConfig, {"epochs": 200, "batch_size": 32, "lr": 0.002}),
}


def get_method(name: str) -> MethodSpec:
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Available: {', '.join(METHODS)}.")
    return METHODS[name]


__all__ = ["METHODS", "MethodSpec", "get_method", "Output", "Task", "learned_state", "load_learned_state"]
