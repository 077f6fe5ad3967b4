"""CoOp: learned context vectors in front of the class name, through the frozen text encoder.

Prompt = ``[SOS][ctx_1..ctx_n][class tokens][.][EOT][pad]``. With ``ctx_init="a photo of a"`` the context starts
as those words' token embeddings, so the untrained learner *is* zero-shot CLIP with "a photo of a {}." (tested).
The prompt pieces (context init, cached class token embeddings, prompt assembly) live in
:mod:`dpclab.methods.prompts`; CoOp is the plain :class:`~dpclab.methods.prompts.PromptLearner`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dpclab.backbones import Backbone
from dpclab.methods.base import from_run
from dpclab.methods.prompts import ContextConfig, PromptLearner, init_context


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
