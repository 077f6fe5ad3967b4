"""The method table: name -> (class, its config dataclass, its training defaults from
docs/protocol.md#hyperparameters), and the plug-in table for the Base-New Trade-off fixes that wrap a method:
``"coop+dpc"``, ``"maple+dept"``...

Plain dicts, no registry decorators: adding a method means adding one line here (its class is a
:class:`~dpclab.methods.base.PromptMethod`; ``tests/test_contract.py`` then tests it, and every plug-in on it; see
docs/extending.md). Nothing reads these entries directly: :func:`dpclab.methods.resolve` turns a name into one frozen
:class:`~dpclab.methods.MethodSpec`, once per run. The README's methods table and docs/protocol.md's hyperparameter
table are generated from these dicts (``python -m dpclab.methods.doc_tables``; ``tests/test_extending.py`` checks
that they match).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from dpclab.methods.cocoop import CoCoOp, CoCoOpConfig
from dpclab.methods.coop import CoOp, CoOpConfig
from dpclab.methods.dept import DePT, DePTConfig
from dpclab.methods.dpc import DPC, DPCConfig
from dpclab.methods.kgcoop import KgCoOp, KgCoOpConfig
from dpclab.methods.maple import MaPLe, MaPLeConfig
from dpclab.methods.promptkd import PromptKD, PromptKDConfig, teacher_run_config
from dpclab.methods.promptsrc import PromptSRC, PromptSRCConfig
from dpclab.methods.zeroshot import ZeroShotCLIP, ZeroShotConfig


@dataclass(frozen=True)
class Entry:
    """What a row of either table holds: the class, its config, its training defaults and its code revision."""

    #: the class: a :class:`~dpclab.methods.base.PromptMethod` (``cls(backbone, config)``) in :data:`METHODS`, a
    #: :class:`~dpclab.methods.base.Plugin` (``cls(base_method, config)``) in :data:`PLUGINS`
    cls: type
    #: its config dataclass (every field commented with ``#:``)
    config: type
    #: overrides of :class:`dpclab.trainconfig.TrainConfig` defaults: the method's protocol, or the plug-in phase's
    train: dict = field(default_factory=dict)
    #: the code revision of what a run of it trains: bumped when a change alters the result of a run with unchanged
    #: settings; a non-zero revision is part of the run's directory key and fingerprint, so runs made by older code are
    #: kept and never reused
    revision: int = 0


@dataclass(frozen=True)
class Teacher:
    """How a method built on a tuned teacher (distillation, PromptKD) gets it: a :class:`MethodEntry`'s ``teacher``.
    Called as ``teacher(run config, method config)`` it returns the teacher's RunConfig."""

    #: ``(run config, method config) -> RunConfig`` of the teacher's run: the pipeline plans and runs it first and
    #: builds ``cls(backbone, config, teacher=method)``
    run_config: Callable
    #: the method config option naming the teacher's method (a plan reads that method's training defaults)
    method_option: str
    #: the method config option setting the teacher's epochs (None there: the teacher's default); a plan that
    #: shortens every run (the notebooks' quick mode) fills it
    epochs_option: str

    def __call__(self, cfg, method_cfg):
        return self.run_config(cfg, method_cfg)


@dataclass(frozen=True)
class MethodEntry(Entry):
    """One row of :data:`METHODS`: ``cls(backbone, config)`` builds the method."""

    #: False for a method that trains nothing (zero-shot CLIP): evaluated only; only a plug-in that trains parameters
    #: of its own (:attr:`PluginEntry.wraps_frozen`) wraps it
    trainable: bool = True
    #: RunConfig fields the method's protocol fixes for its own training data (e.g. every training image of all
    #: classes: ``{"shots": 0, "train_classes": "all"}``); applied to its own runs, not under a plug-in
    data: dict = field(default_factory=dict)
    #: the tuned method this one is built on as ``teacher`` (distillation), see :class:`Teacher`; None for most
    teacher: Teacher | None = None


