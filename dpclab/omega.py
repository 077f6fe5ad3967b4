"""DPC's ω after training: an ω grid for sliders and sweeps, ω_b chosen on validation data, automatic base/new routing.

DPC mixes prompt *vectors* before the text encoder, so text features (and accuracy) are a nonlinear function of ω:
nothing can be interpolated from P and P' alone. :func:`omega_grid` therefore encodes the class texts once per grid
value and stores the normalised text features, the logits on the (cached) test image features and the accuracies.
:func:`omega_view` is the pure, instant read-out a notebook slider calls; :meth:`OmegaGrid.save`/``load`` keep a
grid on disk so a sweep plot needs no model at all.

Beyond the paper:

* :func:`choose_omega_b` picks ω_b on the few-shot *validation* split of the base classes (the paper fixes 0.2 and
  notes it does not suit every dataset), never on test data.
* :func:`routing_report` lifts DPC's stated limitation that it must be told whether a test image is base or new.
  The frozen step-1 model scores each image over *all* classes; the softmax mass on base classes decides
  whether the base (ω_b) or the new (ω_n) prompt classifies it. Reported against oracle routing, on the mixed
  base ∪ new test set with all classes as candidates.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import torch

from dpclab.evaluate import accuracy, harmonic_mean
from dpclab.io import DamagedFileError, atomic_torch_save, set_aside, torch_load
from dpclab.methods.base import Task, cosine_logits
from dpclab.methods.dpc import DPC, check_omega
from dpclab.train import Examples

#: 0, 0.05, ..., 1 (21 values)
DEFAULT_OMEGAS: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))


@dataclass
class OmegaGrid:
    """Per split (e.g. "base", "new"): accuracy [G] at each ω, labels [N], and (when kept) normalised class text
    features [G, C, E] and logits [G, N, C]. ``default`` holds the method's own (ω_b, ω_n)."""

    omegas: list[float]
    accuracy: dict[str, torch.Tensor]
    labels: dict[str, torch.Tensor]
    text: dict[str, torch.Tensor] = field(default_factory=dict)
    logits: dict[str, torch.Tensor] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)

    def save(self, path: str | os.PathLike) -> Path:
        return atomic_torch_save(asdict(self), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "OmegaGrid":
        return cls(**torch_load(path, map_location="cpu", keys=("omegas", "accuracy", "labels")))

    def index(self, omega: float) -> int:
        """Grid position of the value nearest to ``omega``."""
        omega = check_omega(omega)
        return min(range(len(self.omegas)), key=lambda i: abs(self.omegas[i] - omega))


def omega_view(grid: OmegaGrid, omega_b: float, omega_n: float) -> dict[str, float]:
    """Base/new/HM accuracy for (ω_b, ω_n), read from the grid (nearest grid values; no model, no encoding).

    The slider callback of the DPC notebook: a dictionary lookup, microseconds.
    """
    ib, inn = grid.index(omega_b), grid.index(omega_n)
    base, new = float(grid.accuracy["base"][ib]), float(grid.accuracy["new"][inn])
    return {"omega_b": grid.omegas[ib], "omega_n": grid.omegas[inn], "base": base, "new": new,
            "hm": harmonic_mean(base, new)}


@torch.no_grad()
def logits_at(method: DPC, examples: Examples, task: Task, omega: float,
              batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(logits [N, C], normalised text features [C, E] or None) of ``method`` at ω for every example.

    Features-kind bases with class-level text encode the class texts once and reuse the cached image features;
    other bases (vision prompts, per-image prompts) run the full model over the examples.
    """
    method.eval()
    device = next(method.clip.parameters()).device
    if method.input_kind == "features" and examples.features is not None:
        feats = examples.features(0)
        out = method.forward_at(feats[:1].to(device), task, omega)
        if out.text_features.dim() == 2:
            raw, scale = out.text_features, method.clip.logit_scale.exp()
            # the same arithmetic and batching as evaluate.predict_logits, so accuracies match it exactly
            logits = torch.cat([cosine_logits(feats[i:i + batch_size].to(device), raw, scale).float().cpu()
                                for i in range(0, len(feats), batch_size)])
            return logits, torch.nn.functional.normalize(raw.float(), dim=-1).cpu()
    logits = torch.cat([method.forward_at(x.to(device), task, omega).logits.float().cpu()
                        for x, _ in examples.ordered_batches(batch_size)])
    return logits, None


def omega_grid(method: DPC, sets: Mapping[str, tuple[Examples, Task]], omegas: Sequence[float] = DEFAULT_OMEGAS,
               keep_logits: bool = True) -> OmegaGrid:
    """Evaluate ``method`` at every ω for every named set, e.g. ``{"base": (ex, task), "new": (ex, task)}``.

    ``keep_logits=False`` stores only accuracies and text features (logits are G·N·C floats: 21 × 25k × 500 for
    ImageNet is 1 GB).
    """
    omegas = [check_omega(w) for w in omegas]
    acc, labels, text, logits = {}, {}, {}, {}
    for name, (ex, task) in sets.items():
        per_omega = [logits_at(method, ex, task, w) for w in omegas]
        acc[name] = torch.tensor([accuracy(lg, ex.labels) for lg, _ in per_omega], dtype=torch.float64)
        labels[name] = ex.labels.clone()
        if all(t is not None for _, t in per_omega):
            text[name] = torch.stack([t for _, t in per_omega])
        if keep_logits:
            logits[name] = torch.stack([lg for lg, _ in per_omega])
    meta = {"mode": method.cfg.mode, "default": [method.base_omega, method.cfg.omega_n],
            "classnames": {name: list(task.classnames) for name, (_, task) in sets.items()}}
    return OmegaGrid(omegas, acc, labels, text, logits, meta)


def experiment_grid(method: DPC, experiment, omegas: Sequence[float] = DEFAULT_OMEGAS,
                    keep_logits: bool = True) -> OmegaGrid:
    """:func:`omega_grid` on an :class:`dpclab.experiment.Experiment`'s base and new test sets."""
    kind = method.input_kind
    sets = {s: (experiment.test_examples(s, kind), experiment.tasks[s]) for s in ("base", "new")}
    return omega_grid(method, sets, omegas, keep_logits)


def grid_path(run_dir: str | os.PathLike, omegas: Sequence[float]) -> Path:
    """Where :func:`run_grid_cached` keeps a run's grid: next to the run, named by the grid's size."""
    return Path(run_dir) / f"omega_grid_{len(omegas)}.pt"


def run_grid_cached(result, omegas: Sequence[float] = DEFAULT_OMEGAS) -> OmegaGrid:
    """The :func:`experiment_grid` of a finished DPC run (:class:`dpclab.pipeline.RunResult`), loaded from
    :func:`grid_path` when it was computed before, else computed and saved there."""
    path = grid_path(result.run_dir, omegas)
    if path.is_file():
        try:
            return OmegaGrid.load(path)
        except DamagedFileError as err:
            set_aside(err, "recomputed")
    grid = experiment_grid(result.method, result.experiment, omegas)
    grid.save(path)
    return grid


@dataclass
class OmegaChoice:
    omega_b: float
    omegas: list[float]
    val_accuracy: list[float]


def choose_omega_b(method: DPC, experiment, omegas: Sequence[float] = DEFAULT_OMEGAS) -> OmegaChoice:
    """ω_b with the best accuracy on the few-shot validation images of the base classes (ties: the smallest ω,
    closest to the frozen prompt). Test data is never looked at."""
    val = experiment.base.val
    if not val:
        raise ValueError("This dataset has no validation split to choose omega_b on; pass omega_b explicitly.")
    ex = experiment.examples(val, method.input_kind, train=False)
    grid = omega_grid(method, {"val": (ex, experiment.tasks["base"])}, omegas, keep_logits=False)
    accs = grid.accuracy["val"].tolist()
    best = max(range(len(accs)), key=lambda i: (accs[i], -grid.omegas[i]))
    return OmegaChoice(grid.omegas[best], grid.omegas, accs)


def base_mass(logits: torch.Tensor, base_mask: torch.Tensor) -> torch.Tensor:
    """Open-set score: the softmax probability mass on base classes, per image [N]."""
    return logits.softmax(-1)[:, base_mask].sum(-1)


def auroc(scores: torch.Tensor, positive: torch.Tensor) -> float:
    """Area under the ROC curve of ``scores`` for ``positive`` vs the rest (ties count one half)."""
    pos, neg = scores[positive], scores[~positive]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    greater = (pos[:, None] > neg[None, :]).float().mean()
    ties = (pos[:, None] == neg[None, :]).float().mean()
    return float(greater + 0.5 * ties)


def route_predictions(base_logits: torch.Tensor, new_logits: torch.Tensor, to_base: torch.Tensor) -> torch.Tensor:
    """Per image, the all-class prediction of the base prompt where ``to_base`` else of the new prompt."""
    return torch.where(to_base, base_logits.argmax(-1), new_logits.argmax(-1))


def routing_report(method: DPC, experiment, omega_b: float | None = None, omega_n: float | None = None,
                   threshold: float = 0.5) -> dict[str, float]:
    """All-class accuracy on the mixed base ∪ new test set under four rules (all classes are candidates):

    ``frozen``: the step-1 model alone (ω = 0 everywhere); ``base_prompt_everywhere``: ω_b for every image (no
    decoupling); ``oracle``: the true split picks the prompt; ``auto``: the frozen model's softmax mass on base
    classes > ``threshold`` picks the base prompt. Also: how often auto routing is right, and the AUROC of the
    score for base vs new images.
    """
    omega_b = method.base_omega if omega_b is None else check_omega(omega_b, "omega_b")
    omega_n = method.cfg.omega_n if omega_n is None else check_omega(omega_n, "omega_n")
    task = experiment.tasks["all"]
    ex = experiment.test_examples("all", method.input_kind)
    base_names = set(experiment.tasks["base"].classnames)
    base_mask = torch.tensor([c in base_names for c in task.classnames])
    is_base = base_mask[ex.labels]
    frozen, _ = logits_at(method, ex, task, 0.0)
    base_logits, _ = logits_at(method, ex, task, omega_b)
    new_logits, _ = logits_at(method, ex, task, omega_n)
    score = base_mass(frozen, base_mask)
    to_base = score > threshold

    def acc(pred: torch.Tensor) -> float:
        return 100.0 * (pred == ex.labels).float().mean().item()

    return {
        "omega_b": omega_b, "omega_n": omega_n, "threshold": threshold,
        "frozen": accuracy(frozen, ex.labels),
        "base_prompt_everywhere": accuracy(base_logits, ex.labels),
        "oracle": acc(route_predictions(base_logits, new_logits, is_base)),
        "auto": acc(route_predictions(base_logits, new_logits, to_base)),
        "routing_accuracy": 100.0 * (to_base == is_base).float().mean().item(),
        "routing_auroc": auroc(score, is_base),
    }


__all__ = ["DEFAULT_OMEGAS", "OmegaGrid", "OmegaChoice", "omega_view", "omega_grid", "experiment_grid", "logits_at",
           "grid_path", "run_grid_cached",
           "choose_omega_b", "routing_report", "base_mass", "auroc", "route_predictions"]
