"""backbone + data -> (cached features) -> method -> train -> evaluate -> results. One function for the CLI,
the notebooks and the benchmarks: :func:`run`.

>>> from dpclab.pipeline import RunConfig, run
>>> result = run(RunConfig(method="coop", dataset="eurosat", data_root="~/data", model="ViT-B-16",
...                        pretrained="openai", shots=16, seed=1))
>>> result.metrics   # {'base': ..., 'new': ..., 'hm': ...}
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path

import torch
from torch import nn
from torchvision import transforms as T

from .backbones import Backbone, load_clip
from .data.coop import DatasetSplits, Datum, few_shot, load_dataset, subsample_classes
from .data.features import build_transforms, cached_features, default_num_workers, items_digest
from .evaluate import accuracy, append_result, harmonic_mean, predict_logits
from .io import atomic_torch_save, atomic_write_json, file_lock
from .methods import METHODS, PLUGINS, get_method, parse_method
from .methods.base import Task, learned_state, load_learned_state
from .methods.promptkd import check_teacher_inputs
from .precision import PRECISIONS, autocast, cast_learned, input_dtype
from .selection import BestBaseEpoch, wants_best_base
from .train import Examples, TrainConfig, config_fingerprint, fit

log = logging.getLogger(__name__)


@dataclass
class RunConfig:
    method: str = "coop"
    dataset: str = "eurosat"
    data_root: str = "data/world"
    model: str = "dpclab-tiny"
    pretrained: str = "embedded"
    shots: int = 16
    seed: int = 1
    device: str = "auto"
    #: fp32 | fp16 (the reference's half precision) | amp (autocast); see dpclab.precision
    precision: str = "fp32"
    #: where few-shot splits and frozen features are cached (None = no cache)
    cache_dir: str | None = "data/cache"
    runs_dir: str = "runs"
    #: CSV results table to append to (None = don't)
    results: str | None = "runs/results.csv"
    #: overrides of TrainConfig (epochs, lr, batch_size, ...) on top of the method's protocol defaults
    #: (docs/protocol.md#hyperparameters)
    train: dict = field(default_factory=dict)
    #: overrides of the method's config dataclass (for "base+plugin" methods: the plug-in's config)
    method_cfg: dict = field(default_factory=dict)
    #: for "base+plugin" methods: overrides of the base method's config and, for two-step plug-ins (DPC),
    #: of the base's step-1 training
    base_method_cfg: dict = field(default_factory=dict)
    base_train: dict = field(default_factory=dict)
    #: what to do when the run directory already holds a finished run: reuse | overwrite | error
    if_exists: str = "reuse"
    #: classes to train on: base (base-to-new protocol) or all (oracle, cross-dataset source)
    train_classes: str = "base"
    progress: bool = True

    def __post_init__(self):
        if self.if_exists not in ("reuse", "overwrite", "error"):
            raise ValueError(f"if_exists must be reuse, overwrite or error, not {self.if_exists!r}")
        if self.train_classes not in ("base", "all"):
            raise ValueError(f"train_classes must be 'base' or 'all', not {self.train_classes!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, not {self.precision!r}")
        if self.shots < 0:
            raise ValueError(f"shots must be >= 0 (K images per class; 0 = all training images), not {self.shots}")


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
    def prepare(cls, cfg: RunConfig, backbone: Backbone | None = None, specs: dict | None = None) -> "Experiment":
        backbone = backbone or cached_backbone(cfg.model, str(cfg.pretrained), cfg.device, cfg.precision)
        data = load_dataset(cfg.data_root, cfg.dataset, specs=specs or dataset_specs())
        data = few_shot(data, cfg.shots, cfg.seed, cfg.cache_dir)
        return cls(backbone, data, cfg.seed, cfg.cache_dir, cfg.train_classes, cfg.progress)

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
            if train:
                return Examples(labels, features=lambda v: self.features(items, "train", v))
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
    """The 11 CoOp datasets plus the embedded world's datasets (when the world module is present)."""
    from .data.coop import DATASETS

    specs = dict(DATASETS)
    try:
        from .data.world import WORLD_SPECS
    except ImportError:
        return specs
    specs.update(WORLD_SPECS)
    return specs


