"""Load a frozen CLIP backbone: any open_clip model, or the embedded tiny CLIP, through one function.

>>> bb = load_clip("dpclab-tiny", "embedded")          # offline default, ships with the repo
>>> bb = load_clip("ViT-B-16", "openai", device="cuda") # real CLIP (downloads once, needs internet)
>>> bb = load_clip("ViT-B-16", "/path/to/weights.pt")  # a local checkpoint in open_clip's format
>>> bb = load_clip("ViT-B-16", "~/.cache/clip/ViT-B-16.pt")  # OpenAI's own TorchScript archive (clip.load's cache)
>>> bb = load_clip("ViT-B-16", None)                   # random weights (tests)
>>> bb = load_clip("my_configs/my-clip.json", "my-clip.pt")  # your own architecture: a config file + weights

Extra model configs (open_clip's JSON format) can also be registered for every process by listing their folders
or files in the ``DPCLAB_MODEL_CONFIGS`` environment variable (separated by ``os.pathsep``, ":" on Linux); the
model is then loaded by its file stem, e.g. ``load_clip("my-clip", "my-clip.pt")`` or
``python -m dpclab train --model my-clip --pretrained my-clip.pt``.

Everything downstream (prompt learners, feature caches, notebooks) receives a :class:`Backbone` and never
cares which of these it is.

Activation (QuickGELU). OpenAI's CLIP weights were trained with QuickGELU, but open_clip's plain configs
(``ViT-B-16.json``) build GELU and only warn. :func:`load_clip` builds with QuickGELU whenever the weights need it:
a pretrained tag whose open_clip pretrained config says ``quick_gelu=True`` (looked up in open_clip's registry),
OpenAI's TorchScript archives, and files known to be OpenAI's (their sha256 is the checksum in open_clip's
``openai`` URLs, or they lie in the Hugging Face cache folder of such a tag). Any other file is built as the model
config says: pass the ``-quickgelu`` model name (``ViT-B-16-quickgelu``) for OpenAI-derived weights saved elsewhere.

Weights files and the ``weights_only`` policy. State dicts are read with ``torch.load(weights_only=True)``.
OpenAI's ``.pt`` files are TorchScript archives, which ``weights_only`` cannot read; they are read with
``torch.jit.load`` only when given as an explicit file path (never found or downloaded implicitly), only their
tensors are used (the archive's TorchScript graph is never run), and the model is rebuilt by open_clip.
"""

from __future__ import annotations

import difflib
import json
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from dpclab.io import archive_damage, sha256_file
from dpclab.precision import check_precision
from dpclab.resources import REPO_DIR, embedded_checkpoint_file, is_packaged

PACKAGE_DIR = Path(__file__).resolve().parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
#: environment variable: extra open_clip model-config folders or .json files, separated by os.pathsep
MODEL_CONFIGS_ENV = "DPCLAB_MODEL_CONFIGS"

EMBEDDED_MODEL = "dpclab-tiny"
EMBEDDED_PRETRAINED = "embedded"
EMBEDDED_REPRODUCE = "python -m dpclab pretrain  (see data/embedded/MANIFEST.json for the exact command)"


def embedded_checkpoint() -> Path:
    """Path of the tiny-CLIP checkpoint: the wheel's or the clone's (:mod:`dpclab.resources`); the DPCLAB_EMBEDDED
    environment variable overrides it."""
    return Path(os.environ.get("DPCLAB_EMBEDDED", embedded_checkpoint_file()))


