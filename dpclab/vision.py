"""Prompt-aware image encoding on open_clip's own ViT (no forked CLIP): the vision half of deep prompting.

open_clip's ``VisionTransformer.forward`` is: patch embedding (``conv1``) + class token + positional embedding
-> ``ln_pre`` -> ``transformer.resblocks`` -> ``_pool`` (``ln_post`` + class-token pooling) -> ``proj``.
MaPLe and PromptSRC need the same computation with learned *prompt tokens* in the sequence:

* ``deep_prompts[0]`` ([n, width] or [B, n, width]) is appended after the patch tokens, *before* ``ln_pre``
  (as in the reference implementations: the shallow prompt is layer-normalised with the patches);
* ``deep_prompts[i]`` (i >= 1), when not None, replaces those last ``n`` tokens before transformer block ``i``
  (a deep prompt: each layer gets its own fresh tokens, the previous layer's prompt outputs are dropped);
* before pooling the prompt tokens are removed again, so ``_pool`` sees exactly the token layout it expects
  (class token first, then patches) whatever its pooling type.

Unlike the text side (:func:`dpclab.text.encode_embeddings`, where the shallow prompt lives inside the word
embeddings and ``deep_prompts[0]`` is unused), images have no words to replace, so index 0 *is* the shallow prompt.
With no prompts, :func:`encode_images` equals ``model.encode_image`` (tested).
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn


def check_vision_tower(model: nn.Module) -> nn.Module:
    """The model's image tower, if it is a plain open_clip ViT that vision prompts can be inserted into."""
    visual = getattr(model, "visual", None)
    needed = ("conv1", "class_embedding", "positional_embedding", "ln_pre", "transformer", "_pool")
    if visual is None or not all(hasattr(visual, n) for n in needed):
        raise ValueError(
            f"Vision prompts need an open_clip VisionTransformer image tower; this model has "
            f"{type(visual).__name__}. Use a ViT CLIP (e.g. ViT-B-16) or a text-only method (coop, cocoop, kgcoop).")
    if getattr(visual, "attn_pool", None) is not None:
        raise ValueError("Vision prompts are not supported for image towers with attentional pooling (CoCa-style); "
                         "use a standard CLIP ViT.")
    return visual


def vision_width(model: nn.Module) -> int:
    """Token width of the image transformer (768 for ViT-B/16), the size of a vision prompt vector."""
    return check_vision_tower(model).class_embedding.shape[-1]


def vision_layers(model: nn.Module) -> int:
    return len(check_vision_tower(model).transformer.resblocks)


def patch_tokens(visual: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """[class token, patch tokens] + positional embedding, [B, 1 + grid², width] (``_embeds`` without ``ln_pre``)."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))  # [B, width, grid, grid]
    x = x.flatten(2).transpose(1, 2)  # [B, grid², width]
    cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    return visual.patch_dropout(x)


def _per_image(prompt: torch.Tensor, batch: int, dtype: torch.dtype) -> torch.Tensor:
    return (prompt.expand(batch, -1, -1) if prompt.dim() == 2 else prompt).to(dtype)


def encode_images(model: nn.Module, images: torch.Tensor,
                  deep_prompts: Sequence[torch.Tensor | None] | None = None) -> torch.Tensor:
    """Encode ``images`` [B, 3, H, W] through the frozen image tower with optional prompt tokens -> raw features
    [B, dim]. ``deep_prompts`` as described in the module docstring; prompts beyond the number of layers are an
    error (the method decides its depth)."""
    visual = check_vision_tower(model)
    blocks = visual.transformer.resblocks
    prompts = list(deep_prompts) if deep_prompts is not None else []
    if len(prompts) > len(blocks):
        raise ValueError(f"{len(prompts)} vision prompt layers given but the image transformer has only "
                         f"{len(blocks)} blocks; lower the prompt depth.")
    x = patch_tokens(visual, images)
    batch, n = x.shape[0], 0
    if prompts and prompts[0] is not None:
        n = prompts[0].shape[-2]
        x = torch.cat([x, _per_image(prompts[0], batch, x.dtype)], dim=1)
    x = visual.ln_pre(x)
    batch_first = getattr(visual.transformer, "batch_first", True)
    for i, block in enumerate(blocks):
        prompt = prompts[i] if 0 < i < len(prompts) else None
        if prompt is not None:
            if prompt.shape[-2] != n:
                raise ValueError(f"Vision prompt for layer {i} has {prompt.shape[-2]} tokens, the first layer's has {n}; "
                                 f"deep prompts replace the shallow ones, so their lengths must match (and layer 0 "
                                 f"must have one).")
            x = torch.cat([x[:, :x.shape[1] - n], _per_image(prompt, batch, x.dtype)], dim=1)
        x = block(x) if batch_first else block(x.transpose(0, 1)).transpose(0, 1)
    if n:
        x = x[:, :x.shape[1] - n]  # drop the prompt tokens: pooling sees the usual [class, patches] layout
    pooled, _ = visual._pool(x)
    proj = visual.proj
    if proj is None:
        return pooled
    return proj(pooled) if isinstance(proj, nn.Module) else pooled @ proj
