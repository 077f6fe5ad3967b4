"""Zero-shot CLIP: class text features from hand-crafted templates, no training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from ..backbones import Backbone
from ..text import encode_texts
from .base import PromptMethod, Task


@dataclass
class ZeroShotConfig:
    #: extra templates to average with the task's own template (an ensemble); empty = the task template only
    templates: tuple[str, ...] = ()


def template_features(clip: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Raw class text features averaged over templates (each template's features L2-normalised first)."""
    feats = torch.stack([encode_texts(clip, tokenizer, [t.format(c) for c in classnames]) for t in templates])
    return feats.mean(0)


class ZeroShotCLIP(PromptMethod):
    input_kind = "features"

    def __init__(self, backbone: Backbone, cfg: ZeroShotConfig | None = None):
        super().__init__(backbone.model, backbone.tokenizer, cfg or ZeroShotConfig())
        self._cache: dict[tuple, torch.Tensor] = {}

    def text_features(self, task: Task) -> torch.Tensor:
        templates = (task.template, *self.cfg.templates)
        key = (task.classnames, templates)
        if key not in self._cache:
            self._cache[key] = template_features(self.clip, self.tokenizer, task.classnames, templates)
        return self._cache[key]

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        return self.text_features(task)
