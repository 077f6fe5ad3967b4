"""MaPLe: multi-modal prompt learning, with the vision prompts *coupled* to the text prompts.

Text side (like CoOp, but deep):
  * the first ``n_ctx`` = 2 tokens of "a photo of a" become learnable context vectors (the rest, "of a", stays as
    fixed words in front of the class name): ``[SOS][ctx_1 ctx_2] of a {class}.[EOT]``;
  * before text blocks 1 .. depth-1 (depth 9) the context tokens are replaced by fresh learnable prompts
    (``deep_text[i-1]``, N(0, 0.02) init) -- see :func:`dpclab.text.encode_embeddings`.
Vision side (no parameters of its own):
  * the vision prompt of layer i is ``to_vision[i](text prompt of layer i)``, a Linear(text width -> vision width)
    per layer (512 -> 768 for ViT-B/16); layer 0 uses the shallow context. They are appended to the image tokens
    and replaced per layer (:func:`dpclab.vision.encode_images`). Gradients from the image side therefore flow into
    the text prompts: the two branches learn together ("coupling").
As in the reference, ``to_vision[1:]`` start as copies of one randomly initialised Linear, ``to_vision[0]`` is
initialised separately.

``prompt_depth`` counts layers with prompts including layer 0; it is capped at the encoders' layer count (the
embedded tiny CLIP has fewer than 9 layers). ``vision_prompts=False`` removes the vision branch: the image encoder
is then untouched, the method consumes cached image features, and with ``prompt_depth=1`` MaPLe is exactly CoOp
with the same context (tested).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
from torch import nn

from dpclab.backbones import Backbone
from dpclab.vision import encode_images, vision_layers, vision_width
from dpclab.methods.prompts import ContextConfig, PromptLearner, capped_depth, init_context, normal_prompts, split_context_words


@dataclass
class MaPLeConfig(ContextConfig):
    #: learnable context tokens: the first n_ctx tokens of ctx_init (the remaining words stay fixed)
    n_ctx: int = 2
    #: words of the prompt in front of the class name; None = n_ctx random N(0, .02) vectors and no fixed words
    ctx_init: str | None = "a photo of a"
    #: layers with prompts (1 = shallow only); capped at the number of transformer layers
    prompt_depth: int = 9
    #: False: no vision prompts (text-only deep prompting on cached image features)
    vision_prompts: bool = True


class MaPLe(PromptLearner):
    """Pixels-kind; features-kind when built with ``vision_prompts=False`` (fixed at construction)."""

    input_kind = "pixels"

    def __init__(self, backbone: Backbone, cfg: MaPLeConfig | None = None):
        cfg = cfg or MaPLeConfig()
        # without vision prompts the image encoder is untouched: use cached features
        super().__init__(backbone.model, backbone.tokenizer, cfg, "pixels" if cfg.vision_prompts else "features")
        device = self.clip.token_embedding.weight.device
        width = self.width
        if cfg.ctx_init:
            learned, self.fixed_words = split_context_words(self.tokenizer, cfg.ctx_init, cfg.n_ctx)
            ctx = init_context(self.clip, self.tokenizer, cfg.n_ctx, learned)
        else:
            self.fixed_words = ""
            ctx = torch.randn(cfg.n_ctx, width) * 0.02
        layers = len(self.clip.transformer.resblocks)
        if cfg.vision_prompts:
            layers = min(layers, vision_layers(self.clip))
        self.depth = capped_depth(cfg.prompt_depth, layers, "MaPLe")
        self.ctx = nn.Parameter(ctx)
        self.deep_text = normal_prompts(self.depth - 1, cfg.n_ctx, width)
        if cfg.vision_prompts:
            first = nn.Linear(width, vision_width(self.clip))
            shared_init = nn.Linear(width, vision_width(self.clip))
            self.to_vision = nn.ModuleList([first] + [copy.deepcopy(shared_init) for _ in range(self.depth - 1)])
        self.to(device)

    def vision_prompts(self) -> list[torch.Tensor]:
        """Vision prompts, one per prompted layer: the projected text prompts (the coupling)."""
        return [proj(p) for proj, p in zip(self.to_vision, self.text_prompts())]

    def class_texts(self, classnames: Sequence[str]) -> list[str]:
        return [f"{self.fixed_words} {c}" if self.fixed_words else c for c in classnames]

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.vision_prompts:
            return super().image_features(x)
        return encode_images(self.clip, x, self.vision_prompts())
