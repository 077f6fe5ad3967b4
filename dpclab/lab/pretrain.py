"""Pretrain the embedded tiny CLIP (``dpclab-tiny``) on the generated world, reproducibly, on a CPU.

This is CLIP pretraining in miniature: a stream of (image, caption) pairs from
:func:`dpclab.data.captions.sample_pretrain_batch`, the symmetric contrastive (InfoNCE) loss with a
learnable temperature, AdamW with warm-up and cosine decay. Two details matter for what the kit
studies later:

* **Token-embedding scale.** Prompt tuning (CoOp) moves context vectors that live in the
  token-embedding space with SGD at lr 0.002. In real CLIP those vectors have norms below 1, so such a
  step is meaningful. If pretraining let the used token embeddings grow large (AdamW moves every
  coordinate by ~lr per step), prompt tuning would barely move them. So the token embedding gets its
  own, smaller learning rate (``token_lr_scale``) and no weight decay; the manifest records the norms.
* **Sequence truncation.** The text transformer is causal and pools at the end-of-text token, so the
  positions after it never influence the features: training runs on sequences cut to the longest
  caption in the batch, which gives identical features to ``model.encode_text`` at a fraction of the cost.

Run ``python -m dpclab pretrain --out data/embedded/dpclab-tiny.pt`` (see ``--help``). The checkpoint is
a plain fp16 state dict that ``open_clip.create_model_and_transforms("dpclab-tiny", pretrained=...)`` loads.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import shlex
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from dpclab.backbones import EMBEDDED_MODEL as MODEL_NAME, MODEL_CONFIG_DIR, register_model_configs
from dpclab.data import downstream
from dpclab.data.captions import sample_pretrain_batch
from dpclab.data.coop import DatasetSpec, base_new_classes, load_dataset
from dpclab.data.features import encode_image_list
from dpclab.io import atomic_torch_save, atomic_write_text, sha256_file
from dpclab.text import encode_embeddings, eot_positions

# CLIP's image normalisation, applied by open_clip's preprocess too.
CLIP_MEAN = open_clip.OPENAI_DATASET_MEAN
CLIP_STD = open_clip.OPENAI_DATASET_STD

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """Hyper-parameters of a pretraining run (all recorded in the manifest)."""

    steps: int = 10000
    batch_size: int = 128
    seed: int = 0
    lr: float = 1e-3
    token_lr_scale: float = 0.05
    weight_decay: float = 0.1
    warmup_steps: int = 100
    threads: int = 1  # the committed checkpoint's setting; the bytes depend on it (2 threads: 0.31 vs 0.53 s a step)
    stream_length: int | None = None  # cycle the first N batches of the stream (tests use 1)


# ----------------------------------------------------------------------------------------------------
# Model helpers
# ----------------------------------------------------------------------------------------------------


def load_model(checkpoint: str | Path | None = None):
    """``(model, preprocess, tokenizer)`` of dpclab-tiny; random init when ``checkpoint`` is None."""
    register_model_configs(MODEL_CONFIG_DIR)
    model, _, preprocess = open_clip.create_model_and_transforms(
        MODEL_NAME, pretrained=str(checkpoint) if checkpoint else None
    )
    model.eval()
    return model, preprocess, open_clip.get_tokenizer(MODEL_NAME)


def encode_text_truncated(model: torch.nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)`` computed on tokens cut after the last end-of-text position
    (:func:`dpclab.text.encode_embeddings`, with gradients).

    Only the kept tokens are embedded, so the token embedding's gradient sums exactly the terms it always did.
    """
    eot = eot_positions(tokens)
    return encode_embeddings(model, model.token_embedding(tokens[:, :int(eot.max()) + 1]), eot)


def images_to_tensor(images: np.ndarray) -> torch.Tensor:
    """uint8 (B, H, W, 3) -> CLIP-normalised float (B, 3, H, W), as open_clip's preprocess does."""
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().float() / 255.0
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def contrastive_loss(model: torch.nn.Module, images: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """CLIP's symmetric InfoNCE: image i should match caption i among the batch, and vice versa."""
    img = F.normalize(model.encode_image(images), dim=-1)
    txt = F.normalize(encode_text_truncated(model, tokens), dim=-1)
    logits = model.logit_scale.exp() * img @ txt.T
    target = torch.arange(len(images), device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))


