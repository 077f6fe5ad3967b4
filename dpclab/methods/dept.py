"""DePT (Decoupled Prompt Tuning, CVPR 2024) as a plug-in on any prompt-tuning method.

Prompt tuning on base classes fills the feature channels with *base-specific* knowledge and loses the *task-shared*
knowledge new classes need (the "channel bias", see :mod:`dpclab.lab.analysis`). DePT gives the base-specific knowledge
a place of its own: a **Channel Adjusted Transfer (CAT) head** beside the usual image-text matching (ITM) head.

* cwT layers: ``f' = gamma * f + beta`` per channel (``gamma = 1``, ``beta = 0`` at the start), one for raw image
  features and one for raw text features (before L2 normalisation);
* one linear classifier ``Linear(d -> n_base)`` (PyTorch's default init) over both transformed modalities: its
  inputs are ``cat[cwT_text(text_features[labels]), cwT_img(image_features)]`` with the labels twice.

Training loss (Eq. 7): ``lambda * CE(linear) + (1 - lambda) * CE(ITM)``, lambda = 0.7, plus whatever regulariser
the base method adds to its own CE, at the base's own weight (KgCoOp's ``W * (1 - cos)``: the reference code adds
it unscaled; ``scale_regularisers=True`` instead scales the base's whole loss by ``1 - lambda``). The head
learns at 6.5x the prompt learning rate (:meth:`DePT.param_groups`, used by :func:`dpclab.train.fit`).

Inference (Eq. 8): for classes the head was trained on, ``p = lambda * softmax(linear) + (1 - lambda) *
softmax(ITM)``; for anything else (``Task.split == "new"``, other datasets, base + new together) the ITM head
alone: the linear classifier has no row for a class it never saw, so its answer there is simply not used.
``Output.logits`` are ``log p`` (argmax and softmax as for any logits); ``extras`` hold ``itm_logits`` and,
when the head answers, ``cat_logits``.

Released-code switches (docs/fidelity.md): ``fusion="logits"`` fuses as the released code does,
``(1 - lambda) * ITM logits + lambda * linear logits`` (``fusion="probs"``, Eq. 8, is the default).
The prompt setting of the released configs (CoOp+DePT sets no context there, so CoOp's defaults apply, 16 randomly
initialised tokens) is protocol knowledge: :data:`dpclab.lab.paper_numbers.RELEASED_SETTINGS`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dpclab.methods.base import Loss, Output, Plugin, PromptMethod, Task, batch_accuracy, from_run


@dataclass
class DePTConfig:
    #: balance weight lambda of Eq. 7 (training) and Eq. 8 (inference fusion)
    lam: float = 0.7
    #: fusion weight at inference; None = ``lam`` (the paper); 0 = ITM head only, 1 = CAT head only
    lam_test: float | None = None
    #: learning rate of the CAT head as a multiple of the prompt learning rate
    head_lr_mult: float = 6.5
    #: classes of the linear classifier (the training classes; the pipeline passes it)
    n_classes: int = from_run("n_classes")
    #: False (reference code): L = lam*CE_cat + (1-lam)*CE_itm + base regularisers at their own weight;
    #: True: L = lam*CE_cat + (1-lam)*L_base (the base's regularisers scaled down too). Identical for CoOp/CoCoOp.
    scale_regularisers: bool = False
    #: base-class fusion at inference: "probs" (the paper's Eq. 8) or "logits" (the released code)
    fusion: str = "probs"

    def __post_init__(self):
        if self.fusion not in ("probs", "logits"):
            raise ValueError(f"DePT fusion must be 'probs' (the paper's Eq. 8, default) or 'logits' (the released "
                             f"code: (1-lam)*ITM + lam*linear logits), got {self.fusion!r}.")


def class_id(name: str) -> int:
    """A stable 63-bit id of a class name (the head remembers which classes its rows are, inside its state)."""
    return int.from_bytes(hashlib.sha1(name.encode()).digest()[:8], "big") >> 1


class ChannelTransform(nn.Module):
    """cwT: ``f' = gamma * f + beta`` per feature channel, starting as the identity."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        return self.gamma * f + self.beta


def fuse_log_probs(cat_logits: torch.Tensor, itm_logits: torch.Tensor, lam: float) -> torch.Tensor:
    """``log(lam * softmax(cat) + (1 - lam) * softmax(itm))``, stably; lam = 0 gives ``log_softmax(itm)`` exactly."""
    parts = [F.log_softmax(cat_logits.float(), -1), F.log_softmax(itm_logits.float(), -1)]
    weights = torch.tensor([lam, 1.0 - lam], device=itm_logits.device).log()  # log(0) = -inf drops a head
    return torch.logsumexp(torch.stack([w + p for w, p in zip(weights, parts)]), dim=0)