def _make_config(config_cls: type, overrides: dict | None, owner: str, n_classes: int = 0):
    overrides = dict(overrides or {})
    known = {f.name for f in fields(config_cls)}
    unknown = set(overrides) - known
    if unknown:
        raise ValueError(f"Unknown option(s) {sorted(unknown)} for {owner!r}; it takes {sorted(known)}.")
    if "n_classes" in known and not overrides.get("n_classes"):
        overrides["n_classes"] = n_classes
    return config_cls(**overrides)


def build_method(name: str, backbone: Backbone, overrides: dict | None = None, n_classes: int = 0,
                 base_overrides: dict | None = None, base_method: nn.Module | None = None,
                 seed: int | None = None, teacher: nn.Module | None = None) -> nn.Module:
    """Build ``name`` ("coop", or "coop+dept" = a plug-in wrapping a base method). For a plug-in, ``overrides``
    configure the plug-in and ``base_overrides`` the base; ``base_method`` supplies an already tuned base (DPC).
    ``teacher``: the tuned teacher of a method that distils one (PromptKD; ``MethodSpec.teacher``).
    ``seed`` makes random initialisations (random context, meta-nets, deep prompts) depend on it alone; the global
    torch RNG state is left as it was."""
    if seed is not None:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return build_method(name, backbone, overrides, n_classes, base_overrides, base_method, teacher=teacher)
    base_name, plugin = parse_method(name)
    spec = get_method(base_name)
    if plugin is None:  # fp16: the prompts inherit the CLIP dtype (before any plug-in wraps them)
        extra = {"teacher": teacher} if spec.teacher is not None else {}
        return cast_learned(spec.cls(backbone, _make_config(spec.config, overrides, base_name, n_classes), **extra),
                            backbone.precision)
    pspec = PLUGINS[plugin]
    base_overrides = {**pspec.base_cfg_by_base.get(base_name, {}), **(base_overrides or {})}
    base = base_method if base_method is not None else build_method(base_name, backbone, base_overrides, n_classes,
                                                                     teacher=teacher)
    return pspec.cls(base, _make_config(pspec.config, overrides, plugin, n_classes))


def with_method_data(cfg: RunConfig) -> RunConfig:
    """``cfg`` with the training data its method's protocol fixes (``MethodSpec.data``; PromptKD: every training
    image of all classes). Under a plug-in the plug-in's data (the run's own) applies."""
    base_name, plugin = parse_method(cfg.method)
    data = get_method(base_name).data if plugin is None else {}
    return replace(cfg, **data) if any(getattr(cfg, k) != v for k, v in data.items()) else cfg


def teacher_config(cfg: RunConfig) -> RunConfig | None:
    """The teacher run the base method of ``cfg`` distils from (``MethodSpec.teacher``), or None."""
    base_name, plugin = parse_method(cfg.method)
    spec = get_method(base_name)
    if spec.teacher is None:
        return None
    own = cfg.method_cfg if plugin is None else {**PLUGINS[plugin].base_cfg_by_base.get(base_name, {}),
                                                 **cfg.base_method_cfg}
    return spec.teacher(cfg, _make_config(spec.config, own, base_name))


def step_configs(cfg: RunConfig) -> list[RunConfig]:
    """Every run :func:`run` makes for ``cfg``, in order: a teacher's run, a two-step plug-in's step 1 (with its
    own prerequisites), then ``cfg`` itself (with its method's protocol data)."""
    cfg = with_method_data(cfg)
    _, plugin = parse_method(cfg.method)
    if plugin is not None and PLUGINS[plugin].two_step:
        return [*step_configs(step1_config(cfg)), cfg]
    teacher = teacher_config(cfg)
    return [*(step_configs(teacher) if teacher is not None else []), cfg]


