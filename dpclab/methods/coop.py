"""CoOp, and KgCoOp: the same learned prompt under two objectives.

**CoOp**: learned context vectors in front of the class name, through the frozen text encoder.
Prompt = ``[SOS][ctx_1..ctx_n][class tokens][.][EOT][pad]``. With ``ctx_init="a photo of a"`` the context starts
as those words' token embeddings, so the untrained learner *is* zero-shot CLIP with "a photo of a {}." (tested).
The prompt pieces (context init, cached class token embeddings, prompt assembly) live in
:mod:`dpclab.methods.prompts`; CoOp is the plain :class:`~dpclab.methods.prompts.PromptLearner`.

**KgCoOp**: CoOp plus a knowledge-guidance term that keeps the learned class text features near zero-shot CLIP's.

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
from torch import nn

from dpclab.backbones import Backbone
from dpclab.data.coop import KGCOOP_TEMPLATES
from dpclab.methods.base import Output, Task, from_run, frozen_result
from dpclab.methods.prompts import ContextConfig, PromptLearner, init_context
from dpclab.text import encode_texts


@dataclass
class CoOpConfig(ContextConfig):
    #: class-specific context (one context per class; cannot transfer to new classes)
    csc: bool = False
    #: number of classes (one context each with csc; the pipeline passes the training class count)
    n_classes: int = from_run("n_classes")


class CoOp(PromptLearner):
    input_kind = "features"

    def __init__(self, backbone: Backbone, cfg: CoOpConfig | None = None):
        super().__init__(backbone.model, backbone.tokenizer, cfg or CoOpConfig())
        cfg = self.cfg
        if cfg.csc and cfg.n_classes <= 0:
            raise ValueError("CoOp with class-specific context (csc=True) needs n_classes.")
        ctx = init_context(self.clip, self.tokenizer, cfg.n_ctx, cfg.ctx_init, cfg.n_classes if cfg.csc else 0)
        self.ctx = nn.Parameter(ctx.to(self.clip.token_embedding.weight.device))

    def text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Raw text features [C, E] of the learned prompt for any class list."""
        if self.cfg.csc and len(classnames) != self.ctx.shape[0]:
            raise ValueError("Class-specific context cannot encode a different class list (e.g. new classes).")
        return super().text_features(classnames)


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
