"""A method name resolved once: :class:`MethodSpec`, what :func:`dpclab.methods.resolve` (:mod:`.table`) returns,
the one public factory of methods; and the rows of the tables it is resolved from (:class:`MethodEntry`,
:class:`PluginEntry`, :class:`Teacher`).

A spec holds the base, the plug-in, whether the plug-in trains in two steps, the training defaults of the run's phase
(with a plug-in's per-base exceptions), the plug-in's defaults for the base's config and its refusals. A run
(:func:`dpclab.pipeline.run`) resolves its method once and passes the spec down: the plan, the training settings
and the construction of the method (``resolve(name).build(backbone, ...)``) all read it.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Callable, Mapping

import torch
from torch import nn

from dpclab.methods.base import RUN_VALUE
from dpclab.precision import cast_learned
from dpclab.trainconfig import TrainConfig


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


def _frozen(d: Mapping | None) -> Mapping:
    return MappingProxyType(dict(d or {}))


@dataclass(frozen=True)
class MethodSpec:
    """Everything a run needs to know about its method, resolved once from the tables (:func:`resolve`)."""

    #: the full name, e.g. "coop+dpc"
    name: str
    #: the base method's name ("coop")
    base: str
    #: the base method's table entry (class, config, protocol defaults)
    entry: MethodEntry
    #: the plug-in's name ("dpc"); None for a plain method
    plugin: str | None = None
    #: the plug-in's table entry; None for a plain method
    plugin_entry: PluginEntry | None = None
    #: the base is tuned first (step 1, its own run) and the plug-in trains on top of it (DPC)
    two_step: bool = False
    #: False for a run that trains nothing (zero-shot): evaluated only; ``zeroshot+<plug-in>`` trains the plug-in's own
    #: parameters (:attr:`PluginEntry.wraps_frozen`) and is True
    trainable: bool = True
    #: TrainConfig defaults of the run's own phase: the method's protocol, or the plug-in phase's (per-base exceptions
    #: included); read-only
    train: Mapping = field(default_factory=dict)
    #: defaults of the base method's config under the plug-in (e.g. KgCoOp's W = 2.0 under DePT); read-only
    base_cfg: Mapping = field(default_factory=dict)
    #: the plug-in's refusals, base -> why (bases it cannot wrap); read-only, empty for a plain method
    refuses: Mapping = field(default_factory=dict)
    #: RunConfig fields the method's protocol fixes for its training data (:attr:`MethodEntry.data`; a plain method's
    #: only, a plug-in trains on the run's own data); read-only
    data: Mapping = field(default_factory=dict)

    @property
    def teacher(self):
        """The base's :class:`~dpclab.methods.spec.Teacher` (called as ``(run config, method config) -> the
        teacher's RunConfig``) when the base is built on a tuned teacher (:attr:`MethodEntry.teacher`), else None. A
        two-step plug-in's teacher belongs to its step 1."""
        return None if self.two_step else self.entry.teacher

    def teacher_epochs_option(self, overrides: Mapping | None = None) -> tuple[str, str] | None:
        """``(the teacher's method name, the base config option that sets the teacher's epochs)`` under ``overrides``
        of the base's config, when the base (step 1's, for a two-step plug-in) is built on a teacher; else None. A
        plan that shortens every run (quick mode) fills that option with the teacher method's shortened epochs."""
        teacher = self.entry.teacher
        if teacher is None:
            return None
        cfg = self.base_config(overrides) if self.plugin else self.config(overrides)
        return getattr(cfg, teacher.method_option), teacher.epochs_option

    @property
    def revision(self) -> dict:
        """The code revisions of the run's method and plug-in (:attr:`MethodEntry.revision`), only those that are not
        0: ``{}`` for most methods, ``{"dpc": 2}`` for a DPC step 2. Part of the run key when not empty."""
        revs = {self.base: self.entry.revision, self.plugin: self.plugin_entry.revision if self.plugin_entry else 0}
        return {k: v for k, v in revs.items() if k and v}

    @property
    def step1(self) -> "MethodSpec | None":
        """The spec of step 1 (the plain base) for a two-step plug-in, else None. Derived, not resolved again."""
        return plain_spec(self.base, self.entry) if self.two_step else None

    # ---- configs ----------------------------------------------------------------------------------------------
    def config(self, overrides: Mapping | None = None, n_classes: int = 0):
        """The run's own config object: the plug-in's config for ``base+plugin``, else the method's."""
        if self.plugin_entry is not None:
            return make_config(self.plugin_entry.config, overrides, self.plugin, n_classes)
        return make_config(self.entry.config, overrides, self.base, n_classes)

    def base_config(self, overrides: Mapping | None = None, n_classes: int = 0):
        """The base method's config: the plug-in's defaults for this base (:attr:`base_cfg`), then ``overrides``."""
        return make_config(self.entry.config, {**self.base_cfg, **(overrides or {})}, self.base, n_classes)

    def train_config(self, overrides: Mapping | None = None, **fixed) -> TrainConfig:
        """:class:`TrainConfig` of this method's phase: :attr:`train` defaults, then ``overrides``, then ``fixed``
        (the run's ``seed`` and ``progress``). Unknown keys fail with the list of known ones."""
        merged = {**self.train, **(overrides or {}), **fixed}
        known = {f.name for f in fields(TrainConfig)}
        unknown = set(merged) - known
        if unknown:
            raise ValueError(f"Unknown training option(s) {sorted(unknown)}; TrainConfig takes {sorted(known)}.")
        return TrainConfig(**merged)

    # ---- construction -----------------------------------------------------------------------------------------
    def build(self, backbone, overrides: Mapping | None = None, n_classes: int = 0,
              base_overrides: Mapping | None = None, base_method: nn.Module | None = None,
              seed: int | None = None, teacher: nn.Module | None = None) -> nn.Module:
        """The method itself. For a plug-in, ``overrides`` configure the plug-in and ``base_overrides`` the base;
        ``base_method`` supplies an already tuned base (DPC's step 1), ``teacher`` the tuned teacher of a base built
        on one (:attr:`MethodEntry.teacher`). ``seed`` makes random initialisations (random context, meta-nets, deep
        prompts) depend on it alone; the global torch RNG state is left as it was."""
        if seed is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.build(backbone, overrides, n_classes, base_overrides, base_method, teacher=teacher)
        extra = {"teacher": teacher} if self.entry.teacher is not None else {}
        if self.plugin_entry is None:  # fp16: the prompts inherit the CLIP dtype (before any plug-in wraps them)
            return cast_learned(self.entry.cls(backbone, self.config(overrides, n_classes), **extra),
                                backbone.precision)
        base = base_method
        if base is None:
            base = cast_learned(self.entry.cls(backbone, self.base_config(base_overrides, n_classes), **extra),
                                backbone.precision)
        # the plug-in's own parameters follow the run's precision too, except those it keeps in float32
        # (:attr:`PromptMethod.float32_parameters`: DePT's head)
        return cast_learned(self.plugin_entry.cls(base, self.config(overrides, n_classes)), backbone.precision)


