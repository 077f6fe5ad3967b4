"""Figures of images and class prompts: few-shot images per class, predictions, DHNO's hard negatives, and how
similar the class prompts' text features are."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.figure import Figure

from dpclab.data.features import load_image


def _rgb(item):
    return load_image(item.impath).convert("RGB")


def image_grid(items: Sequence, classnames: Sequence[str], per_class: int = 4, max_classes: int = 12,
               title: str | None = None, size: float = 0.9, pad: int = 2) -> Figure:
    """``per_class`` images (``Datum`` items) for each of the first ``max_classes`` classes, one row per class,
    labelled with the class name. The images are tiled into one array (one ``imshow``: fast)."""
    by_class: dict[int, list] = {}
    for d in items:
        if d.label < max_classes and len(by_class.setdefault(d.label, [])) < per_class:
            by_class[d.label].append(d)
    labels = sorted(by_class)
    if not labels:
        raise ValueError("image_grid got no items to show.")
    first = np.asarray(_rgb(by_class[labels[0]][0]))
    h, w = first.shape[:2]
    tile = np.full((len(labels) * (h + pad) - pad, per_class * (w + pad) - pad, 3), 255, dtype=np.uint8)
    for r, y in enumerate(labels):
        for c, d in enumerate(by_class[y]):
            img = _rgb(d)
            if img.size != (w, h):
                img = img.resize((w, h))
            tile[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = np.asarray(img)
    fig = Figure(figsize=(per_class * size + 1.8, len(labels) * size + 0.4))
    ax = fig.subplots()
    ax.imshow(tile, interpolation="nearest")
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(len(labels))], [classnames[y] for y in labels], fontsize=8)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def prediction_grid(items: Sequence, classnames: Sequence[str], logits: torch.Tensor, n: int = 8, cols: int = 4,
                    title: str | None = None, size: float = 1.6) -> Figure:
    """``n`` images spread evenly over ``items`` (so over the classes) with their true class and the top
    prediction from ``logits`` [len(items), C] (green when right, red when wrong)."""
    n = min(n, len(items))
    picks = [round(i * (len(items) - 1) / max(n - 1, 1)) for i in range(n)]
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(cols * size, rows * (size + 0.45)))
    axes = fig.subplots(rows, cols, squeeze=False)
    pred = logits.argmax(-1).tolist()
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        d, p = items[picks[i]], pred[picks[i]]
        ax.imshow(_rgb(d), interpolation="nearest")
        ok = p == d.label
        ax.set_title(f"true: {classnames[d.label]}\npred: {classnames[p]}", fontsize=7,
                     color="#1a7f37" if ok else "#cf222e")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def hard_negative_grid(anchors: Sequence, negatives: Sequence[Sequence[int]], train_items: Sequence,
                       classnames: Sequence[str], max_negatives: int = 7, size: float = 1.15) -> Figure:
    """One row per anchor image: the anchor, then one training image of each hard negative class DHNO chose for
    it (``negatives[i]``: class labels, see :func:`dpclab.lab.analysis.dhno_examples`)."""
    example = {}
    for d in train_items:
        example.setdefault(d.label, d)
    cols = 1 + min(max_negatives, max((len(n) for n in negatives), default=0))
    fig = Figure(figsize=(cols * size, len(anchors) * (size + 0.3)))
    axes = fig.subplots(len(anchors), cols, squeeze=False)
    for r, (anchor, negs) in enumerate(zip(anchors, negatives)):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            d = anchor if c == 0 else (example.get(negs[c - 1]) if c - 1 < len(negs) else None)
            if d is None:
                continue
            ax.imshow(_rgb(d), interpolation="nearest")
            label = f"anchor:\n{classnames[d.label]}" if c == 0 else f"neg {c}:\n{classnames[d.label]}"
            ax.set_title(label, fontsize=7, color="black" if c == 0 else "#cf222e")
    fig.tight_layout()
    return fig


def prompt_similarity(text_features: torch.Tensor, classnames: Sequence[str], n_base: int) -> Figure:
    """Cosine similarity between the class prompts' text features [C, E] (base classes first, then new; the
    white lines separate the ``n_base`` base classes from the new ones)."""
    text = torch.nn.functional.normalize(text_features.detach().float(), dim=-1).cpu()
    sim = (text @ text.t()).numpy()
    names = list(classnames)
    fig = Figure(figsize=(0.32 * len(names) + 2.5, 0.32 * len(names) + 1.5))
    ax = fig.subplots()
    im = ax.imshow(sim, cmap="viridis")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=7)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.axhline(n_base - 0.5, color="white", lw=1.5)
    ax.axvline(n_base - 0.5, color="white", lw=1.5)
    ax.set_title("cosine similarity of class prompt features (lines: base | new)", fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return fig


__all__ = ["image_grid", "prediction_grid", "hard_negative_grid", "prompt_similarity"]
