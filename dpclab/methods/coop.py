"""CoOp: learned context vectors in front of the class name, through the frozen text encoder.

Prompt = ``[SOS][ctx_1..ctx_n][class tokens][.][EOT][pad]``. With ``ctx_init="a photo of a"`` the context starts
as those words' token embeddings, so the untrained learner *is* zero-shot CLIP with "a photo of a {}." (tested).
The pieces here (context init, cached class token embeddings, prompt assembly) are reused by CoCoOp, KgCoOp,
MaPLe and PromptSRC.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone
from ..text import class_prompt_tokens, encode_embeddings, eot_positions, tokenize
from .base import Output, Task, cosine_logits, freeze_clip, image_features_of


@dataclass
class CoOpConfig:
    #: context tokens; None = ctx_init's token count (4 with random init). Set together with ctx_init it must equal
    #: the init's token count (refused otherwise: docs/fidelity.md)
    n_ctx: int | None = None
    #: words whose embeddings initialise the context; None = n_ctx random N(0, .02) vectors
    ctx_init: str | None = "a photo of a"
    #: class-specific context (one context per class; cannot transfer to new classes)
    csc: bool = False
    n_classes: int = 0  # needed with csc
    #: truncate text sequences to max(EOT)+1 (exact, faster); False runs all 77 tokens
    truncate: bool = True


def init_context(clip: nn.Module, tokenizer, n_ctx: int | None, ctx_init: str | None, n_copies: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial context vectors [n_ctx, width] (or [n_copies, n_ctx, width]).

    With ``ctx_init``, ``n_ctx`` is None or the init's token count: any other count is refused (the released codes
    ignore it silently, CoOp by using the init's count, MaPLe/PromptSRC by falling back to random context for
    n_ctx > 4). Without ``ctx_init``, ``n_ctx`` random vectors (4 when None)."""
    width = clip.token_embedding.weight.shape[1]
    if ctx_init:
        tokens = tokenize(tokenizer, [ctx_init], clip.token_embedding.weight.device)
        n_words = int(eot_positions(tokens)[0]) - 1
        if n_ctx is not None and n_ctx != n_words:
            raise ValueError(
                f"ctx_init={ctx_init!r} has {n_words} tokens but n_ctx={n_ctx}. Pass ctx_init=None for {n_ctx} "
                f"randomly initialised context tokens (what the released CoOp+DePT config runs, and what the "
                f"released MaPLe/PromptSRC silently do for n_ctx > 4), or leave n_ctx unset to start from the words.")
        with torch.no_grad():
            ctx = clip.token_embedding(tokens)[0, 1:1 + n_words].float().clone()
        return ctx.expand(n_copies, -1, -1).clone() if n_copies else ctx
    n_ctx = 4 if n_ctx is None else n_ctx
    shape = (n_copies, n_ctx, width) if n_copies else (n_ctx, width)
    return torch.randn(shape, generator=generator) * 0.02


class ClassTokenCache:
    """Token embeddings of ``"X .. X {name}."`` per class list: prefix ([SOS]) and suffix (name, '.', EOT, pad).

    The token embedding is frozen, so these are computed once per (class list, context length, device).
    """

    def __init__(self, clip: nn.Module, tokenizer):
        self.clip, self.tokenizer = clip, tokenizer
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = {}

    def __call__(self, classnames: Sequence[str], n_ctx: int):
        device = self.clip.token_embedding.weight.device
        key = (tuple(classnames), n_ctx, str(device))
        if key not in self._cache:
            tokens = class_prompt_tokens(self.tokenizer, classnames, n_ctx, device=device)
            with torch.no_grad():
                emb = self.clip.token_embedding(tokens).float()
            self._cache[key] = (emb[:, :1], emb[:, 1 + n_ctx:], eot_positions(tokens))
        return self._cache[key]


def assemble(prefix: torch.Tensor, ctx: torch.Tensor, suffix: torch.Tensor) -> torch.Tensor:
    """[C,1,W] + ctx ([n,W], [C,n,W] or [B,C,n,W]) + [C,L',W] -> prompt embeddings (leading dims of ctx kept)."""
    if ctx.dim() == 2:
        ctx = ctx.expand(prefix.shape[0], -1, -1)
    if ctx.dim() == 4:  # per-image contexts: broadcast class pieces over the batch
        b = ctx.shape[0]
        prefix = prefix.expand(b, -1, -1, -1)
        suffix = suffix.expand(b, -1, -1, -1)
    return torch.cat([prefix, ctx.to(prefix.dtype), suffix], dim=-2)


class CoOp(nn.Module):
    input_kind = "features"

    def __init__(self, backbone: Backbone, cfg: CoOpConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or CoOpConfig()
        self.clip = freeze_clip(backbone.model)
        self.tokenizer = backbone.tokenizer
        if cfg.csc and cfg.n_classes <= 0:
            raise ValueError("CoOp with class-specific context (csc=True) needs n_classes.")
        ctx = init_context(self.clip, self.tokenizer, cfg.n_ctx, cfg.ctx_init, cfg.n_classes if cfg.csc else 0)
        self.ctx = nn.Parameter(ctx.to(self.clip.token_embedding.weight.device))
        self.class_tokens = ClassTokenCache(self.clip, self.tokenizer)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    def text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Raw text features [C, E] of the learned prompt for any class list."""
        if self.cfg.csc and len(classnames) != self.ctx.shape[0]:
            raise ValueError("Class-specific context cannot encode a different class list (e.g. new classes).")
        prefix, suffix, eot = self.class_tokens(classnames, self.n_ctx)
        return encode_embeddings(self.clip, assemble(prefix, self.ctx, suffix), eot, truncate=self.cfg.truncate)

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        img = image_features_of(self.clip, x, self.input_kind)
        txt = self.text_features(task.classnames)
        return Output(cosine_logits(img, txt, self.clip.logit_scale.exp()), img, txt)

    def loss(self, x: torch.Tensor, y: torch.Tensor, task: Task):
        out = self(x, task)
        loss = F.cross_entropy(out.logits, y)
        return loss, {"loss": loss.item(), "acc": (out.logits.argmax(-1) == y).float().mean().item()}
