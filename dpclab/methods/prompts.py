"""The prompt pieces the prompt learners share, and :class:`PromptLearner`, their common base.

A learned text prompt is ``[SOS][ctx_1..ctx_n][class tokens][.][EOT][pad]``: context vectors in front of each
class name, through the frozen text encoder. With ``ctx_init="a photo of a"`` the context starts as those words'
token embeddings, so an untrained CoOp *is* zero-shot CLIP with "a photo of a {}." (tested).

* :func:`init_context`: initial context vectors, from words or random N(0, 0.02);
* :func:`split_context_words`: split the init words into learned and fixed words (MaPLe's 2 of "a photo of a");
* :class:`ClassTokenCache`: the frozen token embeddings around the context, computed once per class list;
* :func:`assemble`: prefix + context + suffix -> prompt embeddings;
* deep prompts: :func:`capped_depth` and :func:`normal_prompts` (fresh prompts that replace the context tokens
  before text blocks 1..depth-1, see :func:`dpclab.text.encode_embeddings`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
from torch import nn

from dpclab.text import class_prompt_tokens, encode_embeddings, eot_positions, tokenize
from dpclab.methods.base import PromptMethod, Task

log = logging.getLogger(__name__)


@dataclass
class ContextConfig:
    """The options every context prompt learner has (its config dataclass extends this one)."""

    #: context tokens; None = ctx_init's token count (4 with random init). Set together with ctx_init it must equal
    #: the init's token count (refused otherwise: docs/fidelity.md)
    n_ctx: int | None = None
    #: words whose embeddings initialise the context; None = n_ctx random N(0, .02) vectors
    ctx_init: str | None = "a photo of a"
    #: truncate text sequences to max(EOT)+1 (exact, faster); False runs all 77 tokens
    truncate: bool = True


def init_context(clip: nn.Module, tokenizer, n_ctx: int | None, ctx_init: str | None, n_copies: int = 0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Initial context vectors [n_ctx, width] (or [n_copies, n_ctx, width]).

    From the token embeddings of ``ctx_init``, else random N(0, 0.02) (4 vectors when ``n_ctx`` is None). With
    ``ctx_init``, ``n_ctx`` must be None or the init's token count: any other count is refused (the released codes
    ignore one of the two silently: CoOp uses the init's count, MaPLe/PromptSRC fall back to random context for
    n_ctx > 4)."""
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


def token_count(tokenizer, text: str) -> int:
    """Number of BPE tokens of ``text`` (without SOS/EOT)."""
    return int(eot_positions(tokenize(tokenizer, [text]))[0]) - 1


def split_context_words(tokenizer, ctx_init: str, n_ctx: int) -> tuple[str, str]:
    """Split ``ctx_init`` into (learned words, fixed words) so that the learned words are exactly ``n_ctx`` tokens:
    "a photo of a", 2 -> ("a photo", "of a"). CLIP's BPE never merges across spaces, so the token sequence of
    "<learned> <fixed> {class}." is the concatenation of the parts'."""
    words = ctx_init.replace("_", " ").split()
    for k in range(1, len(words) + 1):
        count = token_count(tokenizer, " ".join(words[:k]))
        if count == n_ctx:
            return " ".join(words[:k]), " ".join(words[k:])
        if count > n_ctx:
            break
    raise ValueError(f"n_ctx={n_ctx} does not cover whole words of ctx_init={ctx_init!r} "
                     f"({token_count(tokenizer, ctx_init)} tokens in all); choose n_ctx at a word boundary.")


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


def capped_depth(requested: int, layers: int, what: str) -> int:
    """Prompt depth actually used: ``requested`` capped at the encoder's ``layers`` (logged when capped)."""
    if requested < 1:
        raise ValueError(f"{what} prompt depth must be >= 1, got {requested}.")
    if requested > layers:
        log.info("%s prompt depth %d capped at the encoder's %d layers", what, requested, layers)
    return min(requested, layers)


def normal_prompts(count: int, n_tokens: int, width: int, std: float = 0.02) -> nn.ParameterList:
    """``count`` fresh prompts [n_tokens, width], each N(0, std) (drawn in order from the global RNG)."""
    return nn.ParameterList([nn.Parameter(torch.randn(n_tokens, width) * std) for _ in range(count)])


class PromptLearner(PromptMethod):
    """A :class:`PromptMethod` whose class text features come from a learned context ``self.ctx`` in front of the
    class names (CoOp, CoCoOp, KgCoOp, MaPLe, PromptSRC).

    A subclass creates ``self.ctx`` ([n_ctx, width], or [C, n_ctx, width] class-specific) and, for deep prompting,
    replaces ``self.deep_text`` (empty: shallow prompting) by one prompt per text block 1..depth-1.
    ``class_texts`` maps class names to the words after the context (MaPLe puts fixed words in front).
    """

    def __init__(self, clip: nn.Module, tokenizer: Callable, cfg, input_kind: str | None = None):
        super().__init__(clip, tokenizer, cfg, input_kind)
        self.deep_text = nn.ParameterList()
        self.class_tokens = ClassTokenCache(self.clip, self.tokenizer)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    @property
    def width(self) -> int:
        """Width of the text tower's token embeddings (the size of a context vector)."""
        return self.clip.token_embedding.weight.shape[1]

    def text_prompts(self) -> list[torch.Tensor]:
        """The text prompt of every prompted layer: [ctx, deep_text[0], ...]."""
        return [self.ctx, *self.deep_text]

    def class_texts(self, classnames: Sequence[str]) -> Sequence[str]:
        return classnames

    def text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Raw text features [C, E] of the learned prompt for any class list."""
        prefix, suffix, eot = self.class_tokens(self.class_texts(classnames), self.n_ctx)
        return encode_embeddings(self.clip, assemble(prefix, self.ctx, suffix), eot,
                                 deep_prompts=[None, *self.deep_text], truncate=self.cfg.truncate)

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        return self.text_features(task.classnames)
