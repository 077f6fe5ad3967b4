"""Zero-shot CLIP: class text features from hand-crafted templates, no training."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dpclab.backbones import Backbone
from dpclab.text import encode_texts
from dpclab.methods.base import PromptMethod, Task, frozen_result


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

    def text_features(self, task: Task) -> torch.Tensor:
        templates = (task.template, *self.cfg.templates)
        return frozen_result(self.clip, ("template_features", task.classnames, templates),
                             lambda: template_features(self.clip, self.tokenizer, task.classnames, templates))

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        return self.text_features(task)
