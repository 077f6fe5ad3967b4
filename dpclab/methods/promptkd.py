"""PromptKD (CVPR 2024): a prompted image encoder distilled from a prompt-tuned teacher (docs/protocol.md#promptkd).

The **student** is CLIP's image encoder alone, with deep visual prompts and a projector; it has no text prompt and
does not run a text encoder:

* visual prompts: a shallow prompt of ``n_ctx_vision`` tokens appended after the patch tokens (before ``ln_pre``) and
  fresh ones replacing them before blocks 1..depth-1 (:func:`dpclab.vision.encode_images`), all N(0, 0.02) as released;
* projector: Linear(d_student -> d_teacher) -> BatchNorm -> ReLU -> Linear(d_teacher -> d_teacher) (the released
  1x1 convolutions over a [B, d, 1, 1] map are these linear layers), PyTorch's default init;
* logits: the student's frozen logit scale x L2-normalised projected image feature x the **teacher's** L2-normalised
  text features of the task's classes (computed once per class list and cached: the "pre-stored class vectors"; rows
  are per class, so the base and new rows of the all-class matrix are the features of the base and new tasks).

The **teacher** is any tuned :class:`~dpclab.methods.base.PromptMethod` (class-level text features); it is frozen,
not a submodule (its weights are not part of the student's learned state), and it may sit on another backbone (the
released setting: a ViT-L/14 PromptSRC teacher, 768-d, for a ViT-B/16 student). The pipeline trains or reuses the
teacher as its own run (:func:`teacher_run_config`: ``teacher_method`` on ``teacher_shots``-shot base classes) and
passes it in; built without one (tests, direct use) the student distils from zero-shot CLIP on its own backbone.

Loss (labels unused): ``kd_weight * tau^2 * sum_{b,c} KL(softmax(t/tau) || softmax(s/tau)) / (B*C)`` with the teacher's
logits ``t`` on the *same augmented image* (its own logit scale and text features) and the student's ``s``, over all
classes of the training task. ``kl_norm="batchmean"`` divides by B instead (the released /(B*C) makes the effective
weight depend on the class count). The student trains on every training image of all classes without labels
(``METHODS["promptkd"].data``: shots 0, all classes, the released transductive protocol).

Released quirks as switches (docs/fidelity.md): ``kl_norm``; ``select="best_base"`` keeps the epoch with the best
base *test* accuracy (Dassl's best_val on PromptKD's val = base test split; default: the last epoch, as the
protocol); DPC's P' deep prompts starting random (``DPCConfig.prime_deep_init``, via :meth:`deep_prompt_names`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dpclab.backbones import Backbone
from dpclab.methods.base import Loss, Output, PromptMethod, Task, batch_accuracy, image_features_of
from dpclab.methods.prompts import capped_depth, normal_prompts
from dpclab.methods.zeroshot import ZeroShotCLIP
from dpclab.vision import encode_images, vision_layers, vision_width

KL_NORMS = ("numel", "batchmean")
SELECTIONS = ("last", "best_base")


@dataclass
class PromptKDConfig:
    #: visual prompt tokens per layer (shallow and deep)
    n_ctx_vision: int = 4
    #: layers with visual prompts, counting layer 0; capped at the encoder's layer count
    vision_depth: int = 9
    #: KD_WEIGHT (the released script passes 1000; its comment suggests 200 for Aircraft, Flowers, DTD)
    kd_weight: float = 1000.0
    #: distillation temperature tau
    temperature: float = 1.0
    #: "numel": KL summed and divided by batch x classes (released); "batchmean": divided by the batch size
    kl_norm: str = "numel"
    #: "last" epoch (the protocol) or "best_base": the epoch with the best base-class *test* accuracy (released)
    select: str = "last"
    #: the teacher: a method name tuned on ``teacher_shots``-shot base classes as its own run (released: PromptSRC)
    teacher_method: str = "promptsrc"
    #: the teacher's backbone; None = the run's own (offline: a same-size teacher; released: ViT-L-14 + openai)
    teacher_model: str | None = None
    #: the teacher backbone's weights (open_clip tag or path); None = the run's own
    teacher_pretrained: str | None = None
    #: training images per base class of the teacher's run (released: 16)
    teacher_shots: int = 16
    #: overrides of the teacher method's config (its own run's ``method_cfg``)
    teacher_method_cfg: dict = field(default_factory=dict)
    #: overrides of the teacher's training (released L/14 teacher: batch_size 8, lr 0.005)
    teacher_train: dict = field(default_factory=dict)
    #: the teacher's epochs (None: its protocol default; the notebooks' quick mode sets it to its quick epochs)
    teacher_epochs: int | None = None

    def __post_init__(self):
        if self.kl_norm not in KL_NORMS:
            raise ValueError(f"PromptKD kl_norm must be one of {KL_NORMS} ('numel' = /(batch x classes) as "
                             f"released), got {self.kl_norm!r}.")
        if self.select not in SELECTIONS:
            raise ValueError(f"PromptKD select must be one of {SELECTIONS} ('best_base' = the released best "
                             f"base-test epoch), got {self.select!r}.")
        if self.temperature <= 0:
            raise ValueError(f"PromptKD temperature must be > 0, got {self.temperature}.")
        if self.teacher_shots < 1:
            raise ValueError(f"teacher_shots must be >= 1 (the teacher is tuned on K-shot base classes), "
                             f"got {self.teacher_shots}.")
        if self.teacher_epochs is not None and self.teacher_epochs < 1:
            raise ValueError(f"teacher_epochs must be >= 1 or None (the teacher's default), got {self.teacher_epochs}.")
        if "+" in self.teacher_method or self.teacher_method == "promptkd":
            raise ValueError(f"teacher_method must be a plain base method such as 'promptsrc', 'coop' or "
                             f"'zeroshot', got {self.teacher_method!r}.")


def distillation_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0,
                      kl_norm: str = "numel") -> torch.Tensor:
    """``tau^2 * sum_{b,c} KL(softmax(t/tau) || softmax(s/tau))`` divided by ``B*C`` ("numel", released) or ``B``
    ("batchmean"): forward KL with the teacher as the target, in float32."""
    tau = float(temperature)
    kl = F.kl_div(F.log_softmax(student_logits.float() / tau, -1), F.log_softmax(teacher_logits.float() / tau, -1),
                  reduction="sum", log_target=True)
    denominator = student_logits.numel() if kl_norm == "numel" else student_logits.shape[0]
    return kl / denominator * tau * tau


class Projector(nn.Module):
    """Linear(d_in -> d_out) -> BatchNorm1d -> ReLU -> Linear(d_out -> d_out). BatchNorm is computed in float32
    (the released fp16 mode keeps BN in float32), the linear layers in their weights' dtype."""

    def __init__(self, d_in: int, d_out: int):
        super().__init__()
        self.fc1 = nn.Linear(d_in, d_out)
        self.bn = nn.BatchNorm1d(d_out)
        self.fc2 = nn.Linear(d_out, d_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.fc1(x.to(self.fc1.weight.dtype))
        bn = self.bn
        h = F.batch_norm(h.float(), bn.running_mean, bn.running_var, bn.weight.float(), bn.bias.float(),
                         self.training, bn.momentum, bn.eps)
        if self.training:
            bn.num_batches_tracked.add_(1)
        return self.fc2(F.relu(h).to(self.fc2.weight.dtype))


class PromptKD(PromptMethod):
    """``PromptKD(backbone, cfg, teacher=None)``: the student; ``teacher`` a tuned method (see the module docstring)."""

    input_kind = "pixels"

    def __init__(self, backbone: Backbone, cfg: PromptKDConfig | None = None, teacher: PromptMethod | None = None):
        super().__init__(backbone.model, backbone.tokenizer, cfg or PromptKDConfig())
        cfg = self.cfg
        device = self.clip.logit_scale.device
        if teacher is None:
            teacher = ZeroShotCLIP(backbone)
        self.teacher_kind = type(teacher).__name__
        teacher.eval().requires_grad_(False)
        # a tuple, not a submodule: the teacher is frozen and not part of the student's learned state
        self._teacher = (teacher,)
        self._teacher_text: dict[tuple, torch.Tensor] = {}
        depth = capped_depth(cfg.vision_depth, vision_layers(self.clip), "PromptKD vision")
        self.vision_prompts = normal_prompts(depth, cfg.n_ctx_vision, vision_width(self.clip))
        d_student = self.clip.text_projection.shape[-1]
        d_teacher = teacher.clip.text_projection.shape[-1]
        self.projector = Projector(d_student, d_teacher)
        self.to(device)

    @property
    def teacher(self) -> PromptMethod:
        return self._teacher[0]

    def deep_prompt_names(self) -> list[str]:
        """The deep visual prompts (layers 1..depth-1): what the released PromptKD+DPC code leaves random in P'."""
        return [f"vision_prompts.{i}" for i in range(1, len(self.vision_prompts))]

    # ---- the teacher's side ------------------------------------------------------------------------------
    @torch.no_grad()
    def teacher_text(self, task: Task) -> torch.Tensor:
        """The teacher's L2-normalised text features [C, E_teacher] of the task's classes, computed once per class
        list and template (the teacher is frozen and has no dropout, so this equals recomputing them per step)."""
        key = (task.classnames, task.template)
        if key not in self._teacher_text:
            teacher = self.teacher
            txt = teacher.task_text_features(task, None)
            if txt.dim() != 2:
                raise ValueError(f"PromptKD needs class-level teacher text features; {type(teacher).__name__} "
                                 f"makes per-image prompts. Use teacher_method='promptsrc', 'coop' or 'zeroshot'.")
            self._teacher_text[key] = F.normalize(txt.float(), dim=-1).to(self.clip.logit_scale.device)
        return self._teacher_text[key]

    @torch.no_grad()
    def teacher_logits(self, x: torch.Tensor, task: Task) -> torch.Tensor:
        """The teacher's logits on the same (augmented) images: its logit scale x cos(its image feature, its text
        features). A features-kind teacher (CoOp, zero-shot) sees the pixels through its frozen image encoder."""
        teacher = self.teacher
        device = teacher.clip.logit_scale.device
        x = x.to(device)
        if teacher.input_kind == "features":
            feats = image_features_of(teacher.clip, x, "pixels")
        else:
            feats = teacher.image_features(x)
        img = F.normalize(feats.float(), dim=-1)
        txt = self.teacher_text(task).to(device)
        return (teacher.clip.logit_scale.exp().float() * img @ txt.t()).to(self.clip.logit_scale.device)

    def hard_negative_scores(self, x: torch.Tensor, task: Task) -> torch.Tensor:
        """What DPC's DHNO ranks classes by: the teacher's logits (released: the PromptSRC teacher scores)."""
        return self.teacher_logits(x, task)

    # ---- the student -------------------------------------------------------------------------------------
    def image_features(self, x: torch.Tensor) -> torch.Tensor:
        """Projected student image features [B, E_teacher] (raw; the logits normalise them)."""
        return self.projector(encode_images(self.clip, x, list(self.vision_prompts)))

    def task_text_features(self, task: Task, image_features: torch.Tensor) -> torch.Tensor:
        return self.teacher_text(task)

    def forward(self, x: torch.Tensor, task: Task) -> Output:
        img = self.image_features(x).float()  # the teacher's text features are float32 in every precision
        txt = self.teacher_text(task)
        logits = self.clip.logit_scale.exp().float() * F.normalize(img, dim=-1) @ txt.t()
        return Output(logits, img, txt)

    def loss_terms(self, out: Output, x: torch.Tensor, y: torch.Tensor, task: Task):
        """The distillation term, at ``kd_weight``."""
        cfg = self.cfg
        kd = distillation_loss(out.logits, self.teacher_logits(x, task), cfg.temperature, cfg.kl_norm)
        return {"kd": (cfg.kd_weight, kd)}

    def selection(self) -> str:
        """``cfg.select``: the last epoch (protocol) or the best base-test epoch (released, docs/fidelity.md K2)."""
        return self.cfg.select

    def loss(self, x: torch.Tensor, y: torch.Tensor, task: Task) -> Loss:
        """The weighted distillation term alone, no cross-entropy: the student's data is unlabeled (``acc`` is
        logged for information). Under DePT the plug-in adds its own cross-entropies to :meth:`loss_terms`."""
        out = self(x, task)
        terms = self.loss_terms(out, x, y, task)
        loss = sum(weight * value for weight, value in terms.values())
        logs = {"loss": loss.item(), **{name: value.item() for name, (_, value) in terms.items()}}
        return Loss(loss, terms, {**logs, "acc": batch_accuracy(out.logits, y)}, out)


def teacher_run_config(cfg, kd: PromptKDConfig):
    """The teacher's run: ``kd.teacher_method`` on ``kd.teacher_shots``-shot base classes of the same dataset and
    seed, on the teacher's backbone (default: the run's own), at its own protocol defaults plus ``teacher_train``.
    ``cfg`` is the student's :class:`~dpclab.runconfig.RunConfig`; a run with the same settings (e.g. the report's
    ``promptsrc`` row) is reused."""
    src = cfg.source
    return cfg.replace(method=kd.teacher_method, model=kd.teacher_model or src.model,
                       pretrained=kd.teacher_pretrained or src.pretrained, shots=kd.teacher_shots,
                       train_classes="base", method_cfg=dict(kd.teacher_method_cfg), base_method_cfg={}, base_train={},
                       train={**kd.teacher_train, **({} if kd.teacher_epochs is None else {"epochs": kd.teacher_epochs})})


__all__ = ["PromptKD", "PromptKDConfig", "Projector", "distillation_loss", "teacher_run_config",
           "KL_NORMS", "SELECTIONS"]