def _param_groups(model: torch.nn.Module, cfg: PretrainConfig) -> list[dict]:
    """AdamW groups: matrices decay; gains, biases, embeddings and the temperature do not."""
    decay, no_decay, token = [], [], []
    for name, p in model.named_parameters():
        if name == "token_embedding.weight":
            token.append(p)
        elif p.ndim < 2 or "embedding" in name or name in ("logit_scale", "visual.class_embedding"):
            no_decay.append(p)
        else:
            decay.append(p)
    return [
        {"params": decay, "weight_decay": cfg.weight_decay, "lr_scale": 1.0},
        {"params": no_decay, "weight_decay": 0.0, "lr_scale": 1.0},
        {"params": token, "weight_decay": 0.0, "lr_scale": cfg.token_lr_scale},
    ]


def stream_step(step: int, cfg: PretrainConfig) -> int:
    """Which batch of the pretraining stream training step ``step`` uses (``stream_length`` cycles the first N)."""
    return step if cfg.stream_length is None else step % cfg.stream_length


def lr_at(step: int, cfg: PretrainConfig) -> float:
    """Linear warm-up then cosine decay to zero."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def token_embedding_norms(model: torch.nn.Module, tokenizer: Callable, words: Sequence[str]) -> dict[str, float]:
    """Mean L2 norm of the token embeddings of ``words`` (what prompt tuning starts from)."""
    ids = tokenizer(list(words))
    mask = (ids > 0) & (ids < ids.max(dim=-1, keepdim=True).values)
    mask[:, 0] = False  # start-of-text
    emb = model.token_embedding.weight.detach()[ids[mask]]
    all_norms = model.token_embedding.weight.detach().norm(dim=-1)
    return {"prompt_words_mean_norm": float(emb.norm(dim=-1).mean()), "all_tokens_median_norm": float(all_norms.median())}


# ----------------------------------------------------------------------------------------------------
# Zero-shot evaluation on a written CoOp-layout dataset
# ----------------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_zero_shot(
    model: torch.nn.Module,
    tokenizer: Callable,
    preprocess: Callable,
    dataset_dir: str | Path,
    split_file: str,
    template: str,
    split: str = "test",
    batch_size: int = 256,
) -> dict[str, float]:
    """Zero-shot top-1 accuracy (%) of hand-template prompts on a CoOp-layout dataset.

    Returns ``all`` (n-way over every class), ``base`` (base images among base classes only) and
    ``new`` (new images among new classes only), as in the base-to-new protocol.
    """
    dataset_dir = Path(dataset_dir)
    spec = DatasetSpec(dataset_dir.name, dataset_dir.name, "json", "images", split_file, template)
    data = load_dataset(dataset_dir.parent, spec.name, specs={spec.name: spec})
    items = getattr(data, split)
    # open_clip's full-length encode_text, as the recorded manifests were measured (truncation agrees to ~1e-7 only)
    text = F.normalize(model.encode_text(tokenizer([template.format(c) for c in data.classnames])), dim=-1)
    image = F.normalize(encode_image_list(model, items, preprocess, torch.device("cpu"), batch_size), dim=-1)
    sims = image @ text.T
    labels = torch.tensor([d.label for d in items])
    base, new = base_new_classes(data.num_classes)

    def acc(classes: list[int]) -> float:
        cls = torch.tensor(classes)
        keep = torch.isin(labels, cls)
        pred = cls[sims[keep][:, cls].argmax(dim=-1)]
        # the percentage is taken in float32, as the recorded manifests were (not evaluate.accuracy's float64)
        return float((pred == labels[keep]).float().mean() * 100.0)

    return {"all": acc(list(range(data.num_classes))), "base": acc(base), "new": acc(new)}


def evaluate_world(model: torch.nn.Module, tokenizer: Callable, preprocess: Callable, root: str | Path) -> dict:
    """Zero-shot accuracies on the test split of every world dataset written under ``root``."""
    out = {}
    for name, info in downstream.WORLD_DATASETS.items():
        out[name] = evaluate_zero_shot(
            model, tokenizer, preprocess, Path(root) / info["dirname"], info["split_file"], info["template"]
        )
    return out


# ----------------------------------------------------------------------------------------------------
# Training
# ----------------------------------------------------------------------------------------------------


def train(cfg: PretrainConfig, progress: bool = True) -> tuple[torch.nn.Module, list[float]]:
    """Train dpclab-tiny from scratch on the world stream; returns the model and the loss per step."""
    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled())
    torch.set_num_threads(cfg.threads)
    torch.use_deterministic_algorithms(True)
    try:
        return _train(cfg, progress)
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])


def _train(cfg: PretrainConfig, progress: bool) -> tuple[torch.nn.Module, list[float]]:
    torch.manual_seed(cfg.seed)
    model, _, tokenizer = load_model(None)
    model.train()
    groups = _param_groups(model, cfg)
    opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.98), eps=1e-6, fused=True)
    losses: list[float] = []
    bar = tqdm(range(cfg.steps), desc="pretrain", disable=not progress)
    for step in bar:
        images, captions = sample_pretrain_batch(cfg.seed, stream_step(step, cfg), cfg.batch_size)
        lr = lr_at(step, cfg)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        loss = contrastive_loss(model, images_to_tensor(images), tokenizer(captions))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0.0, math.log(100.0))
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}", scale=f"{model.logit_scale.exp().item():.1f}")
    model.eval()
    return model, losses


def pretrain(
    out_path: str | Path,
    steps: int = PretrainConfig.steps,
    batch_size: int = PretrainConfig.batch_size,
    seed: int = PretrainConfig.seed,
    manifest_path: str | Path | None = None,
    command: str | None = None,
    evaluate: bool = True,
    progress: bool = True,
    eval_seed: int = 0,
    **overrides,
) -> dict:
    """Pretrain, save an fp16 state dict atomically at ``out_path`` and write the manifest beside it.

    The metrics are measured on the *saved* checkpoint reloaded through open_clip, on the test split of
    every world dataset written with ``eval_seed``. Returns the manifest dictionary.
    """
    cfg = PretrainConfig(steps=steps, batch_size=batch_size, seed=seed, **overrides)
    out_path = Path(out_path)
    t0 = time.time()
    model, losses = train(cfg, progress=progress)
    train_seconds = time.time() - t0
    state = {k: v.detach().to(torch.float16) if v.is_floating_point() else v for k, v in model.state_dict().items()}
    atomic_torch_save(state, out_path)

    manifest: dict = {
        "model": MODEL_NAME,
        "checkpoint": out_path.name,
        "sha256": sha256_file(out_path),
        "size_bytes": out_path.stat().st_size,
        "command": command,
        "config": asdict(cfg),
        "duration_s": round(train_seconds, 1),
        "torch": torch.__version__,
        "open_clip": open_clip.__version__,
        "loss_first_100": float(np.mean(losses[:100])),
        "loss_last_100": float(np.mean(losses[-100:])),
        "loss_curve_every_100": [round(float(np.mean(losses[i:i + 100])), 4) for i in range(0, len(losses), 100)],
        "stream_sha256": stream_digest(cfg),
    }
    if evaluate:
        manifest.update(measure(out_path, eval_seed))
    _write_manifest(manifest, Path(manifest_path) if manifest_path else out_path.parent / "MANIFEST.json")
    return manifest


def stream_digest(cfg: PretrainConfig) -> str:
    """sha256 of the stream batches of training steps 0, 1 and the last (images and captions).

    Recorded in the manifest: a change of the world generator that would change the checkpoint (a new shape, another
    caption template) changes this digest, and ``tests/test_embedded_checkpoint.py`` says so before anyone trusts a
    checkpoint the current code no longer reproduces. Changes to the downstream datasets leave it alone."""
    digest = hashlib.sha256()
    for step in sorted({stream_step(s, cfg) for s in (0, min(1, cfg.steps - 1), cfg.steps - 1)}):
        images, captions = sample_pretrain_batch(cfg.seed, step, cfg.batch_size)
        digest.update(images.tobytes())
        digest.update("\n".join(captions).encode())
    return digest.hexdigest()


def measure(checkpoint: str | Path, eval_seed: int = 0) -> dict:
    """The manifest's metrics of a saved checkpoint: temperature, token-embedding norms, zero-shot accuracies."""
    loaded, preprocess, tokenizer = load_model(checkpoint)
    out: dict = {"logit_scale": loaded.logit_scale.exp().item(),
                 "token_embedding": token_embedding_norms(loaded, tokenizer, ["a photo of a"])}
    with tempfile.TemporaryDirectory() as tmp:
        downstream.write_world(tmp, seed=eval_seed)
        ds = evaluate_world(loaded, tokenizer, preprocess, tmp)
    out["zero_shot"] = {"eval_world_seed": eval_seed, "split": "test", "datasets": ds,
                        "mean": {k: float(np.mean([d[k] for d in ds.values()])) for k in ("all", "base", "new")}}
    return out


