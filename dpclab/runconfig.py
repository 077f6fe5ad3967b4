"""One run's settings: :class:`RunConfig` (a method on a dataset and seed, from a :class:`~dpclab.source.Source`, with
its options), and what follows from a config and its resolved method spec (:func:`dpclab.methods.resolve`): its
training settings, step 1 of a two-step plug-in, the training data its method's protocol fixes, its teacher's run.

Pure functions of the config and the spec they are given: a run resolves its method once (:func:`dpclab.pipeline.run`,
:func:`dpclab.pipeline.step_configs`) and hands the spec to each, so nothing here resolves a name again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dpclab.protocol import dataset_train
from dpclab.source import Source
from dpclab.trainconfig import CHECKPOINT_OPTIONS, TrainConfig

if TYPE_CHECKING:  # a resolved method (dpclab.methods.table.resolve): read here, never resolved here
    from dpclab.methods.spec import MethodSpec


#: metadata of a RunConfig field by the run identities it is part of (:mod:`dpclab.runkey`)
_RUN = {"key": ("job", "dir", "fingerprint")}
_OPTION = {"key": ("job", "options", "fingerprint")}


@dataclass
class RunConfig:
    """One run: a method on a dataset and seed, from a :class:`~dpclab.source.Source` (model, weights, data root,
    shots, precision, device, caches, runs folder, results table: spelled and validated there only), with its options.
    :meth:`of` takes the source's fields flat: ``RunConfig.of(method="coop", dataset="eurosat", data_root="~/data")``.
    """

    #: a method name: "coop", or a base with a plug-in, "coop+dpc" (dpclab.methods.method_names())
    method: str = field(default="coop", metadata=_RUN)
    #: a dataset name (CoOp's eleven or the embedded world's, dpclab.experiment.dataset_specs())
    dataset: str = field(default="eurosat", metadata={"key": ("data", "job", "dir", "fingerprint")})
    #: seeds the few-shot split, the random initialisations and the batch order
    seed: int = field(default=1, metadata={"key": ("data", "job", "dir")})
    #: what every run of a command shares: model, weights, data, shots, precision, device, where things go
    source: Source = field(default_factory=Source, metadata={"key": "nested"})
    #: overrides of TrainConfig (epochs, lr, batch_size, ...) on top of the method's protocol defaults
    #: (docs/protocol.md#hyperparameters)
    train: dict = field(default_factory=dict, metadata={"key": ("job", "options"), "unkeyed": CHECKPOINT_OPTIONS})
    #: overrides of the method's config dataclass (for "base+plugin" methods: the plug-in's config)
    method_cfg: dict = field(default_factory=dict, metadata=_OPTION)
    #: for "base+plugin" methods: overrides of the base method's config
    base_method_cfg: dict = field(default_factory=dict, metadata=_OPTION)
    #: for two-step plug-ins (DPC): overrides of the base's step-1 training
    base_train: dict = field(default_factory=dict, metadata={**_OPTION, "unkeyed": CHECKPOINT_OPTIONS})
    #: what to do when the run directory already holds a finished run: reuse | overwrite | error
    if_exists: str = "reuse"
    #: classes to train on: base (base-to-new protocol) or all (oracle, cross-dataset source)
    train_classes: str = field(default="base", metadata={"key": ("data", "job", "options", "fingerprint")})
    #: show progress bars (tqdm.auto)
    progress: bool = True

    def __post_init__(self):
        if not isinstance(self.source, Source):
            raise TypeError(f"RunConfig.source must be a dpclab.source.Source, not {type(self.source).__name__}; "
                            f"RunConfig.of(...) takes the source's fields flat.")
        if self.if_exists not in ("reuse", "overwrite", "error"):
            raise ValueError(f"if_exists must be reuse, overwrite or error, not {self.if_exists!r}")
        if self.train_classes not in ("base", "all"):
            raise ValueError(f"train_classes must be 'base' or 'all', not {self.train_classes!r}")

    @classmethod
    def of(cls, source: Source | None = None, **fields_) -> "RunConfig":
        """A RunConfig from its own fields and the :class:`Source`'s fields flat (on top of ``source``, when given)."""
        return (cls(source=source) if source is not None else cls()).replace(**fields_)

    def replace(self, **fields_) -> "RunConfig":
        """A copy with some fields changed, the source's fields included (``cfg.replace(shots=0)``); a new
        ``pretrained`` resolves the backend again unless ``backend`` is given too."""
        own = {f.name for f in dataclasses.fields(self)}
        unknown = set(fields_) - own - SOURCE_FIELDS
        if unknown:
            raise TypeError(f"RunConfig has no field(s) {', '.join(sorted(unknown))}; its fields are "
                            f"{', '.join(sorted(own | SOURCE_FIELDS))}.")
        src = {k: v for k, v in fields_.items() if k in SOURCE_FIELDS}
        if "pretrained" in src:  # the backend follows the weights unless given
            src.setdefault("backend", "auto")
        source = dataclasses.replace(self.source, **src) if src else self.source
        return dataclasses.replace(self, source=source, **{k: v for k, v in fields_.items() if k in own})


#: the fields a RunConfig reads from its source
SOURCE_FIELDS = frozenset(f.name for f in dataclasses.fields(Source))


def train_config(cfg: RunConfig, spec: MethodSpec) -> TrainConfig:
    """The :class:`TrainConfig` of ``cfg``: its method's protocol defaults, the dataset's exceptions to them
    and shot count (:func:`dpclab.protocol.dataset_train`: CoOp on ImageNet 50 epochs, at 1 shot 50), then
    ``cfg.train``, seed and progress."""
    train = {**dataset_train(cfg.method, cfg.dataset, cfg.source.shots), **cfg.train}
    return spec.train_config(train, seed=cfg.seed, progress=cfg.progress)


def step1_config(cfg: RunConfig, spec: MethodSpec) -> RunConfig:
    """Step 1 of a two-step plug-in: ``coop+dpc`` -> ``coop`` with ``base_method_cfg`` and ``base_train``."""
    return replace(cfg, method=spec.base, method_cfg=cfg.base_method_cfg, train=cfg.base_train,
                   base_method_cfg={}, base_train={})


def with_method_data(cfg: RunConfig, spec: MethodSpec) -> RunConfig:
    """``cfg`` with the training data its method's protocol fixes (:attr:`MethodSpec.data`, e.g. every training image
    of all classes); ``cfg`` itself when there is none or it already has it."""
    data = spec.data
    return cfg.replace(**data) if any(_field(cfg, k) != v for k, v in data.items()) else cfg


def _field(cfg: RunConfig, name: str):
    """``cfg``'s field ``name``, the source's fields included."""
    return getattr(cfg.source, name) if name in SOURCE_FIELDS else getattr(cfg, name)


def teacher_config(cfg: RunConfig, spec: MethodSpec) -> RunConfig | None:
    """The run whose tuned method ``cfg``'s base is built on as its teacher (:attr:`MethodSpec.teacher`), or None."""
    if spec.teacher is None:
        return None
    own = cfg.method_cfg if spec.plugin is None else cfg.base_method_cfg
    return spec.teacher(cfg, spec.base_config(own) if spec.plugin else spec.config(own))


__all__ = ["RunConfig", "SOURCE_FIELDS", "train_config", "step1_config", "with_method_data", "teacher_config"]
