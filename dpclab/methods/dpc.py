"""DPC, Dual-Prompt Collaboration (CVPR 2025): a plug-in on top of any tuned prompt learner (docs/protocol.md#dpc).

Step 1 tunes the base method as usual and gives the prompt ``P``. Step 2 (this module):

* **Dual prompts.** ``P`` is frozen; a parallel prompt ``P'`` starts as a clone of ``P`` and is the only thing
  trained. "Prompt" means *every* trainable tensor of the base method (CoOp's context, MaPLe's and PromptSRC's
  deep text/vision prompts and projections ...): the base method runs unchanged with swapped-in tensors through
  :func:`torch.func.functional_call`, so DPC never needs to know how the base builds its prompts.
* **DHNO** (Dynamic Hard Negative Optimizer). For every anchor image the frozen ``P`` model ranks the base classes;
  its top-K wrong guesses that are not yet in the batch become hard negatives (random classes fill up to
  ``min_negatives``), and one training image of each negative class joins the batch. The loss is a symmetric
  InfoNCE between the batch's images and its classes' text features (all base-class text features are L2-normalised
  first, then the batch's rows are selected: the "feature filter"), scaled by CLIP's frozen logit scale.
* **Weighted decoupling** at inference. Prompt tensors are mixed *before* the text encoder:
  base classes use ``ω_b·P' + (1-ω_b)·P``, new classes ``ω_n·P' + (1-ω_n)·P``; ``ω_n = 0`` leaves new-class
  predictions exactly those of the step-1 model.

Three modes (``DPCConfig.mode``), all documented because they give different numbers (docs/fidelity.md):

``"paper"`` (the default)
    The paper's formula. The trainable tensor is ``P'`` itself; base inference uses the mix
    ``ω_b·P' + (1-ω_b)·P``.
``"reparam"``
    The reparameterisation the released code *intends*: the trainable tensor is the mix ``M = ω_b·P' + (1-ω_b)·P``
    (initialised to ``P``); the forward pass decodes ``P' = (M - (1-ω_b)·P) / ω_b`` and base inference uses that
    ``P'`` (no mix). A gradient step of size ``lr`` on ``M`` moves ``P'`` by ``lr/ω_b²`` times its own gradient
    (×25 at ω_b = 0.2). Exactly: with momentum μ and weight decay λ, SGD(lr, μ, λ) on ``M`` equals SGD(lr/ω_b², μ,
    no decay) on ``P'`` with the extra loss ``(λ·ω_b²/2)·‖P' + (1-ω_b)/ω_b·P‖²`` (the decay pulls ``M``, not ``P'``,
    to zero). With λ = 0 it is plain SGD(lr/ω_b², μ) on ``P'``. (Called ``"reference"`` before; that name is refused
    with a hint, since it is *not* what the released code runs.)
``"released"``
    What the released code (JREion/DPC, ``trainers/sple_coop.py``) actually runs. Its ``P`` is stored in the same
    tensor as ``M`` (``nn.Parameter`` shares storage), so every update of ``M`` also moves ``P`` and the decode
    ``(M - (1-ω_b)·P)/ω_b`` always returns ``M``, while its gradient is still ``1/ω_b`` times that of ``P'`` (``P``
    is a constant to autograd). Emulated here exactly so: ``P' = (M - (1-ω_b)·sg(M))/ω_b`` with ``sg`` = detach.
    Net effect: **SGD on P' = M at lr/ω_b with weight decay ω_b·λ** (momentum unchanged), base inference uses
    ``P'``, new classes the step-1 ``P``; the ω_b "sweep" of the released code is therefore a learning-rate sweep
    (ω_b = 1 -> lr, 0.2 -> 5·lr, 0.1 -> 10·lr). Its InfoNCE keeps one text row per image, duplicates included, with
    ``arange`` targets (:func:`duplicate_row_infonce`); the other modes merge a class repeated in a batch into one
    row with soft targets (:func:`symmetric_infonce`). ``tests/test_fidelity_modes.py`` checks all three claims.
    Its batches are built by the released sampler (:func:`sample_negative_classes` with ``rule="released"``: all
    top-K candidates when the true class is outside them, random fill from classes 1..n-2 that gives up after n-2
    draws); ``tests/test_dpc_batches.py`` checks it on hand-worked examples.

In every mode step 2 sees **fresh augmentations** of anchors and negatives (views from :data:`STEP2_FIRST_VIEW` on),
never the crops step 1 trained on, as the released code augments every image it loads (docs/fidelity.md, D4). In
``"released"`` mode every hard-negative *draw* is cropped afresh, as the released code reads and transforms each drawn
image anew (``sple_coop.py`` l.393, l.614-617): a view per epoch and draw (:func:`draw_view_seed`; features-kind bases
encode that crop with the frozen image encoder), while the anchor keeps its batch's view; the other modes read each
image's step-2 view of the epoch for all its uses (same distribution, fewer encoder passes).

Ablation switches (the paper's Table 4): ``loss="ce"`` (cross-entropy over all base classes instead of InfoNCE),
``negatives="random"`` (random instead of hard negative classes), ``decouple=False`` (new classes use the base
prompt too). A task with ``split="all"`` (every class of a dataset evaluated together: the source of cross-dataset
transfer and domain generalisation, the domain-generalisation targets) uses the new-class rule, the prompt that
generalises, except on ImageNet, where it uses the base rule: the released code's ``load_model`` (``sple_coop.py``
l.689) loads the ω_n prompt for ``"new"`` and for ``"all"`` on every dataset but ImageNet (:data:`ALL_SPLIT_BASE_RULE`);
:mod:`dpclab.omega` routes images automatically instead.
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from dpclab.data.features import ImageList
from dpclab.diagnostics import dpc_diagnostics
from dpclab.methods.base import (Loss, Output, Plugin, PromptMethod, Task, batch_accuracy, cosine_logits,
                                 trainable_parameters)

MODES = ("paper", "reparam", "released")
#: datasets whose ``split="all"`` task takes the base-class rule (ω_b) rather than the new-class one: the released
#: code's exception (``sple_coop.py`` l.689: ``base2new == "all" and DATASET.NAME != "ImageNet"`` loads the ω_n prompt),
#: ImageNet being the source its cross-dataset and domain-generalisation runs train on
ALL_SPLIT_BASE_RULE = ("imagenet",)


def check_omega(value: float, name: str = "omega") -> float:
    """ω must lie in [0, 1]: it is the weight of ``P'`` in a convex mix with ``P``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"{name} must be a number in [0, 1] (the weight of the DPC prompt P' in the mix "
                         f"w*P' + (1-w)*P), got {value!r}.")
    return float(value)


