"""Reference-style loops, written the way the CoOp/Dassl code runs them: every step decodes and augments its images,
runs the frozen image encoder inside the step and the text transformer over all 77 tokens."""

from __future__ import annotations

import statistics
import time
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from dpclab.backbones import Backbone
from dpclab.data.features import ImageList, loader_options
from dpclab.lab.timing import sync
from dpclab.methods.base import trainable_parameters
from dpclab.text import tokenize
from dpclab.train import Examples, TrainConfig, epoch_generator, lr_at_epoch


class ReferenceCoOp(nn.Module):
    """CoOp written as the reference does: a prompt learner holding the frozen token embeddings of the full
    77-token prompts "X X X X {class}." around the learned context, a text encoder running all 77 positions,
    and the image encoder called on the pixel batch inside ``forward`` (no caching, no truncation)."""

    def __init__(self, backbone: Backbone, classnames: Sequence[str], ctx: torch.Tensor):
        super().__init__()
        clip = backbone.model
        self.clip = clip
        n_ctx = ctx.shape[0]
        prompts = [" ".join(["X"] * n_ctx) + f" {name}." for name in classnames]
        tokens = tokenize(backbone.tokenizer, prompts, clip.token_embedding.weight.device)
        with torch.no_grad():
            embedding = clip.token_embedding(tokens)
        self.register_buffer("token_prefix", embedding[:, :1])  # SOS
        self.register_buffer("token_suffix", embedding[:, 1 + n_ctx:])  # class, '.', EOT, padding
        self.register_buffer("tokens", tokens)
        self.ctx = nn.Parameter(ctx.detach().clone())

    def text_features(self) -> torch.Tensor:
        clip = self.clip
        ctx = self.ctx.unsqueeze(0).expand(self.token_prefix.shape[0], -1, -1)
        x = torch.cat([self.token_prefix, ctx, self.token_suffix], dim=1)  # [C, 77, W]
        x = x + clip.positional_embedding
        batch_first = getattr(clip.transformer, "batch_first", True)
        if not batch_first:
            x = x.permute(1, 0, 2)
        x = clip.transformer(x, attn_mask=clip.attn_mask)
        if not batch_first:
            x = x.permute(1, 0, 2)
        x = clip.ln_final(x)
        return x[torch.arange(x.shape[0]), self.tokens.argmax(dim=-1)] @ clip.text_projection

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        image_features = self.clip.encode_image(image)
        text_features = self.text_features()
        image_features = image_features / image_features.norm(dim=-1, keepdim=True)
        text_features = text_features / text_features.norm(dim=-1, keepdim=True)
        return self.clip.logit_scale.exp() * image_features @ text_features.t()


def reference_epoch(model: ReferenceCoOp, items, labels: torch.Tensor, transform, opt: torch.optim.Optimizer,
                    epoch: int, cfg: TrainConfig, device: torch.device) -> int:
    """One epoch as Dassl runs it: a DataLoader decodes + augments every image, forward, backward, step.
    The batch order and augmentation seeds are dpclab's, so the two loops see the same batches."""
    for g in opt.param_groups:
        g["lr"] = lr_at_epoch(epoch, cfg.lr, cfg)
    chunks = Examples(labels).index_batches(cfg.batch_size, epoch_generator(cfg.seed, epoch))
    images = ImageList(items, transform, view_seed=cfg.seed * 7919 + epoch)
    loader = DataLoader(images, batch_sampler=[c.tolist() for c in chunks], num_workers=cfg.num_workers)
    steps = 0
    for x, y, _ in loader:
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        steps += 1
    return steps



def reference_step_time(ref: nn.Module, task, items, transform, batch: int, steps: int, device: torch.device,
                         workers: int) -> float:
    """Seconds per reference-style step: a DataLoader decodes + augments the batch's images, the (frozen) image
    encoder runs inside the step, the text runs all 77 tokens (``truncate=False``), backward, SGD step."""
    loader = DataLoader(ImageList(items, transform, view_seed=1), batch_size=batch, shuffle=True,
                        generator=torch.Generator().manual_seed(0), **loader_options(workers, device))
    opt = torch.optim.SGD(list(trainable_parameters(ref).values()), lr=1e-5, momentum=0.9)
    ref.train()
    ref.clip.eval()
    def forever():
        while True:
            yield from loader

    it = forever()
    times = []
    for i in range(steps + 1):
        sync(device)
        t = time.perf_counter()
        x, y, _ = next(it)
        x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        if ref.input_kind == "features":
            x = ref.clip.encode_image(x)
        loss, _ = ref.loss(x, y, task)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sync(device)
        if i:  # the first step warms up (workers starting, allocator)
            times.append(time.perf_counter() - t)
    return statistics.median(times)