def make_config(config_cls: type, overrides: Mapping | None, owner: str, n_classes: int = 0):
    """``config_cls(**overrides)``, unknown options refused with the known ones. Fields that declare a run value
    (:func:`~dpclab.methods.base.from_run`, e.g. ``from_run("n_classes")``: the number of training classes) are
    filled with it when the overrides do not set them."""
    overrides = dict(overrides or {})
    known = {f.name for f in fields(config_cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"Unknown option(s) {sorted(unknown)} for {owner!r}; it takes {sorted(known)}.")
    run_values = {"n_classes": n_classes}
    for f in fields(config_cls):
        source = f.metadata.get(RUN_VALUE)
        if source is not None and not overrides.get(f.name):
            if source not in run_values:
                raise ValueError(f"{config_cls.__name__}.{f.name} asks for run value {source!r}; the run provides "
                                 f"{sorted(run_values)}.")
            overrides[f.name] = run_values[source]
    return config_cls(**overrides)


def plain_spec(name: str, entry: MethodEntry) -> MethodSpec:
    return MethodSpec(name, name, entry, trainable=entry.trainable, train=_frozen(entry.train),
                      data=_frozen(entry.data))


def can_wrap(entry: MethodEntry, pentry: PluginEntry) -> bool:
    """Whether a plug-in can wrap a method at all: a method that trains, or any method when the plug-in trains its own
    parameters jointly (:attr:`PluginEntry.wraps_frozen`; a two-step plug-in always needs a tuned base)."""
    return entry.trainable or (pentry.wraps_frozen and not pentry.two_step)


def plugin_spec(base: str, entry: MethodEntry, plugin: str, pentry: PluginEntry) -> MethodSpec:
    """The spec of ``base+plugin`` from the two rows (the pair already checked: :func:`can_wrap`, the refusals)."""
    return MethodSpec(f"{base}+{plugin}", base, entry, plugin, pentry, two_step=pentry.two_step,
                      trainable=True, train=_frozen({**pentry.train, **pentry.train_by_base.get(base, {})}),
                      base_cfg=_frozen(pentry.base_cfg_by_base.get(base)), refuses=_frozen(pentry.refuses))


__all__ = ["Entry", "MethodEntry", "PluginEntry", "Teacher", "MethodSpec", "make_config", "plain_spec", "plugin_spec", "can_wrap"]