@dataclass
class DPCConfig:
    #: weight of P' for base classes at inference ("paper") / of the reparameterisation ("reparam", "released")
    omega_b: float = 0.2
    #: weight of P' for new classes (0: new classes see exactly the step-1 model)
    omega_n: float = 0.0
    #: "paper" (train P', infer base with the mix), "reparam" (train the mix M, infer with P': lr/ω_b²) or
    #: "released" (what the released code runs: P' = M at lr/ω_b, decay ω_b·λ, duplicate-row InfoNCE); see above
    mode: str = "paper"
    #: the frozen model's top-K classes per anchor from which hard negatives are taken (true class dropped)
    top_k: int = 8
    #: fill with random classes up to this many negatives per anchor (while unused classes remain)
    min_negatives: int = 2
    #: "hard" (DHNO) or "random" negative classes (ablation)
    negatives: str = "hard"
    #: "infonce" (symmetric, DHNO) or "ce" (cross-entropy over all training classes; ablation)
    loss: str = "infonce"
    #: False: new classes use the base-class prompt as well (ablation "no decoupling")
    decouple: bool = True
    #: "copy": P' starts as P; "random": the base's deep prompts (``base.deep_prompt_names()``) start N(0, 0.02) in
    #: P', as the released PromptKD+DPC code leaves them (docs/fidelity.md K3)
    prime_deep_init: str = "copy"

    def __post_init__(self):
        check_omega(self.omega_b, "omega_b")
        check_omega(self.omega_n, "omega_n")
        if self.mode == "reference":
            raise ValueError("DPC mode='reference' was renamed: use mode='reparam' for what it computed (the intended "
                             "reparameterisation, P' at lr/omega_b**2) or mode='released' for what the released "
                             "code runs (P' = M at lr/omega_b, weight decay omega_b*lambda).")
        if self.mode not in MODES:
            raise ValueError(f"DPC mode must be one of {MODES}, got {self.mode!r}.")
        if self.mode != "paper" and self.omega_b == 0:
            raise ValueError(f"DPC mode={self.mode!r} decodes P' = (M - (1-omega_b)·P)/omega_b and needs "
                             f"omega_b > 0; use mode='paper' for omega_b = 0.")
        if self.negatives not in ("hard", "random"):
            raise ValueError(f"negatives must be 'hard' or 'random', got {self.negatives!r}.")
        if self.loss not in ("infonce", "ce"):
            raise ValueError(f"loss must be 'infonce' or 'ce', got {self.loss!r}.")
        if self.top_k < 2:
            raise ValueError(f"top_k must be >= 2 (the true class plus at least one candidate), got {self.top_k}.")
        if self.min_negatives < 0:
            raise ValueError(f"min_negatives must be >= 0, got {self.min_negatives}.")
        if self.prime_deep_init not in ("copy", "random"):
            raise ValueError(f"prime_deep_init must be 'copy' or 'random', got {self.prime_deep_init!r}.")