class DePT(Plugin):
    """``DePT(base_method, DePTConfig(n_classes=...))``: the base keeps its prompts and loss; DePT adds the CAT head."""

    #: the CAT head (channel transforms and linear classifier) is trained in float32 in every precision
    float32_parameters = ("cwt_img", "cwt_text", "head")

    def __init__(self, base: PromptMethod, cfg: DePTConfig | None = None):
        cfg = cfg or DePTConfig()
        if cfg.n_classes <= 0:
            raise ValueError("DePT needs the number of training classes for its linear head: "
                             "DePTConfig(n_classes=len(train_task.classnames)) (the pipeline passes it).")
        for name, value in (("lam", cfg.lam), ("lam_test", cfg.lam_test)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"DePTConfig.{name} must lie in [0, 1], got {value}.")
        super().__init__(base, cfg)
        device = base.clip.logit_scale.device
        dim = base.clip.text_projection.shape[-1]
        self.cwt_img = ChannelTransform(dim).to(device)
        self.cwt_text = ChannelTransform(dim).to(device)
        self.head = nn.Linear(dim, cfg.n_classes).to(device)
        # which class each head row stands for (0 = not trained yet); saved with the learned state
        self.register_buffer("head_class_ids", torch.zeros(cfg.n_classes, dtype=torch.int64, device=device))

    # ----------------------------------------------------------------- training
    def param_groups(self, lr: float) -> list[dict]:
        """The base's own groups at ``lr`` and the CAT head at ``head_lr_mult * lr``."""
        head = [*self.cwt_img.parameters(), *self.cwt_text.parameters(), *self.head.parameters()]
        return [*self.base.param_groups(lr), {"params": head, "lr": self.cfg.head_lr_mult * lr}]

    def _bind_classes(self, classnames: Sequence[str]) -> None:
        """Remember the training classes as the head's rows; training on other classes is an error."""
        if len(classnames) != self.cfg.n_classes:
            raise ValueError(f"DePT's linear head has {self.cfg.n_classes} classes but the training task has "
                             f"{len(classnames)}. Build it with n_classes=len(train_task.classnames).")
        ids = torch.tensor([class_id(c) for c in classnames], device=self.head_class_ids.device)
        if not self.head_class_ids.any():
            self.head_class_ids.copy_(ids)
        elif not torch.equal(ids, self.head_class_ids):
            raise ValueError("This DePT head was trained on other classes (or another class order); "
                             "build a fresh DePT for a new training task.")

    def cat_train_logits(self, out: Output, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Linear logits over ``cat[cwT_text(text[labels]), cwT_img(image)]`` and the labels twice."""
        txt = out.text_features
        txt = txt[torch.arange(len(y), device=y.device), y] if txt.dim() == 3 else txt[y]  # per-image prompts
        feats = torch.cat([self.cwt_text(txt.float()), self.cwt_img(out.image_features.float())])
        return self.head(feats), torch.cat([y, y])

    def loss(self, x: torch.Tensor, y: torch.Tensor, task: Task):
        """Eq. 7 through the base's contract: its forward pass once, its own ``loss_terms`` (KgCoOp's, PromptSRC's
        regularisers; none for CoOp) at their own weights, the ITM cross-entropy at ``1 - lam`` and the CAT head's at
        ``lam``. ``scale_regularisers=True`` scales the base's whole loss (CE + terms) by ``1 - lam`` instead."""
        self._bind_classes(task.classnames)
        out = self.base(x, task)
        terms = self.base.loss_terms(out, x, y, task)
        itm_ce = F.cross_entropy(out.logits.float(), y)
        regularisers = sum((w * v for w, v in terms.values()), torch.zeros((), device=itm_ce.device))
        cat_logits, cat_y = self.cat_train_logits(out, y)
        cat_ce = F.cross_entropy(cat_logits, cat_y)
        lam = self.cfg.lam
        if self.cfg.scale_regularisers:
            loss = lam * cat_ce + (1 - lam) * (itm_ce + regularisers)
        else:
            loss = lam * cat_ce + (1 - lam) * itm_ce + regularisers
        base_scale = (1 - lam) if self.cfg.scale_regularisers else 1.0
        named = {"cat": (lam, cat_ce), "itm": (1 - lam, itm_ce),
                 **{name: (base_scale * w, v) for name, (w, v) in terms.items()}}
        logs = {"loss": loss.item(), "loss_itm": itm_ce.item(), "loss_cat": cat_ce.item(),
                "loss_base": float((itm_ce + regularisers).item()),
                "acc": batch_accuracy(out.logits, y), "acc_cat": batch_accuracy(cat_logits[len(y):], y)}
        return Loss(loss, named, logs, out)

    # ---------------------------------------------------------------- inference
    def head_rows(self, task: Task) -> torch.Tensor | None:
        """Rows of the linear head for the task's classes, or None when the head must not answer:
        a ``new`` task, an untrained head, or any class the head was not trained on."""
        if task.split == "new" or not self.head_class_ids.any():
            return None
        row_of = {int(c): i for i, c in enumerate(self.head_class_ids.tolist())}
        rows = [row_of.get(class_id(c)) for c in task.classnames]
        if any(r is None for r in rows):
            return None
        return torch.tensor(rows, device=self.head_class_ids.device)

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        out = self.base(x, task)
        extras = {**out.extras, "itm_logits": out.logits}
        rows = self.head_rows(task)
        if rows is None:
            return Output(out.logits, out.image_features, out.text_features, extras)
        cat_logits = self.head(self.cwt_img(out.image_features.float()))[:, rows]
        lam = self.cfg.lam if self.cfg.lam_test is None else self.cfg.lam_test
        extras["cat_logits"] = cat_logits
        if self.cfg.fusion == "logits":  # the released code (trainers/elp_coop.py)
            fused = (1 - lam) * out.logits.float() + lam * cat_logits
        else:
            fused = fuse_log_probs(cat_logits, out.logits, lam)
        return Output(fused, out.image_features, out.text_features, extras)