def remeasure(checkpoint: str | Path, manifest_path: str | Path | None = None, eval_seed: int = 0) -> dict:
    """Re-measure the metrics of an existing checkpoint (after the world's datasets changed) into its manifest.

    The checkpoint must be the one the manifest describes (same sha256); the training record is kept.
    """
    checkpoint = Path(checkpoint)
    manifest_path = Path(manifest_path) if manifest_path else checkpoint.parent / "MANIFEST.json"
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("sha256") != sha256_file(checkpoint):
        raise ValueError(f"{checkpoint} is not the checkpoint {manifest_path} describes (sha256 differs); "
                         "re-run the pretraining command instead.")
    manifest.update(measure(checkpoint, eval_seed))
    if "stream_sha256" not in manifest:  # manifests written before the digest existed
        manifest["stream_sha256"] = stream_digest(PretrainConfig(**manifest["config"]))
    _write_manifest(manifest, manifest_path)
    return manifest


def _write_manifest(manifest: dict, manifest_path: Path) -> None:
    atomic_write_text(manifest_path, json.dumps(manifest, indent=2) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    """CLI: ``python -m dpclab pretrain --out data/embedded/dpclab-tiny.pt [--steps N ...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    d = PretrainConfig()
    p = argparse.ArgumentParser(prog="python -m dpclab pretrain", description=__doc__.split("\n")[0])
    p.add_argument("--out", required=True, help="checkpoint path (.pt); MANIFEST.json is written beside it")
    p.add_argument("--manifest", default=None, help="manifest path (default: <out dir>/MANIFEST.json)")
    p.add_argument("--steps", type=int, default=d.steps)
    p.add_argument("--batch-size", type=int, default=d.batch_size)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--lr", type=float, default=d.lr)
    p.add_argument("--token-lr-scale", type=float, default=d.token_lr_scale)
    p.add_argument("--threads", type=int, default=d.threads, help="torch threads (results depend on it)")
    p.add_argument("--no-eval", action="store_true", help="skip the zero-shot metrics")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--remeasure", action="store_true",
                   help="do not train: re-measure the metrics of the existing checkpoint --out into its manifest")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    if args.remeasure:
        manifest = remeasure(args.out, args.manifest)
    else:
        manifest = pretrain(
            args.out, steps=args.steps, batch_size=args.batch_size, seed=args.seed, manifest_path=args.manifest,
            command="python -m dpclab pretrain " + shlex.join(argv), evaluate=not args.no_eval,
            progress=not args.no_progress, lr=args.lr, token_lr_scale=args.token_lr_scale, threads=args.threads,
        )
    print(json.dumps({k: manifest[k] for k in ("sha256", "duration_s", "loss_last_100")}, indent=2))
    if "zero_shot" in manifest:
        for name, m in manifest["zero_shot"]["datasets"].items():
            print(f"{name:14s} all {m['all']:5.1f}  base {m['base']:5.1f}  new {m['new']:5.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