# --------------------------------------------------------------------------------------------------------------
# DHNO pieces: pure functions, tested on their own


#: how the negatives of an anchor are completed: "uniform" (dpclab: top-K minus the true class capped at K-1, random
#: fill uniform over the unused classes) or "released" (JREion/DPC ``sple_coop.py``; see :func:`released_fill`)
FILL_RULES = ("uniform", "released")


def sample_negative_classes(anchor_labels: Sequence[int], scores: torch.Tensor | None, n_classes: int,
                            top_k: int, min_negatives: int, generator: torch.Generator, rule: str = "uniform",
                            draw: Callable[[int, int], int] | None = None) -> list[list[int]]:
    """Negative classes for each anchor of one batch (DHNO's negative sampler).

    ``scores`` [B, C] are the frozen model's logits (any monotone score: only the ranking is used); ``None`` draws
    the candidate classes at random instead (ablation). Per anchor, in batch order: take its ``top_k`` classes,
    drop the true class, drop classes already in the batch (all anchors' classes are in it from the start), then
    fill up to ``min_negatives`` with random classes not in the batch. A class therefore never appears twice among
    the negatives nor coincides with an anchor's class; when the unused classes run out an anchor gets fewer
    negatives, as in the released code.

    ``rule="uniform"`` (modes ``paper`` and ``reparam``): at most ``top_k - 1`` candidates, the fill drawn uniformly
    from all unused classes. ``rule="released"`` (mode ``released``), as JREion/DPC ``sple_coop.py`` builds batches:
    all ``top_k`` candidates are kept when the true class is not among them (its cap tests the still-empty list of
    kept negatives, line 556), and the fill is :func:`released_fill` (classes 1 .. n-2 only, gives up after n-2
    draws). ``draw(lo, hi)`` returns a random integer in ``[lo, hi]`` (default: from ``generator``; tests script it).
    """
    if rule not in FILL_RULES:
        raise ValueError(f"rule must be one of {FILL_RULES}, got {rule!r}.")
    if draw is None:
        def draw(lo: int, hi: int) -> int:
            return int(torch.randint(lo, hi + 1, (1,), generator=generator))
    in_batch = set(int(y) for y in anchor_labels)
    k = min(top_k, n_classes)
    out: list[list[int]] = []
    for b, y in enumerate(int(v) for v in anchor_labels):
        if scores is not None:
            ranked = scores[b].topk(k).indices.tolist()
        else:
            ranked = torch.randperm(n_classes, generator=generator)[:k].tolist()
        candidates = [c for c in ranked if c != y]
        if rule == "uniform":
            candidates = candidates[:top_k - 1]
        negs = [c for c in candidates if c not in in_batch]
        in_batch.update(negs)
        if len(negs) < min_negatives:
            if rule == "released":
                fill = released_fill(in_batch, n_classes, min_negatives - len(negs), draw)
            else:
                pool = [c for c in range(n_classes) if c not in in_batch]
                order = torch.randperm(len(pool), generator=generator).tolist()
                fill = [pool[i] for i in order[:min_negatives - len(negs)]]
            negs += fill
            in_batch.update(fill)
        out.append(negs)
    return out