@dataclass
class Backbone:
    """A frozen CLIP model with what is needed to feed it."""

    model: nn.Module
    tokenizer: Callable
    model_name: str
    pretrained: str  # tag, file path, or "random"
    device: torch.device
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    weights_id: str  # identifies the weights for caches: tag, or sha256 prefix of a checkpoint file
    #: fp32 | fp16 | amp (see dpclab.precision)
    precision: str = "fp32"
    #: True when QuickGELU was forced onto a model config that says GELU (OpenAI weights)
    quick_gelu_forced: bool = False

    @property
    def key(self) -> str:
        """A short, filesystem-safe identifier of model + weights (used to key feature caches and run dirs);
        names the forced QuickGELU activation and a precision other than fp32, since both change the features."""
        key = f"{self.model_name}-{self.weights_id}"
        key += "-quickgelu" if self.quick_gelu_forced else ""
        key += f"-{self.precision}" if self.precision != "fp32" else ""
        return key.replace("/", "_")

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to :class:`torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def device_label(device: str | torch.device) -> str:
    """``cuda:0 (NVIDIA H100 80GB HBM3)`` or ``cpu``: a device a run really ran on, for its lines and results row."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


_registered: set[str] = set()


def register_model_configs(path: str | os.PathLike) -> None:
    """Make the open_clip model config(s) at ``path`` (a folder of .json files, or one .json file) loadable by
    name (the file stem). Registering the same path twice is a no-op."""
    path = Path(path).expanduser()
    if not path.exists():
        raise FileNotFoundError(
            f"Model config path {path} does not exist (from {MODEL_CONFIGS_ENV} or a config-file model name). "
            f"Point it at a folder of open_clip model-config .json files or at one such file."
        )
    key = str(path.resolve())
    if key not in _registered:
        open_clip.add_model_config(path)
        _registered.add(key)


def _register_configs() -> None:
    """dpclab's own configs, then those listed in ``DPCLAB_MODEL_CONFIGS``."""
    if MODEL_CONFIG_DIR.is_dir():
        register_model_configs(MODEL_CONFIG_DIR)
    for entry in os.environ.get(MODEL_CONFIGS_ENV, "").split(os.pathsep):
        if entry.strip():
            register_model_configs(entry.strip())


def _config_file_model(model_name: str) -> str:
    """A model name that is a path to a ``.json`` config registers that file and becomes its stem."""
    if model_name.endswith(".json"):
        register_model_configs(model_name)
        return Path(model_name).stem
    return model_name


def _file_sha256(path: Path, prefix: int | None = 12) -> str:
    return sha256_file(path)[:prefix]


def is_torchscript_archive(path: str | os.PathLike) -> bool:
    """True for a TorchScript archive (what OpenAI publishes and ``clip.load`` caches): a zip with ``constants.pkl``
    and TorchScript ``code/``. Read from the zip directory only; nothing is loaded."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        names = z.namelist()
    return any(n.endswith("/constants.pkl") for n in names) and any("/code/" in n for n in names)


def tag_needs_quick_gelu(model_name: str, tag: str) -> bool:
    """open_clip's pretrained config of ``model_name``/``tag`` says the weights were trained with QuickGELU."""
    return bool(open_clip.get_pretrained_cfg(model_name, tag).get("quick_gelu", False))


def openai_file_reason(model_name: str, path: Path, sha256: str) -> str | None:
    """Why the weights file ``path`` is known to be OpenAI's (trained with QuickGELU), or None.

    Known from open_clip's own registry, no list kept here: the file's sha256 is the checksum in the URL of a
    QuickGELU tag (OpenAI's ``.pt`` files), or the file lies in the Hugging Face cache folder of such a tag of
    ``model_name`` (e.g. ``models--timm--vit_base_patch16_clip_224.openai``)."""
    resolved = str(path.expanduser().resolve())
    for name, tag in open_clip.list_pretrained():
        cfg = open_clip.get_pretrained_cfg(name, tag)
        if not cfg.get("quick_gelu"):
            continue
        if sha256 and sha256 in cfg.get("url", ""):
            return f"sha256 {sha256[:12]} is open_clip's checksum of {name}/{tag}"
        parts = cfg.get("hf_hub", "").strip("/").split("/")
        if name == model_name and len(parts) >= 2:
            repo = f"models--{parts[0]}--{parts[1]}"
            if f"{os.sep}{repo}{os.sep}" in resolved:
                return f"it lies in the Hugging Face cache of {name}/{tag} ({repo})"
    return None


#: environment variable: JSON ``{"model/tag": "file"}``, the local weights files a driver resolved for its jobs
#: (``grid`` resolves every tag once on the submitting host and hands the jobs the file: compute nodes need no internet)
WEIGHTS_FILES_ENV = "DPCLAB_WEIGHTS_FILES"


def cached_weights(model_name: str, tag: str) -> Path | None:
    """The local copy of open_clip's pretrained ``tag`` of ``model_name`` where open_clip downloads it, or None;
    never downloads. open_clip 3 (``pretrained.download_pretrained``) fetches from the Hugging Face hub when the tag
    has an ``hf_hub`` entry (its cache: ``HF_HUB_CACHE`` / ``HF_HOME``, ``~/.cache/huggingface/hub``; a
    ``.safetensors`` twin first), else from ``url`` into ``~/.cache/clip``; both places are looked at."""
    cfg = open_clip.get_pretrained_cfg(model_name, tag) or {}
    hub = cfg.get("hf_hub", "")
    if hub:
        from huggingface_hub import try_to_load_from_cache
        from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

        repo, filename = os.path.split(hub)  # "org/model/" -> the default file name, as open_clip splits it
        filename = filename or HF_WEIGHTS_NAME
        names = [n for n in (HF_SAFE_WEIGHTS_NAME if filename == HF_WEIGHTS_NAME else None,
                             filename[:-4] + ".safetensors" if filename != HF_WEIGHTS_NAME
                             and filename.endswith((".bin", ".pth")) else None, filename) if n]
        cache = os.environ.get("HF_HUB_CACHE") or os.path.join(
            os.environ.get("HF_HOME") or os.path.join(os.environ.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"),
            "hub")  # huggingface_hub's own rule, read now (its constant is read once, at import)
        for name in names:
            found = try_to_load_from_cache(repo, name, cache_dir=os.path.expanduser(cache))
            if isinstance(found, str) and os.path.isfile(found):
                return Path(found)
    url = cfg.get("url", "")
    if url:
        path = Path("~/.cache/clip").expanduser() / os.path.basename(url)
        if path.is_file():
            return path
    return None


def weights_file(model_name: str, tag: str) -> Path | None:
    """The local file of pretrained ``tag``: the one a driver handed this job (:data:`WEIGHTS_FILES_ENV`), else
    open_clip's cached copy (:func:`cached_weights`); None when only a download would give it."""

    handed = json.loads(os.environ.get(WEIGHTS_FILES_ENV) or "{}").get(f"{model_name}/{tag}")
    if handed:
        if not Path(handed).is_file():
            raise FileNotFoundError(f"The weights file {handed} handed to this job for {model_name}/{tag} is not "
                                    f"readable here; put it on a file system the compute nodes share.")
        return Path(handed)
    return cached_weights(model_name, tag)


def _check_model_name(model_name: str) -> None:
    known = open_clip.list_models()
    if model_name not in known:
        close = difflib.get_close_matches(model_name, known, n=5)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"Unknown open_clip model {model_name!r}.{hint} "
            f"Use open_clip.list_models() for the full list, {EMBEDDED_MODEL!r} for the embedded offline model, or "
            f"register your own config (a .json path as the model name, or the {MODEL_CONFIGS_ENV} variable)."
        )


@dataclass(frozen=True)
class WeightsSource:
    """What :func:`load_clip` hands open_clip: ``source`` (tag, file path or None), the weights id for caches, and
    how to build: ``quick_gelu`` (the weights need QuickGELU) and ``torchscript`` (an OpenAI TorchScript archive)."""

    source: str | None
    weights_id: str
    quick_gelu: bool = False
    torchscript: bool = False
    why: str = ""


def _resolve_pretrained(model_name: str, pretrained: str | os.PathLike | None) -> WeightsSource:
    """What to load and how. Raises with a fix when the weights cannot be had."""
    if pretrained in (None, "", "none", "random"):
        return WeightsSource(None, "random")
    if str(pretrained) == EMBEDDED_PRETRAINED:
        if model_name != EMBEDDED_MODEL:
            raise ValueError(f"pretrained='embedded' only exists for model {EMBEDDED_MODEL!r}, not {model_name!r}.")
        path = embedded_checkpoint()
        restore = ("reinstall dpclab (its wheel carries it)" if is_packaged() else
                   f"restore it with `git checkout -- "
                   f"{path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}`")
        if not path.is_file():
            raise FileNotFoundError(f"The embedded checkpoint {path} is missing. It ships with dpclab; {restore} "
                                    f"or rebuild it with `{EMBEDDED_REPRODUCE}`.")
        _check_intact(path, f"{restore} or rebuild it with `{EMBEDDED_REPRODUCE}`")
        return WeightsSource(str(path), _file_sha256(path))
    path = Path(pretrained).expanduser()
    if path.suffix in {".pt", ".pth", ".bin", ".safetensors"} or os.sep in str(pretrained):
        if not path.is_file():
            raise FileNotFoundError(
                f"Checkpoint file {path} does not exist. Pass the path of an open_clip/OpenAI-format state dict, "
                f"a pretrained tag such as 'openai', or use model={EMBEDDED_MODEL!r}, pretrained='embedded' offline."
            )
        _check_intact(path)
        sha = _file_sha256(path, None)
        if is_torchscript_archive(path):
            return WeightsSource(str(path), sha[:12], True, True, "an OpenAI TorchScript archive")
        why = openai_file_reason(model_name, path, sha)
        return WeightsSource(str(path), sha[:12], why is not None, False, why or "")
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ValueError(
            f"Unknown pretrained tag {pretrained!r} for {model_name!r}. Known tags: {tags or 'none'}; "
            f"or pass a local checkpoint file path."
        )
    quick = tag_needs_quick_gelu(model_name, str(pretrained))
    why = "open_clip's pretrained config says quick_gelu=True" if quick else ""
    local = weights_file(model_name, str(pretrained))
    if local is not None:  # the tag's own file, read here: no download; the weights id stays the tag's
        return WeightsSource(str(local), str(pretrained), quick, is_torchscript_archive(local), why)
    return WeightsSource(str(pretrained), str(pretrained), quick, False, why)


