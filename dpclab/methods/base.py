"""The one contract every method follows: :class:`PromptMethod`, and :class:`Plugin` for methods that wrap one.

A method is a :class:`PromptMethod`: an ``nn.Module`` holding the frozen CLIP as ``self.clip`` (and its tokenizer)
plus its own trainable parameters (the only parameters with ``requires_grad``). It declares

* ``input_kind``: ``"features"`` when it consumes frozen image features (cached once, see ``data.features``) or
  ``"pixels"`` when it runs the image encoder itself (vision prompts). A class attribute; a method whose kind
  depends on its configuration (MaPLe without vision prompts) passes it to the constructor, once;
* ``forward(x, task) -> Output``: by default ``image_features(x)`` and ``task_text_features(task, image)`` scored
  by cosine similarity at CLIP's logit scale; a method usually defines only these two feature functions;
* ``loss(x, y, task) -> Loss``: cross-entropy plus the method's own weighted ``loss_terms``, returned as a
  :class:`Loss`: the total, **every named, weighted term** it is made of (``{"ce": (1.0, ce), "kg": (8.0, kg)}``),
  the logs and the forward pass;
* the training hooks :func:`dpclab.train.fit` calls on every method: ``param_groups(lr)``,
  ``batches(data, epoch, cfg, generator)``, ``step(loss, optimizer, scaler)`` (``loss`` is the :class:`Loss`, terms
  included) and ``on_epoch_end(epoch, cfg)`` (defaults: one group at ``lr``, the plain shuffled batches, the plain
  SGD step on ``loss.total``, nothing). A method that changes the *update* (gradient projection such as ProGrad)
  overrides ``step`` and reads the terms it needs from ``loss.terms``, never from state stashed on ``self``;
* the optional hooks, each with a default here: ``hard_negative_scores(x, task)`` (None: DPC ranks with the frozen
  model), ``deep_prompt_names()`` (none), ``selection()`` (``"last"`` epoch; ``"best_base"`` keeps the best
  base-test epoch, :mod:`dpclab.selection`) and ``diagnostics(experiment) -> dict`` after a run (none): extra numbers a
  benchmark row shows for the method (DPC: what step 2 changed), so no caller needs to know which method it ran.

Nothing outside a method asks whether it has an attribute: every hook above exists on every method.

DPC and DePT are :class:`Plugin` s: they wrap any such method as ``self.base`` and share its CLIP, tokenizer and
input kind, and use the base only through this contract (``forward``, ``loss_terms``, the hooks). :class:`Plugin`
forwards every hook and ``loss_terms`` to the base by default, so a plug-in keeps the base's terms unless it says
otherwise (``tests/test_contract.py`` fails for a joint plug-in whose loss drops one).
``torch.func.functional_call`` lets DPC run a method with swapped-in (mixed) prompt tensors without the method
knowing. The shared prompt pieces (context init, class-token cache, prompt assembly, deep prompts)
live in :mod:`dpclab.methods.prompts`.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from dpclab.data.items import Task
from dpclab.trainconfig import TrainConfig

if TYPE_CHECKING:  # the data a method is fed: used in annotations only
    from dpclab.data.examples import Examples

INPUT_KINDS = ("features", "pixels")
#: the epochs a run can keep (:meth:`PromptMethod.selection`)
SELECTIONS = ("last", "best_base")
#: the metadata key of a config field filled from the run (:func:`from_run`)
RUN_VALUE = "from_run"
#: the run values a config field can ask for: the number of training classes
RUN_VALUES = ("n_classes",)


def from_run(value: str, default=0):
    """A config field filled from the run when the overrides leave it unset: ``n_classes: int = from_run("n_classes")``
    (the number of training classes; :meth:`dpclab.methods.MethodSpec.build` passes it). Any field name works."""
    if value not in RUN_VALUES:
        raise ValueError(f"from_run({value!r}): a run provides {RUN_VALUES}.")
    return field(default=default, metadata={RUN_VALUE: value})


@dataclass
class Output:
    """What a method's forward pass returns."""

    #: [B, C] = exp(logit_scale) * cos(image, class text); DePT: log-probabilities of its fused heads
    logits: torch.Tensor
    #: [B, E] raw (unnormalised) image features
    image_features: torch.Tensor
    #: [C, E] raw class text features, or [B, C, E] for per-image prompts (CoCoOp)
    text_features: torch.Tensor
    #: anything else a method returns (DePT's head logits, DPC's omega)
    extras: dict = field(default_factory=dict)


