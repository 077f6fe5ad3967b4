"""The method table: name -> (class, its config dataclass, its training defaults from
docs/protocol.md#hyperparameters), and the plug-in table for the Base-New Trade-off fixes that wrap a method:
``"coop+dpc"``, ``"maple+dept"``...

Plain dicts, no registry decorators: adding a method means adding one line here (its class is a
:class:`~dpclab.methods.base.PromptMethod`; ``tests/test_contract.py`` then tests it, and every plug-in on it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from .base import Output, Plugin, PromptMethod, Task, learned_state, load_learned_state
from .cocoop import CoCoOp, CoCoOpConfig
from .coop import CoOp, CoOpConfig
from .dept import DePT, DePTConfig
from .dpc import DPC, DPCConfig
from .kgcoop import KgCoOp, KgCoOpConfig
from .maple import MaPLe, MaPLeConfig
from .promptkd import PromptKD, PromptKDConfig, teacher_run_config
from .promptsrc import PromptSRC, PromptSRCConfig
from .zeroshot import ZeroShotCLIP, ZeroShotConfig


@dataclass(frozen=True)
class MethodSpec:
    cls: type
    config: type
    #: overrides of :class:`dpclab.train.TrainConfig` defaults for this method
    train: dict = field(default_factory=dict)
    trainable: bool = True
    #: RunConfig fields the method's protocol fixes for its own training data (PromptKD: every training image of
    #: all classes, unlabeled: ``{"shots": 0, "train_classes": "all"}``); not applied under a plug-in
    data: dict = field(default_factory=dict)
    #: ``(run config, method config) -> the teacher's RunConfig``: the pipeline trains (or reuses) that run first and
    #: passes its tuned method as ``cls(backbone, config, teacher=...)`` (PromptKD); None = no teacher
    teacher: Callable | None = None


METHODS: dict[str, MethodSpec] = {
    "zeroshot": MethodSpec(ZeroShotCLIP, ZeroShotConfig, {"epochs": 0}, trainable=False),
    "coop": MethodSpec(CoOp, CoOpConfig, {"epochs": 200, "batch_size": 32, "lr": 0.002}),
    "cocoop": MethodSpec(CoCoOp, CoCoOpConfig, {"epochs": 10, "batch_size": 1, "lr": 0.002}),
    "kgcoop": MethodSpec(KgCoOp, KgCoOpConfig, {"epochs": 100, "batch_size": 128, "lr": 0.002}),
    "maple": MethodSpec(MaPLe, MaPLeConfig, {"epochs": 5, "batch_size": 4, "lr": 0.0035}),
    "promptsrc": MethodSpec(PromptSRC, PromptSRCConfig, {"epochs": 20, "batch_size": 4, "lr": 0.0025}),
    # docs/protocol.md#promptkd: the student distils a PromptSRC teacher (its own 16-shot base run) on every training
    # image of all classes, unlabeled; 20 epochs, batch 8, lr 0.005 (released vit_b16_c2_ep20_batch8_4+4ctx)
    "promptkd": MethodSpec(PromptKD, PromptKDConfig, {"epochs": 20, "batch_size": 8, "lr": 0.005},
                           data={"shots": 0, "train_classes": "all"}, teacher=teacher_run_config),
}


@dataclass(frozen=True)
class PluginSpec:
    """A plug-in wraps a base method: ``cls(base_method, config)``.

    ``two_step``: the base method is first tuned normally (step 1, reused from its run directory when finished) and
    the plug-in then trains on top of it (DPC); otherwise the plug-in trains jointly from scratch (DePT).
    ``train`` are the plug-in phase's TrainConfig defaults, ``train_by_base`` per-base exceptions.
    ``base_cfg_by_base``: per-base defaults of the *base method's* config under this plug-in (e.g. KgCoOp's
    regulariser weight under DePT); ``RunConfig.base_method_cfg`` still overrides them.
    A plug-in wraps trainable methods only (``MethodSpec.trainable``), minus those it ``refuses``.
    """

    cls: type
    config: type
    train: dict = field(default_factory=dict)
    two_step: bool = False
    train_by_base: dict = field(default_factory=dict)
    base_cfg_by_base: dict = field(default_factory=dict)
    #: bases the plug-in cannot wrap: base name -> why (:func:`parse_method` refuses the pair with that reason)
    refuses: dict = field(default_factory=dict)


PLUGINS: dict[str, PluginSpec] = {
    # docs/protocol.md#dpc: step 2 trains 20 epochs, lr 0.002, batch 4 anchors (each with up to top_k-1 = 7 negatives)
    "dpc": PluginSpec(DPC, DPCConfig, {"epochs": 20, "batch_size": 4, "lr": 0.002}, two_step=True,
                      refuses={"cocoop": "DPC's InfoNCE needs class-level text features, and CoCoOp's prompts are "
                                         "per image"}),
    # DePT (docs/protocol.md#dept): trained jointly from scratch with the base; 10 epochs, batch 4, lr 0.0035 for every base
    # (CoCoOp: batch 1, lr 0.002); KgCoOp+DePT uses the regulariser weight W = 2.0 (reference configs).
    "dept": PluginSpec(DePT, DePTConfig, train={"epochs": 10, "batch_size": 4, "lr": 0.0035}, two_step=False,
                       train_by_base={"cocoop": {"batch_size": 1, "lr": 0.002}},
                       base_cfg_by_base={"kgcoop": {"weight": 2.0}}),
}


def method_names() -> list[str]:
    """Every name the tables admit: the methods, then each plug-in on each trainable base it does not refuse."""
    pairs = [f"{m}+{p}" for m, spec in METHODS.items() if spec.trainable
             for p, pspec in PLUGINS.items() if m not in pspec.refuses]
    return [*METHODS, *pairs]


def parse_method(name: str) -> tuple[str, str | None]:
    """``"coop+dpc"`` -> ("coop", "dpc"); ``"coop"`` -> ("coop", None). Both parts and the pair are checked."""
    base, _, plugin = name.partition("+")
    spec = get_method(base)
    if not plugin:
        return base, None
    if plugin not in PLUGINS:
        raise ValueError(f"Unknown plug-in {plugin!r} in {name!r}. Available: {', '.join(PLUGINS) or 'none yet'}.")
    why = PLUGINS[plugin].refuses.get(base) or ("" if spec.trainable else f"{base!r} trains nothing to build on")
    if why:
        options = [n for n in method_names() if n.endswith(f"+{plugin}")]
        raise ValueError(f"{plugin!r} cannot wrap {base!r}: {why}. Choose one of {', '.join(options)}.")
    return base, plugin


def get_method(name: str) -> MethodSpec:
    if "+" in name:
        name = name.partition("+")[0]
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Available: {', '.join(method_names())}.")
    return METHODS[name]


__all__ = ["METHODS", "PLUGINS", "MethodSpec", "PluginSpec", "get_method", "parse_method", "method_names", "Output",
           "Task", "PromptMethod", "Plugin", "learned_state", "load_learned_state", "DePT", "DePTConfig"]