def _check_intact(path: Path, fix: str = "copy or download it again (its sha256 tells a good copy from a bad "
                                          "one)") -> None:
    """A one-line ValueError when the weights file ``path`` is a damaged zip archive (cut short, or bytes that no
    longer match their checksum, which torch.load does not check): damaged, not another architecture."""
    why = archive_damage(path)
    if why:
        raise ValueError(f"Checkpoint {path} is damaged ({why}); {fix}.")


def _model_config_quick_gelu(model_name: str) -> bool:
    return bool((open_clip.get_model_config(model_name) or {}).get("quick_gelu", False))


def _load_torchscript(model_name: str, path: str, precision: str, device: torch.device) -> nn.Module:
    """OpenAI's TorchScript archive -> ``model_name`` built by open_clip with QuickGELU and the archive's weights.

    ``open_clip.load_openai_model`` reads the archive (``torch.jit.load``; only its state dict is used) and builds a
    QuickGELU CLIP from it; its weights then go into ``model_name``'s own config (forced QuickGELU), so a file for
    another architecture fails with a clear error instead of silently becoming another model."""
    read = open_clip.load_openai_model(path, precision="fp32", device="cpu")
    model = open_clip.create_model(model_name, pretrained=None, precision=precision, device=device,
                                   force_quick_gelu=True)
    try:
        model.load_state_dict(read.state_dict(), strict=True)
    except RuntimeError as err:
        _check_intact(Path(path))
        raise ValueError(f"The OpenAI archive {path} does not fit model {model_name!r} (wrong architecture?). "
                         f"Pass the model name it was made for (ViT-B-16.pt -> ViT-B-16). "
                         f"Details: {str(err)[:300]}") from err
    return model