def default_train(method: str) -> dict:
    """The training defaults of ``method``: the base method's, or for "base+plugin" the plug-in phase's (with its
    per-base exceptions). :func:`train_config` puts a run's ``train`` overrides on top of them."""
    base_name, plugin = parse_method(method)
    if plugin is None:
        return dict(get_method(base_name).train)
    pspec = PLUGINS[plugin]
    return {**pspec.train, **pspec.train_by_base.get(base_name, {})}


def train_config(cfg: RunConfig) -> TrainConfig:
    merged = {**default_train(cfg.method), **cfg.train, "seed": cfg.seed, "progress": cfg.progress}
    known = {f.name for f in fields(TrainConfig)}
    unknown = set(merged) - known
    if unknown:
        raise ValueError(f"Unknown training option(s) {sorted(unknown)}; TrainConfig takes {sorted(known)}.")
    return TrainConfig(**merged)


def step1_config(cfg: RunConfig) -> RunConfig:
    """Step 1 of a two-step plug-in: ``coop+dpc`` -> ``coop`` with ``base_method_cfg`` and ``base_train``."""
    base_name, _ = parse_method(cfg.method)
    return replace(cfg, method=base_name, method_cfg=cfg.base_method_cfg, train=cfg.base_train,
                   base_method_cfg={}, base_train={})


def effective_epochs(cfg: RunConfig) -> dict:
    """The epochs ``cfg`` really trains: ``{"epochs": n}``, plus ``"step1_epochs"`` for a two-step plug-in."""
    out = {"epochs": train_config(cfg).epochs}
    _, plugin = parse_method(cfg.method)
    if plugin is not None and PLUGINS[plugin].two_step:
        out["step1_epochs"] = train_config(step1_config(cfg)).epochs
    return out


