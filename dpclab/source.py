"""A run's source settings in one frozen dataclass: which CLIP, which data, which precision, where things go.

The command line (train, eval, transfer, benchmark, dpc-study, grid, estimate), the notebooks' :class:`Setup
<dpclab.lab.notebook.Setup>` and the report's plan all hold one :class:`Source` instead of their own spellings of these
fields, and every :class:`~dpclab.runconfig.RunConfig` holds one (``cfg.source``): the fields are spelled and validated
here only::

    >>> src = Source.from_parameters({"precision": "amp"})     # the notebooks' parameters (report -p key value)
    >>> cfg = RunConfig("coop", "world_tint", seed=1, source=src, train={"epochs": 2})

Each field's metadata says which of a run's identities it is part of (:mod:`dpclab.runkey`).
``data_root`` is normalised (``~`` expanded, absolute, resolved): ``data/world`` and ``/abs/path/data/world`` are
the same source and give the same run keys.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

import torch

from dpclab.backbones import (EMBEDDED_MODEL, EMBEDDED_PRETRAINED, MODEL_CONFIG_DIR, register_model_configs,
                              resolve_device)
from dpclab.data.coop import normalise_root
from dpclab.data.features import default_num_workers
from dpclab.precision import PRECISIONS, amp_dtype, input_dtype

#: the embedded world is written here when missing
EMBEDDED_DATA_ROOT = "data/world"
BACKENDS = ("embedded", "open_clip")


def resolve_backend(backend: str | None, pretrained: str) -> str:
    """``auto`` (or empty) is ``embedded`` for ``pretrained="embedded"``, else ``open_clip``."""
    if backend in (None, "", "auto"):
        return "embedded" if str(pretrained) == EMBEDDED_PRETRAINED else "open_clip"
    if backend not in BACKENDS:
        raise ValueError(f"backend must be 'embedded', 'open_clip' or 'auto', not {backend!r}.")
    return backend


@dataclass(frozen=True)
class Source:
    """What every run of a command, notebook or grid shares (everything but method, dataset, seed and options)."""

    #: embedded (tiny CLIP + generated world) | open_clip (real CLIP); "auto" is resolved from ``pretrained``
    backend: str = "auto"
    #: open_clip model name, e.g. ViT-B-16 (dpclab-tiny: the embedded model)
    model: str = field(default=EMBEDDED_MODEL, metadata={"key": ("data", "job")})
    #: open_clip tag (openai), a checkpoint path, "embedded" or "random"
    pretrained: str = field(default=EMBEDDED_PRETRAINED, metadata={"key": ("data", "job")})
    #: folder holding the dataset folders (CoOp layout); stored normalised (absolute, resolved)
    data_root: str = field(default=EMBEDDED_DATA_ROOT, metadata={"key": ("data", "job")})
    #: training images per class (K-shot); 0 = all training images
    shots: int = field(default=16, metadata={"key": ("data", "job", "dir", "fingerprint")})
    #: fp32 | fp16 | amp
    precision: str = field(default="fp32", metadata={"key": ("data", "job")})
    #: auto (CUDA when present), cpu, cuda, cuda:1...
    device: str = field(default="auto", metadata={"key": ("data",)})
    #: where few-shot splits and frozen features are cached (None = no cache)
    cache_dir: str | None = field(default="data/cache", metadata={"key": ("data",)})
    #: where run directories go
    runs_dir: str = field(default="runs", metadata={"key": ("job", "dir")})
    #: CSV results table every run appends to (None = none)
    results: str | None = "runs/results.csv"

    def __post_init__(self):
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731 - frozen: normalise once, here
        set_("pretrained", str(self.pretrained))
        set_("backend", resolve_backend(self.backend, self.pretrained))
        set_("data_root", normalise_root(self.data_root))
        if isinstance(self.shots, bool) or int(self.shots) != self.shots or self.shots < 0:
            raise ValueError(f"shots must be an integer >= 0 (images per class, 16 in the papers; 0 = all training "
                             f"images), got {self.shots!r}.")
        set_("shots", int(self.shots))
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}.")
        if self.backend == "embedded" and (self.model != EMBEDDED_MODEL or self.pretrained != EMBEDDED_PRETRAINED):
            raise ValueError(f"backend='embedded' runs model={EMBEDDED_MODEL!r}, pretrained='embedded'; got "
                             f"model={self.model!r}, pretrained={self.pretrained!r}. For real CLIP use "
                             f"backend='open_clip' (or 'auto').")

    @property
    def embedded(self) -> bool:
        return self.backend == "embedded"

    @property
    def label(self) -> str:
        """How results are labelled: which backend produced them."""
        if self.embedded:
            return f"embedded backend ({self.model}, generated world)"
        return f"open_clip backend ({self.model} / {self.pretrained})"

    @classmethod
    def from_parameters(cls, parameters: Mapping, runs_dir: str = "runs", cache_dir: str | None = "data/cache") \
            -> "Source":
        """The source of the notebooks' ``parameters`` (``report -p key value``; other keys are ignored): ``data_root``
        None is ``data/world`` on the embedded backend and required on real CLIP; results go to
        ``<runs_dir>/results.csv``."""
        p = {k: v for k, v in parameters.items() if v is not None}
        pretrained = str(p.get("pretrained", EMBEDDED_PRETRAINED))
        backend = resolve_backend(p.get("backend"), pretrained)
        data_root = p.get("data_root") or None
        if data_root is None:
            if backend != "embedded":
                raise ValueError("data_root is required on real CLIP: pass the folder holding the CoOp-layout "
                                 "datasets, e.g. -p data_root ~/data (it should contain eurosat/, dtd/, ...).")
            data_root = EMBEDDED_DATA_ROOT
        return cls(backend=backend, model=str(p.get("model", EMBEDDED_MODEL)), pretrained=pretrained,
                   data_root=str(data_root), shots=_int(p.get("shots", 16), "shots"),
                   precision=str(p.get("precision", "fp32")), device=str(p.get("device", "auto")),
                   cache_dir=cache_dir, runs_dir=str(runs_dir), results=str(Path(runs_dir) / "results.csv"))


def model_image_size(model: str) -> int | None:
    """The input size of open_clip model ``model`` from its config (no weights loaded); None when unknown."""
    import open_clip

    if MODEL_CONFIG_DIR.is_dir():  # dpclab's own configs (the embedded model)
        register_model_configs(MODEL_CONFIG_DIR)
    size = ((open_clip.get_model_config(model) or {}).get("vision_cfg") or {}).get("image_size")
    return size[0] if isinstance(size, (list, tuple)) else size


def startup_lines(source: Source, cpus: int | None = None, workers: int | None = None,
                  remote: bool = False) -> list[str]:
    """What a command says before it starts: the device by name (a fall-back to the CPU said plainly; a CUDA device
    torch cannot see is an error naming the fix), the precision with the dtypes of CLIP and of the prompts, and the
    image-loader workers of one process (``workers``, else from the model's input size and ``cpus`` CPUs).

    ``remote``: the runs happen elsewhere (SLURM jobs): ``source.device`` is the jobs' device, not this host's, so
    it is named as asked and not checked here (a login node has no GPU; CUDA is not touched); each job checks it on
    its node and writes its own start-up lines."""

    if remote:
        dev = torch.device("cpu" if source.device == "cpu" else "cuda" if source.device == "auto" else source.device)
        name = f"{source.device} on the jobs' nodes (not checked on this host; each job checks it and writes its own " \
               f"start-up lines to its log)"
    else:
        dev = resolve_device(source.device)
    if remote:
        pass  # named above
    elif dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={source.device!r} but torch sees no CUDA GPU (torch {torch.__version__}, CUDA build "
                         f"{torch.version.cuda or 'none'}); check nvidia-smi and the torch wheel (README: the full "
                         f"report on real CLIP), or pass --device cpu / -p device cpu (with --slurm, -p device cuda "
                         f"is the jobs' device and is accepted here).")
    elif dev.type == "cuda":
        name = f"{torch.cuda.get_device_name(dev)} ({dev}, CUDA {torch.version.cuda})"
    else:
        name = f"CPU ({torch.get_num_threads()} torch thread(s))"
        if source.device == "auto":
            name += " -- no CUDA GPU visible to torch, running on the CPU" + (
                "" if torch.version.cuda else " (this torch build has no CUDA)")
    weights = str(input_dtype(source.precision)).replace("torch.", "")
    dtypes = f"CLIP {weights}, prompts {weights}"
    if source.precision == "amp":
        dtypes += f", autocast {str(amp_dtype(dev)).replace('torch.', '')}"
    if workers is None:
        size = model_image_size(source.model)
        workers = default_num_workers(size, cpus) if size else None
    loaders = "per model input size (unknown model config)" if workers is None else (
        f"{workers}" + (" (images decoded in the main process)" if workers == 0 else " per process"))
    return [f"device: {name}", f"precision: {source.precision} ({dtypes})", f"image loader workers: {loaders}"]


def _int(value, name: str) -> int:
    """``value`` as an int (papermill ``-p`` may pass a string), or a ValueError naming ``name``."""
    try:
        out = int(value)
        if not isinstance(value, str) and out != value:
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be an integer, got {value!r}.") from None
    return out


__all__ = ["Source", "startup_lines", "model_image_size", "resolve_backend", "normalise_root", "PRECISIONS",
           "EMBEDDED_MODEL", "EMBEDDED_PRETRAINED",
           "EMBEDDED_DATA_ROOT"]
