"""KgCoOp: CoOp plus a knowledge-guidance term that keeps the learned class text features near zero-shot CLIP's.

loss = CE + w * (1 - mean_i cos(t_i, t_i^clip)),  w = 8.0,

where ``t_i`` are the learned-prompt text features of the training classes and ``t_i^clip`` the frozen CLIP
features of the hand-crafted template (e.g. "a photo of a {}."). The prompt learner, its forward and its
inference are CoOp's; only the objective differs, so KgCoOp *is* a CoOp with another ``loss`` (with ``weight=0``
the loss is CoOp's, tested).

Which template is the anchor: ``KgCoOpConfig.template`` when given; otherwise the task's own hand-crafted template,
except for the datasets where the KgCoOp reference uses another one (``data.coop.KGCOOP_TEMPLATES``: DTD's anchor
is "a photo of a {}, a type of texture." instead of CoOp's "{} texture.").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F

from dpclab.data.coop import KGCOOP_TEMPLATES
from dpclab.text import encode_texts
from dpclab.methods.base import Output, Task, frozen_result
from dpclab.methods.coop import CoOp, CoOpConfig


@dataclass
class KgCoOpConfig(CoOpConfig):
    #: weight of the knowledge-guidance term (8.0 in the paper; DePT's KgCoOp variant uses 2.0)
    weight: float = 8.0
    #: anchor template with one ``{}``; None = the task's template (KgCoOp's own for DTD, see module docstring)
    template: str | None = None

    def __post_init__(self):
        if self.template is not None and self.template.count("{}") != 1:
            raise ValueError(f"KgCoOp template must contain exactly one '{{}}' for the class name, got {self.template!r}.")


class KgCoOp(CoOp):
    """CoOp's prompt learner with the knowledge-guided objective (see module docstring)."""

    def __init__(self, backbone, cfg: KgCoOpConfig | None = None):
        super().__init__(backbone, cfg or KgCoOpConfig())

    def anchor_template(self, task: Task) -> str:
        if self.cfg.template is not None:
            return self.cfg.template
        return KGCOOP_TEMPLATES.get(task.name, task.template)

    def anchor_features(self, classnames: Sequence[str], template: str) -> torch.Tensor:
        """Frozen zero-shot text features [C, E] (L2-normalised) of the anchor template, cached per CLIP."""
        return frozen_result(self.clip, ("template", tuple(classnames), template),
                             lambda: encode_texts(self.clip, self.tokenizer, [template.format(c) for c in classnames]))

    def loss_terms(self, out: Output, x: torch.Tensor, y: torch.Tensor, task: Task):
        """``kg = 1 - mean cos(t_i, t_i^clip)`` at weight ``cfg.weight``."""
        anchor = self.anchor_features(task.classnames, self.anchor_template(task))
        kg = 1.0 - F.cosine_similarity(out.text_features.float(), anchor, dim=-1, eps=1e-7).mean()
        return {"kg": (self.cfg.weight, kg)}