@dataclass
class Loss:
    """What a method's ``loss`` returns, and what its ``step`` receives. It unpacks as ``total, logs``."""

    #: the scalar to minimise: the sum of ``weight * value`` over :attr:`terms`, computed by the method
    total: torch.Tensor
    #: every named term of the total, ``{name: (weight, value)}`` in the order added (``"ce"`` for cross-entropy); a
    #: term of weight 0 is one the update reads (ProGrad's guide) but the total does not add
    terms: dict
    #: the batch's numbers for the history (floats): ``loss``, the terms unweighted, ``acc`` ...
    logs: dict
    #: the forward pass the loss was computed on
    output: Output | None = None

    def __iter__(self):
        return iter((self.total, self.logs))

    def __getitem__(self, i):
        return (self.total, self.logs)[i]


def weighted_sum(terms: dict) -> torch.Tensor:
    """``sum(weight * value)`` over ``{name: (weight, value)}``, in order (what a :class:`Loss`'s total is)."""
    values = iter(terms.values())
    weight, value = next(values)
    total = weight * value
    for weight, value in values:
        total = total + weight * value
    return total


def cosine_logits(image_features: torch.Tensor, text_features: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    img = F.normalize(image_features, dim=-1)
    txt = F.normalize(text_features, dim=-1)
    if img.dtype != txt.dtype:  # precision fp16: half image features meet float (zero-shot) text features
        dtype = torch.promote_types(img.dtype, txt.dtype)
        img, txt = img.to(dtype), txt.to(dtype)
    if txt.dim() == 3:  # per-image class features (CoCoOp)
        return scale * torch.einsum("be,bce->bc", img, txt)
    return scale * img @ txt.t()


def learned_state(method: nn.Module) -> dict[str, torch.Tensor]:
    """Everything of a method that is not the frozen CLIP (what a checkpoint stores).

    The CLIP is recognised by identity, not by name, so a plug-in that wraps a method (its CLIP then sits at
    ``base.clip``) stores only what it and its base learned."""
    frozen = {id(t) for t in (*method.clip.parameters(), *method.clip.buffers())}
    return {k: v.detach().clone() for k, v in method.state_dict(keep_vars=True).items() if id(v) not in frozen}


def load_learned_state(method: nn.Module, state: dict[str, torch.Tensor], source: str = "checkpoint") -> None:
    """Load :func:`learned_state` output; a checkpoint of another method/model/class count fails with a clear error."""
    own = learned_state(method)
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        detail = "; ".join(
            s for s in [f"missing {missing[:5]}" if missing else "", f"unexpected {unexpected[:5]}" if unexpected else "",
                        "shape mismatch " + ", ".join(f"{k}: {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                                                      for k in wrong[:5]) if wrong else ""] if s)
        raise ValueError(f"{source} does not fit this {type(method).__name__} ({detail}). It was made for another "
                         f"method, backbone, prompt length or class count; pass the matching settings.")
    method.load_state_dict(state, strict=False)


def trainable_parameters(method: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in method.named_parameters() if p.requires_grad}


def freeze_clip(clip: nn.Module) -> nn.Module:
    clip.eval().requires_grad_(False)
    return clip


def image_features_of(clip: nn.Module, x: torch.Tensor, input_kind: str) -> torch.Tensor:
    """Cached features pass through; pixels go through the frozen image encoder."""
    if input_kind == "features":
        return x
    return clip.encode_image(x)


#: results computed from the frozen CLIP alone, per CLIP object (weakly held: they go with the model)
_FROZEN_RESULTS: "weakref.WeakKeyDictionary[nn.Module, dict]" = weakref.WeakKeyDictionary()


def frozen_result(clip: nn.Module, key: tuple, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
    """``compute()`` once per ``(clip, key)``: zero-shot text features of fixed templates (KgCoOp's and PromptSRC's
    anchors, zero-shot classifiers) are shared by every method on the same CLIP. The CLIP is frozen, so they never
    go stale; its device and dtype are part of the key."""
    weight = clip.token_embedding.weight
    per_clip = _FROZEN_RESULTS.setdefault(clip, {})
    key = (*key, str(weight.device), weight.dtype)
    if key not in per_clip:
        per_clip[key] = compute()
    return per_clip[key]


def classnames_key(classnames: Sequence[str]) -> tuple[str, ...]:
    return tuple(classnames)


def batch_accuracy(logits: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of a batch classified correctly (the ``acc`` entry of training logs)."""
    return (logits.argmax(-1) == y).float().mean().item()


class PromptMethod(nn.Module):
    """Base class of every method (see the module docstring for the contract).

    ``PromptMethod(clip, tokenizer, cfg, input_kind=None)`` freezes ``clip`` and stores it, the tokenizer and the
    method's config dataclass. ``input_kind`` defaults to the class attribute; a method whose kind depends on its
    configuration passes it here (it is fixed for the life of the instance).
    """

    #: "features" (cached frozen image features) or "pixels" (runs the image encoder)
    input_kind: str = "features"
    #: names of submodules (or parameters) whose trainable parameters stay float32 when the run is fp16 (DePT's head);
    #: every other trainable parameter follows the run's precision (:func:`dpclab.precision.cast_learned`)
    float32_parameters: tuple[str, ...] = ()
    #: the frozen CLIP (open_clip model); never trained
    clip: nn.Module
    tokenizer: Callable

    def __init__(self, clip: nn.Module, tokenizer: Callable, cfg=None, input_kind: str | None = None):
        super().__init__()
        kind = input_kind or type(self).input_kind
        if kind not in INPUT_KINDS:
            raise ValueError(f"input_kind must be one of {INPUT_KINDS}, got {kind!r}.")
        self.cfg = cfg
        self.clip = freeze_clip(clip)
        self.tokenizer = tokenizer
        self.input_kind = kind

    # ---- features and scores -----------------------------------------------------------------------------
    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw image features [B, E]: cached features pass through, pixels go through the frozen encoder."""
        return image_features_of(self.clip, x, self.input_kind)

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        """Raw class text features [C, E] (or [B, C, E] for per-image prompts) for the classes of ``task``."""
        raise NotImplementedError(f"{type(self).__name__} must define task_text_features(task, image_features) "
                                  f"or its own forward.")

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        img = self.image_features(x)
        txt = self.task_text_features(task, img)
        return Output(cosine_logits(img, txt, self.clip.logit_scale.exp()), img, txt)

    def loss(self, x: torch.Tensor, y: torch.Tensor, task: Task) -> Loss:
        """Cross-entropy of the logits plus the method's own weighted terms (:meth:`loss_terms`): the :class:`Loss`
        with every term (``"ce"`` first), logs of every term (unweighted) and the batch accuracy."""
        out = self(x, task)
        ce = F.cross_entropy(out.logits, y)
        terms = self.loss_terms(out, x, y, task)
        loss = ce
        for weight, value in terms.values():
            loss = loss + weight * value
        logs = {"loss": loss.item(), **({"ce": ce.item()} if terms else {})}
        logs.update({name: value.item() for name, (_, value) in terms.items()})
        return Loss(loss, {"ce": (1.0, ce), **terms}, {**logs, "acc": batch_accuracy(out.logits, y)}, out)

    def loss_terms(self, out: Output, x: torch.Tensor, y: torch.Tensor,
                   task: Task) -> dict[str, tuple[float, torch.Tensor]]:
        """The method's own loss terms besides cross-entropy, ``{name: (weight, value)}``, added in order."""
        return {}

    # ---- training hooks (called by dpclab.train.fit) -------------------------------------------------------
    def param_groups(self, lr: float) -> list[dict]:
        """Optimizer parameter groups: every trainable parameter at ``lr``."""
        return [{"params": list(trainable_parameters(self).values()), "lr": lr}]

    def batches(self, data: Examples, epoch: int, cfg: TrainConfig,
                generator: torch.Generator) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        """The training batches ``(x, y)`` of ``epoch``: the plain shuffled batches (``data.task`` names the
        classes the labels index, for methods that score images before building a batch)."""
        return data.batches(epoch, cfg, generator)

    def step(self, loss: Loss, optimizer: torch.optim.Optimizer, scaler) -> None:
        """One update from a batch's :class:`Loss`: by default the plain SGD step on ``loss.total`` (``scaler`` is
        :func:`dpclab.precision.grad_scaler`'s, a no-op unless amp runs in float16). Override it to change the
        update itself (e.g. project the gradient of one term against another's, both in ``loss.terms``), rather
        than faking that as a surrogate loss."""
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss.total).backward()
        scaler.step(optimizer)
        scaler.update()

    def on_epoch_end(self, epoch: int, cfg: TrainConfig) -> None:
        """Called after every epoch (0-based), e.g. for PromptSRC's Gaussian prompt aggregation."""

    # ---- optional hooks (read by DPC and the pipeline) --------------------------------------------------------
    def hard_negative_scores(self, x: torch.Tensor, task: Task) -> torch.Tensor | None:
        """Scores [B, C] by which DPC ranks a batch's hard negative classes, or None (the default): DPC then ranks
        with the frozen step-1 model itself. PromptKD returns its teacher's logits, as released."""
        return None

    def deep_prompt_names(self) -> list[str]:
        """Names of the trainable deep prompts (prompts inserted in deeper layers), which
        ``DPCConfig(prime_deep_init="random")`` starts afresh; none by default."""
        return []

    def selection(self) -> str:
        """Which epoch a run keeps: ``"last"`` (the protocol, the default) or ``"best_base"`` (the best base-test
        epoch, :class:`dpclab.selection.BestBaseEpoch`; PromptKD's ``select`` option)."""
        return "last"

    # ---- after a run ----------------------------------------------------------------------------------------
    def diagnostics(self, experiment) -> dict[str, float]:
        """Numbers that explain a finished run of this method on ``experiment`` (a
        :class:`dpclab.experiment.Experiment`), shown beside its benchmark row; none by default."""
        return {}


class Plugin(PromptMethod):
    """A method that wraps another one, ``self.base`` (DPC, DePT): ``Plugin(base_method, cfg=None)``. It shares the
    base's CLIP, tokenizer and input kind, and forwards **every hook** to the base by default: ``loss_terms`` (so the
    default ``loss``, on the plug-in's own ``forward``, keeps the base's terms), ``param_groups`` (the base's groups,
    plus one group at ``lr`` for the plug-in's own trainable parameters), ``batches``, ``step``, ``on_epoch_end``,
    ``hard_negative_scores``, ``deep_prompt_names``, ``selection`` and ``diagnostics``. ``forward`` is the base's
    until the plug-in defines its own. A plug-in that trains after the base (DPC's step 2) overrides the hooks that
    belonged to the base's training."""

    def __init__(self, base: PromptMethod, cfg=None):
        super().__init__(base.clip, base.tokenizer, cfg, input_kind=base.input_kind)
        self.base = base

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        return self.base(x, task)

    def loss_terms(self, out, x, y, task):
        return self.base.loss_terms(out, x, y, task)

    def param_groups(self, lr: float) -> list[dict]:
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]} for g in self.base.param_groups(lr)]
        groups = [g for g in groups if g["params"]]
        covered = {id(p) for g in groups for p in g["params"]}
        own = [p for p in trainable_parameters(self).values() if id(p) not in covered]
        return [*groups, {"params": own, "lr": lr}] if own else groups

    def batches(self, data, epoch, cfg, generator):
        return self.base.batches(data, epoch, cfg, generator)

    def step(self, loss, optimizer, scaler) -> None:
        self.base.step(loss, optimizer, scaler)

    def on_epoch_end(self, epoch, cfg) -> None:
        self.base.on_epoch_end(epoch, cfg)

    def hard_negative_scores(self, x, task):
        return self.base.hard_negative_scores(x, task)

    def deep_prompt_names(self) -> list[str]:
        return [f"base.{n}" for n in self.base.deep_prompt_names()]

    def selection(self) -> str:
        return self.base.selection()

    def diagnostics(self, experiment) -> dict[str, float]:
        return self.base.diagnostics(experiment)