def run_dir_for(cfg: RunConfig, backbone: Backbone, inputs_key: str) -> Path:
    """runs/<backbone>/<dataset>/<method>/shots<K>-seed<S>-<hash of the images read and non-default options>

    ``inputs_key`` is :meth:`Experiment.inputs_key`: a run made from other image files is never reused."""
    extra = {"inputs": inputs_key}
    if cfg.train or cfg.method_cfg or cfg.train_classes != "base" or cfg.base_method_cfg or cfg.base_train:
        extra.update(train=cfg.train, method_cfg=cfg.method_cfg, train_classes=cfg.train_classes,
                     base_method_cfg=cfg.base_method_cfg, base_train=cfg.base_train)
    tag = hashlib.sha1(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(cfg.runs_dir) / backbone.key / cfg.dataset / cfg.method / f"shots{cfg.shots}-seed{cfg.seed}-{tag}"


@dataclass
class RunResult:
    metrics: dict
    history: list
    run_dir: Path | None
    method: nn.Module
    experiment: Experiment
    reused: bool = False


def _fingerprint(cfg: RunConfig, backbone: Backbone, exp: Experiment, inputs_key: str | None = None) -> dict:
    return {"method": cfg.method, "method_cfg": cfg.method_cfg, "base_method_cfg": cfg.base_method_cfg,
            "base_train": cfg.base_train, "dataset": cfg.dataset,
            "inputs": inputs_key or exp.inputs_key(), "backbone": backbone.key, "shots": cfg.shots,
            "train_classes": cfg.train_classes, "crop_scale": list(exp.data.crop_scale)}


@dataclass
class StepPlan:
    """What one step of :func:`run` will do, known before it starts."""

    step: int
    method: str
    epochs: int
    batch_size: int
    lr: float
    run_dir: Path | None
    #: evaluate (nothing to train) | train | resume (from ``resume_epoch``) | reuse | overwrite | refuse
    action: str
    resume_epoch: int = 0


def plan_run(cfg: RunConfig, experiment: Experiment) -> list[StepPlan]:
    """The steps :func:`run` takes for ``cfg`` (two for two-step plug-ins such as DPC), each with its training
    settings and whether a finished run is reused, an interrupted one resumed, or one trained. Steps on other
    data than ``experiment`` (a teacher's few-shot run, PromptKD's all-image step 1) get their own experiment."""
    plans = []
    for step, c in enumerate(step_configs(cfg), 1):
        tcfg = train_config(c)
        if not get_method(c.method).trainable:
            plans.append(StepPlan(step, c.method, 0, tcfg.batch_size, tcfg.lr, None, "evaluate"))
            continue
        exp = experiment if _same_data(c, cfg) else Experiment.prepare(c)
        inputs, backbone = exp.inputs_key(), exp.backbone
        run_dir = run_dir_for(c, backbone, inputs)
        full_fp = config_fingerprint(tcfg, _fingerprint(c, backbone, exp, inputs))
        action, epoch = "train", 0
        if (run_dir / "result.json").is_file():
            same = json.loads((run_dir / "result.json").read_text()).get("config_fingerprint") == full_fp
            action = {"overwrite": "overwrite", "error": "refuse"}.get(c.if_exists, "reuse" if same else "refuse")
        elif c.if_exists != "overwrite" and (run_dir / "checkpoint.pt").is_file():
            ckpt = torch.load(run_dir / "checkpoint.pt", map_location="cpu", weights_only=True)
            action, epoch = ("resume", ckpt["epoch"] + 1) if ckpt.get("fingerprint") == full_fp else ("refuse", 0)
        plans.append(StepPlan(step, c.method, tcfg.epochs, tcfg.batch_size, tcfg.lr, run_dir, action, epoch))
    return plans


def _same_data(a: RunConfig, b: RunConfig) -> bool:
    """Whether two runs read the same images on the same backbone (one Experiment serves both)."""
    keys = ("dataset", "data_root", "model", "pretrained", "shots", "seed", "device", "precision", "cache_dir",
            "train_classes")
    return all(getattr(a, k) == getattr(b, k) for k in keys)


def run(cfg: RunConfig, backbone: Backbone | None = None, experiment: Experiment | None = None,
        method: nn.Module | None = None, on_epoch=None) -> RunResult:
    """Train (unless zero-shot) and evaluate one method on one dataset/seed; append the result to the table."""
    fixed = with_method_data(cfg)
    if fixed is not cfg:  # the method's protocol fixes its own training data (PromptKD)
        cfg, experiment = fixed, None
    exp = experiment or Experiment.prepare(cfg, backbone)
    backbone = exp.backbone
    if backbone.precision != cfg.precision:
        raise ValueError(f"RunConfig.precision={cfg.precision!r} but the backbone was loaded with "
                         f"precision={backbone.precision!r}; load it with load_clip(..., precision={cfg.precision!r}).")
    spec = get_method(cfg.method)
    _, plugin = parse_method(cfg.method)
    n_classes = len(exp.train_task.classnames)
    if method is None and plugin is not None and PLUGINS[plugin].two_step:
        _make_config(PLUGINS[plugin].config, cfg.method_cfg, plugin, n_classes)  # bad options fail before step 1
        step1 = run(step1_config(cfg), experiment=exp)
        method = build_method(cfg.method, backbone, cfg.method_cfg, n_classes, base_method=step1.method,
                              seed=cfg.seed)
    teacher = None
    if method is None and teacher_config(cfg) is not None:  # PromptKD: its teacher is a run of its own, made first
        teacher_run = run(teacher_config(cfg))
        check_teacher_inputs(backbone, teacher_run.experiment.backbone)
        teacher = teacher_run.method
    method = method or build_method(cfg.method, backbone, cfg.method_cfg, n_classes, cfg.base_method_cfg,
                                    seed=cfg.seed, teacher=teacher)
    tcfg = train_config(cfg)
    if "num_workers" not in cfg.train:  # image decoding in parallel on the real backend (not in the fingerprint)
        tcfg = replace(tcfg, num_workers=exp.num_workers)
    inputs = exp.inputs_key()
    run_dir = run_dir_for(cfg, backbone, inputs) if spec.trainable else None
    fp = _fingerprint(cfg, backbone, exp, inputs)
    full_fp = config_fingerprint(tcfg, fp)
    if run_dir is None:
        return _train_and_record(cfg, exp, method, tcfg, None, full_fp, fp, on_epoch)
    # one process at a time per run directory: parallel notebooks wait for, then reuse, each other's runs
    with file_lock(run_dir.parent / f".{run_dir.name}.lock"):
        return _train_and_record(cfg, exp, method, tcfg, run_dir, full_fp, fp, on_epoch)


def _train_and_record(cfg: RunConfig, exp: Experiment, method: nn.Module, tcfg: TrainConfig, run_dir: Path | None,
                      full_fp: str, fp: dict, on_epoch) -> RunResult:
    """Reuse / refuse / replace a finished run in ``run_dir``, else train, evaluate and record the result."""
    spec = get_method(cfg.method)
    history: list = []
    if run_dir is not None:
        done = run_dir / "result.json"
        if done.is_file():
            stored = json.loads(done.read_text())
            same = stored.get("config_fingerprint") == full_fp
            if cfg.if_exists == "error" or (cfg.if_exists == "reuse" and not same):
                why = "with a different configuration" if not same else ""
                raise FileExistsError(
                    f"{run_dir} already holds a finished run {why}. Pass if_exists='overwrite' (CLI: --overwrite) "
                    f"to replace it, or choose another runs_dir."
                )
            if cfg.if_exists == "reuse":
                saved = torch.load(run_dir / "model.pt", map_location="cpu", weights_only=True)  # any device's
                load_learned_state(method, saved["state"], str(run_dir / "model.pt"))
                method.eval()
                log.info("reusing finished run %s", run_dir)
                return RunResult(stored["metrics"], stored["history"], run_dir, method, exp, reused=True)
            shutil.rmtree(run_dir)
        elif cfg.if_exists == "overwrite" and run_dir.exists():
            shutil.rmtree(run_dir)
    t0 = time.time()
    if spec.trainable and tcfg.epochs > 0:
        best = BestBaseEpoch(lambda m: exp.accuracy(m, "base"), run_dir, on_epoch) if wants_best_base(method) else None
        history = fit(method, exp.train_examples(method.input_kind), exp.train_task, tcfg, run_dir, fp,
                      best or on_epoch, precision=exp.backbone.precision)
        if best is not None:  # the released PromptKD: the epoch with the best base *test* accuracy
            best.restore(method)
    metrics = exp.evaluate(method)
    if run_dir is not None:
        atomic_torch_save({"state": learned_state(method), "method": cfg.method, "fingerprint": fp},
                          run_dir / "model.pt")
        atomic_write_json(run_dir / "result.json",
                          {"metrics": metrics, "history": history, "config_fingerprint": full_fp, "train": asdict(tcfg),
                           "config": asdict(cfg), "seconds": time.time() - t0}, indent=1, default=str)
    if cfg.results:
        append_result(cfg.results, {
            "dataset": cfg.dataset, "method": cfg.method, "model": cfg.model, "pretrained": cfg.pretrained,
            "shots": cfg.shots, "train_classes": cfg.train_classes, "seed": cfg.seed, **metrics,
            "epochs": tcfg.epochs if spec.trainable else 0, "precision": cfg.precision,
            "run_dir": str(run_dir or ""), "backend": "embedded" if cfg.pretrained == "embedded" else "open_clip",
            "time": time.strftime("%Y-%m-%d %H:%M:%S")})
    return RunResult(metrics, history, run_dir, method, exp)


__all__ = ["RunConfig", "RunResult", "Experiment", "run", "build_method", "train_config", "default_train",
           "step1_config", "effective_epochs", "dataset_specs", "cached_backbone", "METHODS", "StepPlan", "plan_run"]
