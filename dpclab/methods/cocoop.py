"""CoCoOp: CoOp's context plus an image-conditioned shift, so every image gets its own prompt.

A small meta-net ``Linear(E -> E/16) - ReLU - Linear(E/16 -> width)`` maps the (L2-normalised) frozen image
feature to a vector ``pi(x)`` that is added to *every* context token: ``ctx_m(x) = ctx_m + pi(x)``. The class text
features therefore depend on the image: ``text_features`` has shape [B, C, E] and each image is scored against
its own C class features (``cosine_logits`` handles the 3-D case).

Cost: B images x C classes text sequences per step (that is why the reference trains with batch 1). They are
encoded as *one* batch of B*C sequences, already cut to ``max(EOT) + 1`` tokens before assembly, and split into
chunks of at most ``max_sequences`` sequences at evaluation time so memory stays bounded.

With the meta-net's output zeroed, CoCoOp is exactly CoOp with the same context (tested).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dpclab.backbones import Backbone
from dpclab.text import encode_embeddings
from dpclab.methods.base import Task
from dpclab.methods.prompts import ContextConfig, PromptLearner, assemble, init_context


@dataclass
class CoCoOpConfig(ContextConfig):
    #: hidden width of the meta-net = image feature dim // this (16 in the paper: 512 -> 32)
    meta_reduction: int = 16
    #: most text sequences (images x classes) encoded in one pass; larger batches are split over images
    max_sequences: int = 4096


def meta_net(in_dim: int, out_dim: int, reduction: int) -> nn.Sequential:
    hidden = max(1, in_dim // reduction)
    return nn.Sequential(OrderedDict([
        ("linear1", nn.Linear(in_dim, hidden)),
        ("relu", nn.ReLU()),
        ("linear2", nn.Linear(hidden, out_dim)),
    ]))


def per_image_text_features(clip: nn.Module, prefix: torch.Tensor, ctx: torch.Tensor, suffix: torch.Tensor,
                            eot: torch.Tensor, truncate: bool = True, max_sequences: int = 4096) -> torch.Tensor:
    """Raw text features [B, C, E] for per-image contexts ``ctx`` [B, n, W] and C classes (prefix/suffix/eot from
    :class:`ClassTokenCache`). All B*C prompts go through the text tower as one batch (chunked over images)."""
    n_img, n_cls, n_ctx = ctx.shape[0], prefix.shape[0], ctx.shape[1]
    if truncate:  # cut before assembling: tokens after the last EOT never matter under the causal mask
        suffix = suffix[:, :int(eot.max()) + 1 - 1 - n_ctx]
    per_chunk = max(1, max_sequences // n_cls)
    out = []
    for i in range(0, n_img, per_chunk):
        part = ctx[i:i + per_chunk]
        emb = assemble(prefix, part[:, None].expand(-1, n_cls, -1, -1), suffix)  # [b, C, L, W]
        feats = encode_embeddings(clip, emb.flatten(0, 1), eot.repeat(part.shape[0]), truncate=truncate)
        out.append(feats.view(part.shape[0], n_cls, -1))
    return torch.cat(out)


class CoCoOp(PromptLearner):
    """The inherited ``text_features(classnames)`` are those of the shared context alone (no image shift); the
    classifier uses :meth:`image_text_features`."""

    input_kind = "features"

    def __init__(self, backbone: Backbone, cfg: CoCoOpConfig | None = None):
        super().__init__(backbone.model, backbone.tokenizer, cfg or CoCoOpConfig())
        cfg = self.cfg
        device = self.clip.token_embedding.weight.device
        embed_dim = self.clip.visual.output_dim  # size of the image features fed to the meta-net
        self.ctx = nn.Parameter(init_context(self.clip, self.tokenizer, cfg.n_ctx, cfg.ctx_init).to(device))
        self.meta_net = meta_net(embed_dim, self.width, cfg.meta_reduction).to(device)

    def image_contexts(self, image_features: torch.Tensor) -> torch.Tensor:
        """Per-image context [B, n_ctx, width] = shared ctx + meta-net(normalised image feature)."""
        shift = self.meta_net(F.normalize(image_features.float(), dim=-1).to(self.ctx.dtype))  # [B, width]
        return self.ctx[None] + shift[:, None]

    def image_text_features(self, classnames: Sequence[str], image_features: torch.Tensor) -> torch.Tensor:
        """Raw per-image class text features [B, C, E]."""
        prefix, suffix, eot = self.class_tokens(classnames, self.n_ctx)
        return per_image_text_features(self.clip, prefix, self.image_contexts(image_features), suffix, eot,
                                       self.cfg.truncate, self.cfg.max_sequences)

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        return self.image_text_features(task.classnames, image_features)