def _create(model_name: str, source: str | None, precision: str, dev: torch.device, quick_gelu: bool) -> nn.Module:
    """open_clip's ``create_model`` for a tag, a state-dict file or random weights, with errors that name the fix."""
    try:
        return open_clip.create_model(model_name, pretrained=source, precision=precision, device=dev,
                                      weights_only=True, force_quick_gelu=quick_gelu)
    except (RuntimeError, AssertionError, KeyError) as err:  # a checkpoint made for another architecture
        if source is not None and Path(source).is_file():
            _check_intact(Path(source))
            raise ValueError(
                f"Checkpoint {source} does not fit model {model_name!r} (wrong architecture?). "
                f"Pass the model name the checkpoint was trained for. Details: {str(err)[:300]}"
            ) from err
        raise
    except Exception as err:  # noqa: BLE001 - downloads fail in many ways (offline, hub errors)
        if source is not None and not Path(source).is_file():
            raise RuntimeError(
                f"Could not obtain pretrained weights {source!r} for {model_name!r} ({type(err).__name__}: "
                f"{str(err)[:200]}). Offline? Use model={EMBEDDED_MODEL!r}, pretrained='embedded', "
                f"or download the weights elsewhere and pass the file path as `pretrained`."
            ) from err
        raise


def load_clip(
    model_name: str = "ViT-B-16",
    pretrained: str | os.PathLike | None = "openai",
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> Backbone:
    """Create a frozen open_clip model (eval mode, no gradients) with its tokenizer and preprocessing facts.

    ``pretrained`` is an open_clip tag (``"openai"``), a checkpoint file path (an open_clip state dict, loaded
    with ``weights_only=True``, or OpenAI's TorchScript ``.pt``), ``"embedded"`` for the tiny model, or
    ``None``/``"random"`` for random weights. Weights trained with QuickGELU get QuickGELU (module docstring).
    ``precision``: fp32 | fp16 | amp (:mod:`dpclab.precision`; amp builds fp32 weights and runs under autocast).
    """
    _register_configs()
    model_name = _config_file_model(str(model_name))
    _check_model_name(model_name)
    dev = resolve_device(device)
    check_precision(precision, dev)
    weights = _resolve_pretrained(model_name, pretrained)
    source, weights_id = weights.source, weights.weights_id
    build_precision = "fp16" if precision == "fp16" else "fp32"
    forced = weights.quick_gelu and not _model_config_quick_gelu(model_name)
    if weights.torchscript:
        model = _load_torchscript(model_name, source, build_precision, dev)
    else:
        model = _create(model_name, source, build_precision, dev, weights.quick_gelu)
    if not all(hasattr(model, a) for a in ("transformer", "token_embedding", "ln_final", "attn_mask")):
        raise ValueError(
            f"{model_name!r} has a custom text tower (no model.transformer/token_embedding); dpclab's prompt "
            f"learners need the standard CLIP text tower (e.g. ViT-B-16, ViT-B-32, ViT-L-14, {EMBEDDED_MODEL})."
        )
    model.eval().requires_grad_(False)
    cfg = open_clip.get_model_preprocess_cfg(model)
    size = cfg.get("size", 224)
    size = size[0] if isinstance(size, (tuple, list)) else int(size)
    return Backbone(
        model=model,
        tokenizer=open_clip.get_tokenizer(model_name),
        model_name=model_name,
        pretrained=str(pretrained) if pretrained not in (None, "") else "random",
        device=dev,
        image_size=size,
        mean=tuple(cfg.get("mean", open_clip.OPENAI_DATASET_MEAN)),
        std=tuple(cfg.get("std", open_clip.OPENAI_DATASET_STD)),
        weights_id=weights_id,
        precision=precision,
        quick_gelu_forced=forced,
    )


def check_teacher_inputs(student: Backbone, teacher: Backbone) -> None:
    """A teacher-fed method (``MethodEntry.teacher``, e.g. PromptKD) has the teacher score the student's augmented
    pixels: both backbones must take the same image size and normalisation (OpenAI's ViT-B/16 and ViT-L/14 at
    224 px do)."""
    ours = (student.image_size, tuple(student.mean), tuple(student.std))
    theirs = (teacher.image_size, tuple(teacher.mean), tuple(teacher.std))
    if ours != theirs:
        raise ValueError(f"The teacher {teacher.model_name} takes images of size/mean/std {theirs}, the "
                         f"student {student.model_name} {ours}; it scores the student's augmented images, so choose "
                         f"a teacher with the same input (e.g. ViT-L-14 at 224 px for ViT-B-16).")
