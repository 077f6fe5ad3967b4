"""Diagnostics that explain a benchmark table: how much the frozen features allow, and what DPC's step 2 did.

* :func:`linear_probe` — the **feature ceiling**: a multinomial logistic regression on the frozen image features of
  the few-shot training images (center crop, no augmentation), evaluated on the base test images. Prompt tuning
  only re-weights what these features carry, so a method's base accuracy far below the probe's means the method
  under-fits; a probe far below 100% means the image encoder itself limits every method.
* :func:`dpc_diagnostics` — for a finished CoOp+DPC run: the step-1 prompt ``P`` against the trained ``P'``:
  training loss and accuracy on the shots with each, ``‖P' − P‖`` (relative to ``‖P‖``), and how many training
  images ``P'`` fixes (wrong with ``P``, right with ``P'``) or breaks, plus base test accuracy at ω_b = 0, the
  configured ω_b, and 1.

Both are pure functions of an :class:`~dpclab.experiment.Experiment` (and a run's method); nothing here trains a
prompt or looks at new-class test images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from dpclab.evaluate import accuracy

#: the probe's L2 penalties; the one with the best accuracy on the few-shot *validation* images is used
PROBE_WEIGHT_DECAYS = (1e-4, 1e-3, 1e-2)


def _fit_logistic(x: torch.Tensor, y: torch.Tensor, n_classes: int, weight_decay: float, steps: int = 300):
    """Full-batch multinomial logistic regression on L2-normalised features (L-BFGS, zero init: deterministic)."""
    x = F.normalize(x.double(), dim=-1)
    w = torch.zeros(x.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], lr=1.0, max_iter=steps, history_size=20, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(x @ w * 10.0 + b, y) + weight_decay * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    return w.detach(), b.detach()


def _probe_predict(x: torch.Tensor, wb) -> torch.Tensor:
    w, b = wb
    return F.normalize(x.double(), dim=-1) @ w * 10.0 + b


def linear_probe(exp) -> dict[str, float]:
    """16-shot linear probe on frozen center-crop features of the base classes (the feature ceiling).

    Returns ``base`` (test accuracy, %), ``train_acc`` (accuracy on its own shots), ``new`` = NaN (a linear probe
    has no classifier for unseen classes) and ``weight_decay`` (chosen on the few-shot validation images)."""
    split = exp.base
    n = len(split.classnames)
    train_x = exp.features(split.train, "test")
    train_y = torch.tensor([d.label for d in split.train])
    fits = {wd: _fit_logistic(train_x, train_y, n, wd) for wd in PROBE_WEIGHT_DECAYS}
    if split.val:
        val_x = exp.features(split.val, "test")
        val_y = torch.tensor([d.label for d in split.val])
        chosen = max(PROBE_WEIGHT_DECAYS, key=lambda wd: (accuracy(_probe_predict(val_x, fits[wd]), val_y), -wd))
    else:
        chosen = PROBE_WEIGHT_DECAYS[0]
    test_x = exp.features(split.test, "test")
    test_y = torch.tensor([d.label for d in split.test])
    return {"base": accuracy(_probe_predict(test_x, fits[chosen]), test_y), "new": math.nan,
            "train_acc": accuracy(_probe_predict(train_x, fits[chosen]), train_y), "weight_decay": chosen}


@torch.no_grad()
def dpc_diagnostics(exp, method) -> dict[str, float]:
    """What DPC's step 2 changed, for a finished DPC run's ``method`` on ``exp`` (its own experiment).

    Keys: ``loss_P`` / ``loss_Pprime`` (cross-entropy over the base classes on the training shots, test transform),
    ``train_acc_P`` / ``train_acc_Pprime``, ``fixed`` / ``broken`` (training images wrong with P and right with P', and
    the reverse), ``dist`` = ‖P' − P‖ and ``rel_dist`` = ‖P' − P‖ / ‖P‖ over all prompt tensors, and
    ``base_at_0`` / ``base_at_wb`` / ``base_at_1``: base test accuracy with ω = 0 (step 1), the run's inference
    weight for base classes, and 1 (P' alone)."""
    task = exp.train_task
    train = exp.examples(exp.train_split.train, method.input_kind, train=False)
    test = exp.test_examples("base", method.input_kind)
    p, q = method.frozen(), method.prime()
    diff = math.sqrt(sum(float(((q[k] - p[k]).double() ** 2).sum()) for k in p))
    norm = math.sqrt(sum(float((p[k].double() ** 2).sum()) for k in p))
    out: dict[str, float] = {"dist": diff, "rel_dist": diff / norm if norm else math.nan}
    preds = {}
    for tag, omega in (("P", 0.0), ("Pprime", 1.0)):
        logits = _predict_at(method, train, task, omega)
        out[f"loss_{tag}"] = float(F.cross_entropy(logits, train.labels))
        out[f"train_acc_{tag}"] = accuracy(logits, train.labels)
        preds[tag] = logits.argmax(-1) == train.labels
    out["fixed"] = int((~preds["P"] & preds["Pprime"]).sum())
    out["broken"] = int((preds["P"] & ~preds["Pprime"]).sum())
    out["n_train"] = len(train.labels)
    base_task = exp.tasks["base"]
    for tag, omega in (("base_at_0", 0.0), ("base_at_wb", method.omega_for("base")), ("base_at_1", 1.0)):
        out[tag] = accuracy(_predict_at(method, test, base_task, omega), test.labels)
    return out


def _predict_at(method, examples, task, omega: float, batch_size: int = 256) -> torch.Tensor:
    """Logits [N, C] of a DPC method at prompt weight ``omega`` over ``examples``, in order."""
    method.eval()
    device = next(method.clip.parameters()).device
    return torch.cat([method.forward_at(x.to(device), task, omega).logits.float().cpu()
                      for x, _ in examples.ordered_batches(batch_size)])


__all__ = ["linear_probe", "dpc_diagnostics", "PROBE_WEIGHT_DECAYS"]
