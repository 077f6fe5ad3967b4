"""Prompt-aware text encoding on open_clip's own text tower (no forked CLIP).

open_clip's ``encode_text`` is: token embedding + positional embedding -> causal ``transformer`` -> ``ln_final``
-> feature at the EOT position -> ``text_projection``. Prompt learners need the same computation but starting
from *embeddings* (so learned context vectors can replace word embeddings) and, for deep prompts (MaPLe,
PromptSRC), with prompt tokens re-inserted before selected transformer blocks. :func:`encode_embeddings` is
that computation, written against the model's public modules.

Speed: the causal mask means tokens after EOT never influence the EOT feature, so the sequence is truncated to
``max(eot) + 1`` tokens (3-5x faster for CoOp on CPU). ``truncate=False`` runs the full 77 tokens; tests prove
the two agree.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def tokenize(tokenizer, texts: Sequence[str], device: torch.device | None = None) -> torch.Tensor:
    """Tokenize with the model's open_clip tokenizer -> LongTensor [N, context_length]."""
    tokens = tokenizer(list(texts))
    return tokens.to(device) if device is not None else tokens


def eot_positions(tokens: torch.Tensor) -> torch.Tensor:
    """Position of the end-of-text token: the largest token id in each row (open_clip's ``argmax`` pooling)."""
    return tokens.argmax(dim=-1)


def _check_text_tower(model: nn.Module) -> None:
    pool = getattr(model, "text_pool_type", "argmax")
    if pool != "argmax":
        raise ValueError(f"dpclab prompt learners need argmax (EOT) text pooling; this model uses {pool!r}.")


def encode_embeddings(
    model: nn.Module,
    embeddings: torch.Tensor,
    eot: torch.Tensor,
    deep_prompts: Sequence[torch.Tensor | None] | None = None,
    prompt_start: int = 1,
    truncate: bool = True,
) -> torch.Tensor:
    """Encode token *embeddings* [N, L, width] through the frozen text tower -> unnormalised features [N, dim].

    ``deep_prompts[i]`` (shape [n_ctx, width] or [N, n_ctx, width]), when not None, replaces the tokens at
    positions ``prompt_start : prompt_start + n_ctx`` *before* transformer block ``i`` (i >= 1; block 0 sees the
    prompt already present in ``embeddings``). This is MaPLe/PromptSRC's deep prompting done by a loop over
    ``model.transformer.resblocks`` instead of a forked transformer.
    """
    _check_text_tower(model)
    length = int(eot.max()) + 1 if truncate else embeddings.shape[1]
    transformer = model.transformer
    dtype = transformer.get_cast_dtype()
    x = embeddings[:, :length].to(dtype) + model.positional_embedding[:length].to(dtype)
    mask = model.attn_mask[:length, :length] if model.attn_mask is not None else None
    batch_first = getattr(transformer, "batch_first", True)
    if not batch_first:
        x = x.transpose(0, 1)
    for i, block in enumerate(transformer.resblocks):
        prompt = deep_prompts[i] if deep_prompts is not None and 0 < i < len(deep_prompts) else None
        if prompt is not None:
            x = _replace_tokens(x, prompt.to(dtype), prompt_start, batch_first)
        x = block(x, attn_mask=mask)
    if not batch_first:
        x = x.transpose(0, 1)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0], device=x.device), eot]
    proj = model.text_projection
    if proj is None:
        return x
    return proj(x) if isinstance(proj, nn.Linear) else x @ proj


def _replace_tokens(x: torch.Tensor, prompt: torch.Tensor, start: int, batch_first: bool) -> torch.Tensor:
    if not batch_first:
        x = x.transpose(0, 1)
    n_ctx = prompt.shape[-2]
    prompt = prompt.expand(x.shape[0], -1, -1) if prompt.dim() == 2 else prompt
    x = torch.cat([x[:, :start], prompt, x[:, start + n_ctx:]], dim=1)
    return x.transpose(0, 1) if not batch_first else x


@torch.no_grad()
def encode_texts(model: nn.Module, tokenizer, texts: Sequence[str], batch_size: int = 256,
                 normalize: bool = True) -> torch.Tensor:
    """Zero-shot text features for plain strings, batched and truncated (same math as ``model.encode_text``)."""
    device = model.token_embedding.weight.device
    out = []
    for i in range(0, len(texts), batch_size):
        tokens = tokenize(tokenizer, texts[i:i + batch_size], device)
        feats = encode_embeddings(model, model.token_embedding(tokens), eot_positions(tokens))
        out.append(feats)
    feats = torch.cat(out).float()
    return torch.nn.functional.normalize(feats, dim=-1) if normalize else feats


def class_prompt_tokens(tokenizer, classnames: Sequence[str], n_ctx: int, placeholder: str = "X",
                        device: torch.device | None = None) -> torch.Tensor:
    """Tokens of ``"X X X X {classname}."``: [SOS] [ctx x n_ctx] [class tokens] [.] [EOT] [pad] (CoOp's layout).

    The placeholder tokens at positions 1..n_ctx are later replaced by learned context vectors.
    """
    prefix = " ".join([placeholder] * n_ctx)
    texts = [f"{prefix} {name}." if n_ctx > 0 else f"{name}." for name in classnames]
    return tokenize(tokenizer, texts, device)
