"""PromptSRC: independent deep text and vision prompts, regularised towards frozen CLIP ("self-regulating").

Prompts (independent vision-language prompting, no coupling):
  * text: 4 context vectors from "a photo of a" + fresh N(0, 0.02) prompts before text blocks 1..8 (depth 9);
  * vision: 4 N(0, 0.02) tokens appended to the image tokens (layer 0) + fresh ones before blocks 1..8.
Objective, per batch of B images over C classes (all features L2-normalised, s = CLIP's logit scale):
  * CE(s * I·Tᵀ, y)
  * + 25 * L1(T, T_zs): T_zs = frozen text features averaged over 60 hand-written templates (mean of the raw
    features, then normalised), a textual anchor richer than one template;
  * + 10 * L1(I, I_zs): I_zs = frozen CLIP image features of the same (augmented) images;
  * + KL(p_zs || p) summed and divided by B*C, p = softmax of the prompted logits, p_zs = softmax(s * I_zs·T_zsᵀ).
  L1 is the mean absolute difference over all entries (PyTorch's ``l1_loss``).
Gaussian prompt aggregation (GPA): after every epoch e (1-based) the trainable parameters are added to a running
sum with weight N(e; mu=15, sigma=1), normalised over the epochs 1..E; after the last epoch the parameters are
*replaced* by that weighted average (training itself always continues from the current, un-averaged prompts).
The running sum lives in buffers, so checkpoints and exact resume include it. With ``epochs`` far below ``mu`` the
weights concentrate on the last epoch.

Prompt depths are capped at the encoders' layer counts (see :func:`dpclab.methods.prompts.capped_depth`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dpclab.backbones import Backbone
from dpclab.text import encode_texts
from dpclab.vision import encode_images, vision_layers, vision_width
from dpclab.methods.base import Output, Task, frozen_result, trainable_parameters
from dpclab.methods.prompts import PromptLearner, capped_depth, init_context, normal_prompts
from dpclab.methods.templates import IMAGENET_TEMPLATES_60


@dataclass
class PromptSRCConfig:
    #: text context tokens; None = ctx_init's token count (4 with random init); with ctx_init it must equal that count
    n_ctx_text: int | None = None
    #: vision context tokens per prompted layer (random N(0, .02))
    n_ctx_vision: int = 4
    #: words whose embeddings initialise the text context; None = random
    ctx_init: str | None = "a photo of a"
    #: layers with prompts, counting layer 0; capped at the encoder's layer count (vision_depth 0: no vision prompts)
    text_depth: int = 9
    #: vision layers with prompts (see text_depth)
    vision_depth: int = 9
    #: weight of the L1 between prompted text features and the zero-shot ensemble over ``templates`` (lambda_1 = 25)
    text_loss_weight: float = 25.0
    #: weight of the L1 consistency of prompted and frozen image features (lambda_2 = 10)
    image_loss_weight: float = 10.0
    #: weight of the KL divergence between prompted and zero-shot logits
    kl_weight: float = 1.0
    #: templates of the frozen textual anchor (averaged)
    templates: tuple[str, ...] = IMAGENET_TEMPLATES_60
    #: Gaussian prompt aggregation over epochs (mean and std in 1-based epochs)
    gpa: bool = True
    #: the Gaussian's mean (1-based epoch)
    gpa_mean: float = 15.0
    #: the Gaussian's standard deviation (epochs)
    gpa_std: float = 1.0
    #: truncate text sequences to max(EOT)+1 (exact, faster); False runs all 77 tokens
    truncate: bool = True

    def __post_init__(self):
        self.templates = tuple(self.templates)
        bad = [t for t in self.templates if t.count("{}") != 1]
        if not self.templates or bad:
            raise ValueError(f"PromptSRC templates must be a non-empty list of strings with one '{{}}' each; "
                             f"bad: {bad[:3]}")
        if self.gpa_std <= 0:
            raise ValueError(f"gpa_std must be > 0, got {self.gpa_std}")


def gpa_weights(epochs: int, mean: float, std: float) -> list[float]:
    """Gaussian weights of epochs 1..``epochs`` (normalised to sum 1; computed in log space, so a mean far
    beyond the last epoch still gives finite weights)."""
    logits = [-0.5 * ((e - mean) / std) ** 2 for e in range(1, epochs + 1)]
    top = max(logits)
    w = [math.exp(v - top) for v in logits]
    return [v / sum(w) for v in w]


def template_ensemble(clip: nn.Module, tokenizer, classnames: Sequence[str], templates: Sequence[str]) -> torch.Tensor:
    """Normalised mean of the *raw* zero-shot text features over ``templates`` -> [C, E] (PromptSRC's anchor)."""
    feats = torch.stack([encode_texts(clip, tokenizer, [t.format(c) for c in classnames], normalize=False)
                         for t in templates])
    return F.normalize(feats.mean(0), dim=-1)


class PromptSRC(PromptLearner):
    input_kind = "pixels"

    def __init__(self, backbone: Backbone, cfg: PromptSRCConfig | None = None):
        super().__init__(backbone.model, backbone.tokenizer, cfg or PromptSRCConfig())
        cfg = self.cfg
        device = self.clip.token_embedding.weight.device
        text_depth = capped_depth(cfg.text_depth, len(self.clip.transformer.resblocks), "PromptSRC text")
        # vision_depth=0: text-only deep prompting (the image side stays frozen CLIP)
        vdepth = capped_depth(cfg.vision_depth, vision_layers(self.clip), "PromptSRC vision") if cfg.vision_depth else 0
        self.ctx = nn.Parameter(init_context(self.clip, self.tokenizer, cfg.n_ctx_text, cfg.ctx_init))
        self.deep_text = normal_prompts(text_depth - 1, self.ctx.shape[0], self.width)
        self.vision_prompts = normal_prompts(vdepth, cfg.n_ctx_vision, vision_width(self.clip))
        if cfg.gpa:  # running Gaussian-weighted sum of every trainable tensor (in the checkpoint, for resume)
            for name, p in trainable_parameters(self).items():
                self.register_buffer(self._gpa_name(name), torch.zeros_like(p))
        self.to(device)

    @staticmethod
    def _gpa_name(param_name: str) -> str:
        return "gpa_" + param_name.replace(".", "_")

    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        return encode_images(self.clip, x, list(self.vision_prompts))

    def anchor_text_features(self, classnames: Sequence[str]) -> torch.Tensor:
        """Frozen 60-template ensemble [C, E], normalised, cached per CLIP and class list."""
        return frozen_result(self.clip, ("template_ensemble", tuple(classnames), self.cfg.templates),
                             lambda: template_ensemble(self.clip, self.tokenizer, classnames, self.cfg.templates))

    def loss_terms(self, out: Output, x: torch.Tensor, y: torch.Tensor, task: Task):
        """The three self-regulating terms (see the module docstring)."""
        cfg = self.cfg
        scale = self.clip.logit_scale.exp()
        txt = F.normalize(out.text_features.float(), dim=-1)
        img = F.normalize(out.image_features.float(), dim=-1)
        anchor = self.anchor_text_features(task.classnames)
        with torch.no_grad():
            zs_img = F.normalize(self.clip.encode_image(x).float(), dim=-1)
            zs_logits = scale * zs_img @ anchor.t()
        l_text = F.l1_loss(txt, anchor)
        l_img = F.l1_loss(img, zs_img)
        # KL(p_zs || p): kl_div(input=log p, target=log p_zs), summed, divided by B*C as in the reference
        kl = F.kl_div(F.log_softmax(out.logits.float(), -1), F.log_softmax(zs_logits, -1), reduction="sum",
                      log_target=True) / out.logits.numel()
        return {"l1_text": (cfg.text_loss_weight, l_text), "l1_image": (cfg.image_loss_weight, l_img),
                "kl": (cfg.kl_weight, kl)}

    @torch.no_grad()
    def on_epoch_end(self, epoch: int, cfg) -> None:
        """Gaussian prompt aggregation (called by :func:`dpclab.train.fit` after every epoch, 0-based)."""
        if not self.cfg.gpa:
            return
        weight = gpa_weights(cfg.epochs, self.cfg.gpa_mean, self.cfg.gpa_std)[epoch]
        for name, p in trainable_parameters(self).items():
            total = getattr(self, self._gpa_name(name))
            if epoch == 0:
                total.zero_()
            total.add_(p.detach(), alpha=weight)
            if epoch == cfg.epochs - 1:
                p.copy_(total)