def released_fill(in_batch: set[int], n_classes: int, wanted: int, draw: Callable[[int, int], int]) -> list[int]:
    """The released code's random fill (``sple_coop.py:566-576``): ``n_classes - 2`` draws of ``randint(1, n-2)``
    (class 0 and the last class are never drawn); a drawn class joins unless it is already in the batch (or was
    drawn before), until ``wanted`` have joined; the draw after that ends the loop. After ``n - 2`` draws it gives
    up, even with fewer than ``wanted`` classes. ``in_batch`` is not modified."""
    taken: list[int] = []
    seen = set(in_batch)
    for _ in range(max(n_classes - 2, 0)):
        c = draw(1, n_classes - 2)
        if len(taken) >= wanted:
            break
        if c not in seen:
            taken.append(c)
            seen.add(c)
    return taken


def pick_one_per_class(labels: torch.Tensor, classes: Sequence[int], generator: torch.Generator) -> torch.Tensor:
    """One random training example index for each class in ``classes``."""
    picks = []
    for c in classes:
        members = (labels == c).nonzero().flatten()
        if len(members) == 0:
            raise ValueError(f"DPC needs at least one training image of every class; class {c} has none.")
        picks.append(members[torch.randint(len(members), (1,), generator=generator)])
    return torch.cat(picks) if picks else torch.empty(0, dtype=torch.long)


def symmetric_infonce(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                      scale: torch.Tensor) -> torch.Tensor:
    """½[CE(s·I·Tᵀ) + CE(s·T·Iᵀ)] between a batch of images and its classes (DHNO's loss).

    ``text_features`` [C, E] are the raw features of *all* training classes; they are L2-normalised first and the
    batch's classes selected afterwards (the feature filter). When every class occurs once in the batch this is
    exactly CLIP's loss with targets ``arange(N)``. If two anchors share a class (possible: anchors are drawn at
    random), that class's text row counts all its images as positives (soft targets) instead of treating
    same-class images as negatives.
    """
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    classes, inverse = torch.unique(labels, return_inverse=True)
    logits = scale * img @ txt[classes].t()  # [N, U]
    image_to_text = F.cross_entropy(logits, inverse)
    positives = F.one_hot(inverse, len(classes)).t().to(logits.dtype)  # [U, N]
    text_to_image = F.cross_entropy(logits.t(), positives / positives.sum(1, keepdim=True))
    return (image_to_text + text_to_image) / 2