@dataclass(frozen=True)
class PluginEntry(Entry):
    """One row of :data:`PLUGINS`: a plug-in wraps a base method, ``cls(base_method, config)``."""

    #: True: the base method is first tuned normally (step 1, reused from its run directory when finished) and the
    #: plug-in then trains on top of it (DPC); False: the plug-in trains jointly with the base from scratch (DePT)
    two_step: bool = False
    #: per-base exceptions to ``train``: base name -> TrainConfig overrides
    train_by_base: dict = field(default_factory=dict)
    #: per-base defaults of the *base method's* config under this plug-in (e.g. KgCoOp's regulariser weight under
    #: DePT); a run's ``base_method_cfg`` still overrides them
    base_cfg_by_base: dict = field(default_factory=dict)
    #: bases the plug-in cannot wrap: base name -> why (:func:`dpclab.methods.resolve` refuses the pair with it)
    refuses: dict = field(default_factory=dict)
    #: True: the plug-in trains parameters of its own jointly with the base, so it can also wrap a method that trains
    #: nothing (``zeroshot+<plugin>``, e.g. CLIP-Adapter); False: it needs a base that trains (DPC duplicates its
    #: tuned prompts; DePT's protocol trains the base's prompts with its head). Never for a two-step plug-in
    wraps_frozen: bool = False


METHODS: dict[str, MethodEntry] = {
    "zeroshot": MethodEntry(ZeroShotCLIP, ZeroShotConfig, {"epochs": 0}, trainable=False),
    "coop": MethodEntry(CoOp, CoOpConfig, {"epochs": 200, "batch_size": 32, "lr": 0.002}),
    "cocoop": MethodEntry(CoCoOp, CoCoOpConfig, {"epochs": 10, "batch_size": 1, "lr": 0.002}),
    "kgcoop": MethodEntry(KgCoOp, KgCoOpConfig, {"epochs": 100, "batch_size": 128, "lr": 0.002}),
    "maple": MethodEntry(MaPLe, MaPLeConfig, {"epochs": 5, "batch_size": 4, "lr": 0.0035}),
    "promptsrc": MethodEntry(PromptSRC, PromptSRCConfig, {"epochs": 20, "batch_size": 4, "lr": 0.0025}),
    # docs/protocol.md#promptkd: the student distils a PromptSRC teacher (its own 16-shot base run) on every training
    # image of all classes, unlabeled; 20 epochs, batch 8, lr 0.005 (released vit_b16_c2_ep20_batch8_4+4ctx)
    "promptkd": MethodEntry(PromptKD, PromptKDConfig, {"epochs": 20, "batch_size": 8, "lr": 0.005},
                            data={"shots": 0, "train_classes": "all"},
                            teacher=Teacher(teacher_run_config, "teacher_method", "teacher_epochs")),
}


PLUGINS: dict[str, PluginEntry] = {
    # docs/protocol.md#dpc: step 2 trains 20 epochs, lr 0.002, batch 4 anchors (each with up to top_k-1 = 7 negatives)
    # revision 1: step 2 trains on fresh views, never step 1's, and ``mode=released`` builds its batches as the released
    # code (issue 22; docs/fidelity.md D4-D6): DPC runs made before are not reused
    "dpc": PluginEntry(DPC, DPCConfig, {"epochs": 20, "batch_size": 4, "lr": 0.002}, two_step=True,
                       refuses={"cocoop": "DPC's InfoNCE needs class-level text features, and CoCoOp's prompts are "
                                          "per image"}, revision=1),
    # DePT (docs/protocol.md#dept): trained jointly from scratch with the base; 10 epochs, batch 4, lr 0.0035 for every base
    # (CoCoOp: batch 1, lr 0.002); KgCoOp+DePT uses the regulariser weight W = 2.0 (reference configs).
    "dept": PluginEntry(DePT, DePTConfig, train={"epochs": 10, "batch_size": 4, "lr": 0.0035}, two_step=False,
                        train_by_base={"cocoop": {"batch_size": 1, "lr": 0.002}},
                        base_cfg_by_base={"kgcoop": {"weight": 2.0}}),
}


__all__ = ["METHODS", "PLUGINS", "Entry", "MethodEntry", "PluginEntry", "Teacher"]
