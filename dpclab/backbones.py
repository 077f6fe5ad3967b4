"""Load a frozen CLIP backbone: any open_clip model, or the embedded tiny CLIP, through one function.

>>> bb = load_clip("dpclab-tiny", "embedded")          # offline default, ships with the repo
>>> bb = load_clip("ViT-B-16", "openai", device="cuda") # real CLIP (downloads once, needs internet)
>>> bb = load_clip("ViT-B-16", "/path/to/weights.pt")  # a local checkpoint in open_clip's format
>>> bb = load_clip("ViT-B-16", None)                   # random weights (tests)
>>> bb = load_clip("my_configs/my-clip.json", "my-clip.pt")  # your own architecture: a config file + weights

Extra model configs (open_clip's JSON format) can also be registered for every process by listing their folders
or files in the ``DPCLAB_MODEL_CONFIGS`` environment variable (separated by ``os.pathsep``, ":" on Linux); the
model is then loaded by its file stem, e.g. ``load_clip("my-clip", "my-clip.pt")`` or
``python -m dpclab train --model my-clip --pretrained my-clip.pt``.

Everything downstream (prompt learners, feature caches, notebooks) receives a :class:`Backbone` and never
cares which of these it is.
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import open_clip
import torch
from torch import nn

from .io import sha256_file

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_DIR = PACKAGE_DIR.parent
MODEL_CONFIG_DIR = PACKAGE_DIR / "model_configs"
#: environment variable: extra open_clip model-config folders or .json files, separated by os.pathsep
MODEL_CONFIGS_ENV = "DPCLAB_MODEL_CONFIGS"

EMBEDDED_MODEL = "dpclab-tiny"
EMBEDDED_PRETRAINED = "embedded"
EMBEDDED_REPRODUCE = "python -m dpclab pretrain  (see data/embedded/MANIFEST.json for the exact command)"


def embedded_checkpoint() -> Path:
    """Path of the committed tiny-CLIP checkpoint (override with the DPCLAB_EMBEDDED environment variable)."""
    return Path(os.environ.get("DPCLAB_EMBEDDED", REPO_DIR / "data" / "embedded" / f"{EMBEDDED_MODEL}.pt"))


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

    @property
    def key(self) -> str:
        """A short, filesystem-safe identifier of model + weights (used to key feature caches)."""
        return f"{self.model_name}-{self.weights_id}".replace("/", "_")

    @property
    def logit_scale(self) -> torch.Tensor:
        return self.model.logit_scale.exp()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when present, else CPU; anything else is passed to :class:`torch.device`."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


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


def _file_sha256(path: Path, prefix: int = 12) -> str:
    return sha256_file(path)[:prefix]


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


def _resolve_pretrained(model_name: str, pretrained: str | os.PathLike | None) -> tuple[str | None, str]:
    """Return (what to hand open_clip, weights id). Raises with a fix when the weights cannot be had."""
    if pretrained in (None, "", "none", "random"):
        return None, "random"
    if str(pretrained) == EMBEDDED_PRETRAINED:
        if model_name != EMBEDDED_MODEL:
            raise ValueError(f"pretrained='embedded' only exists for model {EMBEDDED_MODEL!r}, not {model_name!r}.")
        path = embedded_checkpoint()
        if not path.is_file():
            raise FileNotFoundError(
                f"The embedded checkpoint {path} is missing. It is committed to the repository; restore it with "
                f"`git checkout -- {path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path}` "
                f"or rebuild it with `{EMBEDDED_REPRODUCE}`."
            )
        return str(path), _file_sha256(path)
    path = Path(pretrained).expanduser()
    if path.suffix in {".pt", ".pth", ".bin", ".safetensors"} or os.sep in str(pretrained):
        if not path.is_file():
            raise FileNotFoundError(
                f"Checkpoint file {path} does not exist. Pass the path of an open_clip/OpenAI-format state dict, "
                f"a pretrained tag such as 'openai', or use model={EMBEDDED_MODEL!r}, pretrained='embedded' offline."
            )
        return str(path), _file_sha256(path)
    tags = open_clip.list_pretrained_tags_by_model(model_name)
    if pretrained not in tags:
        raise ValueError(
            f"Unknown pretrained tag {pretrained!r} for {model_name!r}. Known tags: {tags or 'none'}; "
            f"or pass a local checkpoint file path."
        )
    return str(pretrained), str(pretrained)


def load_clip(
    model_name: str = "ViT-B-16",
    pretrained: str | os.PathLike | None = "openai",
    device: str | torch.device = "auto",
    precision: str = "fp32",
) -> Backbone:
    """Create a frozen open_clip model (eval mode, no gradients) with its tokenizer and preprocessing facts.

    ``pretrained`` is an open_clip tag (``"openai"``), a checkpoint file path, ``"embedded"`` for the tiny
    model, or ``None``/``"random"`` for random weights. Checkpoint files are loaded with ``weights_only=True``.
    """
    _register_configs()
    model_name = _config_file_model(str(model_name))
    _check_model_name(model_name)
    dev = resolve_device(device)
    source, weights_id = _resolve_pretrained(model_name, pretrained)
    try:
        model = open_clip.create_model(model_name, pretrained=source, precision=precision, device=dev,
                                       weights_only=True)
    except (RuntimeError, AssertionError, KeyError) as err:  # a checkpoint made for another architecture
        if source is not None and Path(source).is_file():
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
    )