def duplicate_row_infonce(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                          scale: torch.Tensor) -> torch.Tensor:
    """The released code's DHNO loss: one text row per image (``txt[labels]``, a class repeated in the batch gives
    repeated rows) and ``arange`` targets both ways, ½[CE(s·I·Tᵀ, arange) + CE(s·T·Iᵀ, arange)]. Equal to
    :func:`symmetric_infonce` when every class occurs once."""
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)[labels]
    logits = scale * img @ txt.t()
    target = torch.arange(len(labels), device=logits.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2


def _is_running_stat(module: nn.Module, buffer_name: str) -> bool:
    """Whether a buffer is a running statistic of a normalisation layer (BatchNorm's mean, var, batch count)."""
    owner, _, leaf = buffer_name.rpartition(".")
    layer = module.get_submodule(owner) if owner else module
    return isinstance(layer, nn.modules.batchnorm._NormBase) and leaf in ("running_mean", "running_var",
                                                                           "num_batches_tracked")


# --------------------------------------------------------------------------------------------------------------


def draw_view_seed(seed: int, epoch: int, draw: int) -> int:
    """The view seed of ``mode="released"``'s hard-negative draw ``draw`` (0, 1, ... within the epoch) of step-2
    epoch ``epoch``: a crop of its own, apart from every numbered view (``seed * 7919 + view``, views < 2**40)."""
    return 2**40 + (seed * 100_003 + epoch) * 10_000_019 + draw


#: step 2's first augmented view. Step 1 of any protocol reads views 0 .. epochs-1 (200 for CoOp); step 2 starts
#: far above, so its anchors and negatives are never the crops P was trained on (docs/fidelity.md, D4)
STEP2_FIRST_VIEW = 100_000


def step2_view(epoch: int, cfg) -> int:
    """The augmented view step-2 epoch ``epoch`` reads: ``STEP2_FIRST_VIEW + epoch % cfg.views()``."""
    return STEP2_FIRST_VIEW + epoch % cfg.views()


class DPC(Plugin):
    """``DPC(base_method, config)``: dual prompts on top of a *tuned* base method (its trainable tensors are P).

    After construction the base's tensors are frozen and ``self.prompt`` (P' in "paper" mode, the mix M in
    "reparam" and "released" modes) is the only trainable parameter. ``forward(x, task)`` picks ω from ``task.split``;
    :meth:`forward_at` runs any ω.
    """

    def __init__(self, base: PromptMethod, cfg: DPCConfig | None = None):
        own = trainable_parameters(base)
        if not own:
            raise ValueError(f"{type(base).__name__} has no trainable tensors for DPC to duplicate: DPC wraps a "
                             f"tuned prompt learner (e.g. CoOp), not zero-shot CLIP, and a method object can be "
                             f"wrapped only once (build a fresh one and load its step-1 state).")
        super().__init__(base, cfg or DPCConfig())
        #: names of the base method's prompt tensors (P), e.g. ["ctx"]
        self.prompt_names = list(own)
        self._keys = {n: n.replace(".", "/") for n in self.prompt_names}  # ParameterDict keys cannot hold "."
        for p in own.values():
            p.requires_grad_(False)
        # P' = P at the start; in the reparam/released modes M = ω_b·P + (1-ω_b)·P = P as well
        start = {n: p.detach().clone() for n, p in own.items()}
        if self.cfg.prime_deep_init == "random":  # the released PromptKD+DPC: P''s deep prompts stay random
            for n in base.deep_prompt_names():
                fresh = torch.randn(start[n].shape) * 0.02
                w = 1.0 if self.cfg.mode != "reparam" else self.cfg.omega_b  # reparam trains M = ω_b·P' + (1-ω_b)·P
                start[n] = (w * fresh.to(start[n]) + (1 - w) * start[n]).to(start[n].dtype)
        self.prompt = nn.ParameterDict({self._keys[n]: nn.Parameter(t) for n, t in start.items()})
        # running statistics of the base's normalisation layers (PromptKD's projector BatchNorm): P' keeps its own
        # copy (updated in step 2), P's stay as step 1 left them, so ω_n = 0 still gives the step-1 model exactly
        self.stat_names = [n for n, b in base.named_buffers() if _is_running_stat(base, n)]
        self._stat_keys = {n: "stat_" + n.replace(".", "_") for n in self.stat_names}
        for n in self.stat_names:
            self.register_buffer(self._stat_keys[n], base.get_buffer(n).detach().clone())
        self._frozen_text: dict[tuple, torch.Tensor | None] = {}

    # ---- the two prompts -------------------------------------------------------------------------------------

    def frozen(self) -> dict[str, torch.Tensor]:
        """P: the step-1 tensors, by the base method's own parameter names."""
        return {n: self.base.get_parameter(n) for n in self.prompt_names}

    def prime(self) -> dict[str, torch.Tensor]:
        """P': the trained parallel prompt (decoded from the trained mix M in the "reparam" and "released" modes;
        "released" decodes with its aliased P = M, so P' has M's value and 1/ω_b of its gradient)."""
        trained = {n: self.prompt[self._keys[n]] for n in self.prompt_names}
        if self.cfg.mode == "paper":
            return trained
        w = self.cfg.omega_b
        frozen = ({n: t.detach() for n, t in trained.items()} if self.cfg.mode == "released" else self.frozen())
        return {n: (trained[n] - (1 - w) * frozen[n]) / w for n in self.prompt_names}

    @property
    def base_omega(self) -> float:
        """Weight of P' used for base classes at inference: ω_b ("paper") or 1, P' itself ("reparam", "released")."""
        return self.cfg.omega_b if self.cfg.mode == "paper" else 1.0

    def omega_for(self, split: str, dataset: str = "") -> float:
        """ω of a task's ``split`` (and ``dataset``, for the "all" split: :data:`ALL_SPLIT_BASE_RULE`)."""
        if split == "base" or not self.cfg.decouple or (split == "all" and dataset in ALL_SPLIT_BASE_RULE):
            return self.base_omega
        return self.cfg.omega_n

    def prime_stats(self) -> dict[str, torch.Tensor]:
        """P''s own running statistics of the base's normalisation layers (empty for prompt-only bases)."""
        return {n: getattr(self, self._stat_keys[n]) for n in self.stat_names}

    def mixed(self, omega: float) -> dict[str, torch.Tensor]:
        """``ω·P' + (1-ω)·P`` for every prompt tensor (ω = 0 and 1 return P and P' exactly); running statistics
        of normalisation layers mix the same way (counters are P''s)."""
        omega = check_omega(omega)
        if omega == 0:
            return self.frozen()
        prime = {**self.prime(), **self.prime_stats()}
        if omega == 1:
            return prime
        frozen = {**self.frozen(), **{n: self.base.get_buffer(n) for n in self.stat_names}}
        return {n: omega * v + (1 - omega) * frozen[n] if v.is_floating_point() else v for n, v in prime.items()}

    # ---- forward -----------------------------------------------------------------------------------------------

    def forward_at(self, x: torch.Tensor, task: Task, omega: float) -> Output:
        """The base method with prompt tensors ``ω·P' + (1-ω)·P`` (ω = 0 is the step-1 model itself)."""
        if check_omega(omega) == 0:
            out = self.base(x, task)
        else:
            out = functional_call(self.base, self.mixed(omega), (x, task))
        out.extras["omega"] = omega
        return out

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        return self.forward_at(x, task, self.omega_for(task.split, task.name))

    # ---- DHNO ------------------------------------------------------------------------------------------------

    @torch.no_grad()
    def frozen_logits(self, x: torch.Tensor, task: Task) -> torch.Tensor:
        """Logits of the frozen step-1 model (the negative sampler's scores), or the base's own
        ``hard_negative_scores(x, task)`` where it has one (PromptKD: its teacher scores, as released). For
        features-kind bases with class-level text features these are cached per class list (P never changes)."""
        scores = self.base.hard_negative_scores(x, task)
        if scores is not None:
            return scores
        if self.input_kind == "features":
            key = (task.classnames, task.template, tuple(p._version for p in self.frozen().values()))
            if key not in self._frozen_text:
                txt = self.base(x[:1], task).text_features
                self._frozen_text = {key: txt if txt.dim() == 2 else None}
            txt = self._frozen_text[key]
            if txt is not None:
                return cosine_logits(x, txt, self.clip.logit_scale.exp())
        return self.base(x, task).logits

    def on_epoch_end(self, epoch: int, cfg) -> None:
        """Nothing: step 2 trains P' alone; the base's end-of-epoch work (e.g. PromptSRC's aggregation of its own
        trainable tensors) belonged to step 1."""

    def step(self, loss: Loss, optimizer, scaler) -> None:
        """The plain SGD step on P': a base's own update rule (if it has one) belonged to step 1."""
        PromptMethod.step(self, loss, optimizer, scaler)

    def selection(self) -> str:
        """The last epoch: a base's epoch selection (PromptKD's ``select``) belonged to step 1."""
        return "last"

    def diagnostics(self, experiment) -> dict[str, float]:
        """What step 2 changed (:func:`dpclab.diagnostics.dpc_diagnostics`): the benchmark's DPC columns."""
        return dpc_diagnostics(experiment, self)

    def batches(self, data, epoch: int, cfg, generator: torch.Generator) -> Iterator[tuple]:
        """DHNO batches: ``[anchor_1, its negatives, anchor_2, its negatives, ...]`` with their labels.

        Anchors are the usual shuffled batches. Every image (anchor or negative) is seen in a **fresh** augmented view
        that step 1 never trained on, as the released code augments every image it loads afresh: step-2 epoch ``e``
        reads view :func:`step2_view` ``(e, cfg)`` = ``STEP2_FIRST_VIEW + e % views`` (features-kind bases: one cached
        view, i.e. one image-encoder pass over the shots per new view; pixel bases: the transform seeded as that
        view), while step 1's epoch ``e`` read view ``e % views`` < ``STEP2_FIRST_VIEW``. All randomness comes from
        ``generator``, so a resumed run rebuilds the same batches.
        """
        task = data.task
        if task is None:
            raise ValueError("DPC's hard-negative batches need to know the training classes: pass Examples with "
                             "task=... (dpclab.train.fit does this).")
        take = data.take(step2_view(epoch, cfg), cfg)  # a fresh view: never one step 1 trained on
        negatives = self.released_crops(data, epoch, cfg) if self.cfg.mode == "released" else None
        for anchors in data.index_batches(cfg.batch_size, generator):
            x, y, _ = self.build_batch(take(anchors), data.labels[anchors], data.labels, negatives or take, task,
                                       generator)
            yield x, y

    def released_crops(self, data, epoch: int, cfg) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """``take(idx)`` for ``mode="released"``'s hard negatives: every call is a new draw, each image cropped afresh
        by the training transform seeded by :func:`draw_view_seed` ``(seed, epoch, draw)`` (features-kind data: that
        crop through the frozen image encoder, as the cached views are made). ``None`` for data without images
        (features given directly): the negatives then read the epoch's view."""

        if data.items is None or data.transform is None:
            return None
        images = ImageList(data.items, data.transform)
        draws = iter(range(2**62))
        device = next(self.clip.parameters()).device

        def take(idx: torch.Tensor) -> torch.Tensor:
            crops = []
            for i in idx:
                images.view_seed = draw_view_seed(cfg.seed, epoch, next(draws))
                crops.append(images[int(i)][0])
            x = torch.stack(crops)
            if data.features is None:
                return x
            with torch.no_grad():
                dtype = self.clip.visual.conv1.weight.dtype if hasattr(self.clip.visual, "conv1") else x.dtype
                return self.clip.encode_image(x.to(device, dtype)).float().cpu()

        return take

    def build_batch(self, x_anchor: torch.Tensor, y_anchor: torch.Tensor, labels: torch.Tensor, take,
                    task: Task, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, list[list[int]]]:
        """One DHNO batch from its anchors: ``(x, y, negative classes per anchor)``. ``take(idx)`` returns the
        inputs of training examples ``idx`` (cast to the anchors' dtype); ``labels`` are all training labels (to find
        images of a class)."""
        scores = None
        if self.cfg.negatives == "hard":
            device = next(self.clip.parameters()).device
            was_training = self.base.training
            self.base.eval()
            scores = self.frozen_logits(x_anchor.to(device), task).cpu()
            self.base.train(was_training)
        rule = "released" if self.cfg.mode == "released" else "uniform"
        negatives = sample_negative_classes(y_anchor.tolist(), scores, len(task.classnames), self.cfg.top_k,
                                            self.cfg.min_negatives, generator, rule=rule)
        xs, ys = [], []
        for i, negs in enumerate(negatives):
            idx = pick_one_per_class(labels, negs, generator)
            xs.append(x_anchor[i:i + 1])
            ys.append(y_anchor[i:i + 1])
            if len(idx):
                xs.append(take(idx).to(x_anchor.dtype))
                ys.append(labels[idx])
        return torch.cat(xs), torch.cat(ys), negatives

    def loss(self, x: torch.Tensor, y: torch.Tensor, task: Task):
        """Training uses P' alone (the mix is an inference-time rule)."""
        prime = {**self.prime(), **self.prime_stats()}  # train-mode BatchNorm updates P''s statistics only
        out = functional_call(self.base, prime, (x, task))
        if out.text_features.dim() != 2:
            raise NotImplementedError("DPC's InfoNCE needs class-level text features; per-image prompts "
                                      "(CoCoOp) are not supported.")
        infonce = duplicate_row_infonce if self.cfg.mode == "released" else symmetric_infonce
        if self.cfg.loss == "ce":
            loss = F.cross_entropy(out.logits, y)
        else:
            loss = infonce(out.image_features, out.text_features, y, self.clip.logit_scale.exp())
        name = "ce" if self.cfg.loss == "ce" else "infonce"
        return Loss(loss, {name: (1.0, loss)}, {"loss": loss.item(), "acc": batch_accuracy(out.logits, y),
                                                "batch_images": float(len(y))}, out)


__all__ = ["DPC", "DPCConfig", "MODES", "FILL_RULES", "STEP2_FIRST_VIEW", "ALL_SPLIT_BASE_RULE", "check_omega",
           "sample_negative_classes", "released_fill", "step2_view", "draw_view_seed", "pick_one_per_class",
           "symmetric_infonce", "duplicate_row_infonce"]
