"""The one contract every method follows.

A method is an ``nn.Module`` holding the frozen CLIP as ``self.clip`` plus its own trainable parameters (the only
parameters with ``requires_grad``). It exposes:

* ``input_kind``: ``"features"`` when it consumes frozen image features (cached once, see ``data.features``) or
  ``"pixels"`` when it runs the image encoder itself (vision prompts);
* ``forward(x, task) -> Output``: raw image/text features and logits for the classes of ``task``;
* ``loss(x, y, task) -> (loss, logs)``: its training objective.

DPC and DePT are plug-ins that wrap any such method. ``torch.func.functional_call`` lets DPC run a method with
swapped-in (mixed) prompt tensors without the method knowing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class Task:
    """A set of classes to classify among. ``split`` (base | new | all) lets DPC/DePT pick their inference rule."""

    classnames: tuple[str, ...]
    template: str = "a photo of a {}."
    split: str = "base"
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "classnames", tuple(self.classnames))
        if self.split not in ("base", "new", "all"):
            raise ValueError(f"Task.split must be 'base', 'new' or 'all', got {self.split!r}")


@dataclass
class Output:
    """``image_features`` [B, E] and ``text_features`` [C, E] (or [B, C, E] for per-image prompts) are raw
    (unnormalised); ``logits`` [B, C] = exp(logit_scale) * cos."""

    logits: torch.Tensor
    image_features: torch.Tensor
    text_features: torch.Tensor
    extras: dict = field(default_factory=dict)


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    if img.dtype != txt.dtype:  # precision fp16: half image features meet float (zero-shot) text features
        dtype = torch.promote_types(img.dtype, txt.dtype)
        img, txt = img.to(dtype), txt.to(dtype)
    if txt.dim() == 3:  # per-image class features (CoCoOp)
        return scale * torch.einsum("be,bce->bc", img, txt)
    return scale * img @ txt.t()


def learned_state(method: nn.Module) -> dict[str, torch.Tensor]:
    """Everything of a method that is not the frozen CLIP (what a checkpoint stores).

    The CLIP is recognised by identity, not by name, so a plug-in that wraps a method (its CLIP then sits at
    ``base.clip``) stores only what it and its base learned."""
    frozen = {id(t) for t in (*method.clip.parameters(), *method.clip.buffers())}
    return {k: v.detach().clone() for k, v in method.state_dict(keep_vars=True).items() if id(v) not in frozen}


def load_learned_state(method: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load :func:`learned_state` output; a checkpoint of another method/model/class count fails with a clear error."""
    own = learned_state(method)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            s for s in [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                        "shape mismatch " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                      for k in wrong[:5]) if wrong else ""] if s)
        raise ValueError(f"{source} does not fit this {type(method).__name__} ({detail}). It was made for another "
                         f"method, backbone, prompt length or class count; pass the matching settings.")
    method.load_state_dict(state, strict=False)


def trainable_parameters(method: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in method.named_parameters() if p.requires_grad}


def freeze_clip(clip: nn.Module) -> nn.Module:
    clip.eval().requires_grad_(False)
    return clip


def image_features_of(clip: nn.Module, x: torch.Tensor, input_kind: str) -> torch.Tensor:
    """Cached features pass through; pixels go through the frozen image encoder."""
    if input_kind == "features":
        return x
    return clip.encode_image(x)


def classnames_key(classnames: Sequence[str]) -> tuple[str, ...]:
    return tuple(classnames)
