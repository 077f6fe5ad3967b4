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
import logging
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones import Backbone
from ..text import encode_embeddings, eot_positions, tokenize
from ..vision import encode_images, vision_layers, vision_width
from .base import Output, Task, cosine_logits, freeze_clip, image_features_of
from .coop import ClassTokenCache, assemble, init_context

log = logging.getLogger(__name__)


@dataclass
class MaPLeConfig:
    #: learnable context tokens: the first n_ctx tokens of ctx_init (the remaining words stay fixed)
    n_ctx: int = 2
    #: words of the prompt in front of the class name; None = n_ctx random N(0, .02) vectors and no fixed words
    ctx_init: str | None = "a photo of a"
    #: layers with prompts (1 = shallow only); capped at the number of transformer layers
    prompt_depth: int = 9
    #: False: no vision prompts (text-only deep prompting on cached image features)
    vision_prompts: bool = True
    #: truncate text sequences to max(EOT)+1 (exact, faster)
    truncate: bool = True


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


def capped_depth(requested: int, layers: int, what: str) -> int:
    """Prompt depth actually used: ``requested`` capped at the encoder's ``layers`` (logged when capped)."""
    if requested < 1:
        raise ValueError(f"{what} prompt depth must be >= 1, got {requested}.")
    if requested > layers:
        log.info("%s prompt depth %d capped at the encoder's %d layers", what, requested, layers)
    return min(requested, layers)


def normal_prompts(count: int, n_tokens: int, width: int, std: float = 0.02) -> nn.ParameterList:
    return nn.ParameterList([nn.Parameter(torch.randn(n_tokens, width) * std) for _ in range(count)])


class MaPLe(nn.Module):
    input_kind = "pixels"

    def __init__(self, backbone: Backbone, cfg: MaPLeConfig | None = None):
        super().__init__()
        self.cfg = cfg = cfg or MaPLeConfig()
        self.clip = freeze_clip(backbone.model)
        self.tokenizer = backbone.tokenizer
        device = self.clip.token_embedding.weight.device
        width = self.clip.token_embedding.weight.shape[1]
        if cfg.ctx_init:
            learned, self.fixed_words = split_context_words(self.tokenizer, cfg.ctx_init, cfg.n_ctx)
            ctx = init_context(self.clip, self.tokenizer, cfg.n_ctx, learned)
        else:
            self.fixed_words = ""
            ctx = torch.randn(cfg.n_ctx, width) * 0.02
        layers = len(self.clip.transformer.resblocks)
        if cfg.vision_prompts:
            layers = min(layers, vision_layers(self.clip))
        else:
            self.input_kind = "features"  # the image encoder is untouched: use cached features
        self.depth = capped_depth(cfg.prompt_depth, layers, "MaPLe")
        self.ctx = nn.Parameter(ctx)
        self.deep_text = normal_prompts(self.depth - 1, cfg.n_ctx, width)
        if cfg.vision_prompts:
            first = nn.Linear(width, vision_width(self.clip))
            shared_init = nn.Linear(width, vision_width(self.clip))
            self.to_vision = nn.ModuleList([first] + [copy.deepcopy(shared_init) for _ in range(self.depth - 1)])
        self.to(device)
        self.class_tokens = ClassTokenCache(self.clip, self.tokenizer)

    @property
    def n_ctx(self) -> int:
        return self.ctx.shape[-2]

    def text_prompts(self) -> list[torch.Tensor]:
        """The text prompt of every prompted layer: [ctx, deep_text[0], ...]."""
        return [self.ctx, *self.deep_text]

    def vision_prompts(self) -> list[torch.Tensor]:
        """Vision prompts, one per prompted layer: the projected text prompts (the coupling)."""
        return [proj(p) for proj, p in zip(self.to_vision, self.text_prompts())]

    def class_texts(self, classnames: Sequence[str]) -> list[str]:
        return [f"{self.fixed_words} {c}" if self.fixed_words else c for c in classnames]

    def text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        prefix, suffix, eot = self.class_tokens(self.class_texts(classnames), self.n_ctx)
        return encode_embeddings(self.clip, assemble(prefix, self.ctx, suffix), eot,
                                 deep_prompts=[None, *self.deep_text], truncate=self.cfg.truncate)

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        if not self.cfg.vision_prompts:
            return image_features_of(self.clip, x, self.input_kind)
        return encode_images(self.clip, x, self.vision_prompts())

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        img = self.image_features(x)
        txt = self.text_features(task.classnames)
        return Output(cosine_logits(img, txt, self.clip.logit_scale.exp()), img, txt)

    def loss(self, x: torch.Tensor, y: torch.Tensor, task: Task):
        out = self(x, task)
        loss = F.cross_entropy(out.logits, y)
        return loss, {"loss": loss.item(), "acc": (out.logits.argmax(-1) == y).float().mean().item()}
