"""Looking inside the feature space: DePT's channel importance and DPC's feature-channel invariance.

**Channel importance** (DePT Eq. 3, docs/protocol.md#channel-importance). With L2-normalised image features ``f_j``
(labels ``y_j``) and class text features ``e_i`` (M classes), channel r matters for a task when images agree with
their own class's text feature *at that channel* more than with the other classes' text features::

    CI_r = mean_j  ReLU(e_{y_j, r} f_{j, r}) / ( (1/M) sum_i ReLU(e_{i, r} f_{j, r}) )

DePT's analysis code sums the products over a cyclic window of 64 consecutive channels before the ReLU (single
channels are very noisy); :func:`windowed_channel_importance` does that, :func:`channel_importance` is the literal
per-channel formula. A channel where no class scores positively for an image contributes 0 for that image.
The paper compares CoOp with an *oracle* (CoOp trained on base and new training data, :func:`oracle_config`):
the oracle's base and new CI agree (ratio ~1), CoOp's base CI exceeds its new CI at most channels ("channel bias").

**Feature-channel invariance** (DPC's claim, docs/protocol.md#feature-channel-invariance). Mixing prompts
``omega * P' + (1 - omega) * P`` is sensible if tuning changes *which* prompt, not *how the text encoder uses its
channels*: per-channel mean/variance of the class text features should stay correlated with P's along omega, and the
text encoder ``T`` should be nearly linear along the segment:
``gap(omega) = ||T(omega P' + (1-omega) P) - (omega T(P') + (1-omega) T(P))||``.
Everything here works on tensors or on a callable ``features_at(omega) -> [C, E]`` (:func:`prompt_mix_fn` builds
one for any method whose prompts are named parameters), so it does not depend on how DPC is implemented.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable, Iterable, Mapping, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from dpclab.evaluate import accuracy, predict_logits, top_predictions
from dpclab.methods.base import Task
from dpclab.methods.table import resolve
from dpclab.pipeline import run
from dpclab.train import Examples

# ------------------------------------------------------------------------------------------ channel importance


def _check_ci_inputs(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor):
    if image_features.dim() != 2 or text_features.dim() not in (2, 3):
        raise ValueError("channel importance expects image features [N, E] and text features [C, E] "
                         f"(or per-image [N, C, E]); got {tuple(image_features.shape)} and {tuple(text_features.shape)}.")
    if text_features.shape[-1] != image_features.shape[-1] or len(labels) != len(image_features):
        raise ValueError("channel importance: image/text feature sizes or label count do not match "
                         f"({tuple(image_features.shape)}, {tuple(text_features.shape)}, {len(labels)} labels).")
    f = F.normalize(image_features.double(), dim=-1)
    e = F.normalize(text_features.double(), dim=-1)
    return f, e, labels.long().to(f.device)


def _importance_from_scores(scores: torch.Tensor, labels: torch.Tensor, eps: float) -> torch.Tensor:
    """scores [n, C, R] (already ReLU'd) -> per-image importance [n, R]: own class / mean over classes."""
    own = scores[torch.arange(len(labels)), labels]
    return own / (scores.mean(dim=1) + eps)


def _chunks(n: int, per_item: int, budget: int = 2 ** 23):
    step = max(1, budget // max(per_item, 1))
    return [(i, min(i + step, n)) for i in range(0, n, step)]


def channel_importance(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                       eps: float = 1e-12) -> torch.Tensor:
    """Eq. 3 of DePT per single channel: CI [E] (float64). ``text_features`` [C, E] or per image [N, C, E]."""
    f, e, y = _check_ci_inputs(image_features, text_features, labels)
    total = torch.zeros(f.shape[1], dtype=torch.float64, device=f.device)
    for a, b in _chunks(len(f), e.numel()):
        ee = e[a:b] if e.dim() == 3 else e
        scores = torch.relu(f[a:b, None, :] * ee)  # [n, C, E]: ReLU(e_{i,r} f_{j,r})
        total += _importance_from_scores(scores, y[a:b], eps).sum(0)
    return total / len(f)


def windowed_channel_importance(image_features: torch.Tensor, text_features: torch.Tensor, labels: torch.Tensor,
                                window: int = 64, eps: float = 1e-12) -> torch.Tensor:
    """CI over cyclic windows of ``window`` consecutive channels (DePT's analysis code): entry r covers channels
    r, r+1, ..., r+window-1 (mod E), summing ``e_i f_j`` over the window before the ReLU. Returns [E] (float64)."""
    f, e, y = _check_ci_inputs(image_features, text_features, labels)
    dim = f.shape[1]
    if not 1 <= window <= dim:
        raise ValueError(f"window must be between 1 and the feature size {dim}, got {window}.")
    total = torch.zeros(dim, dtype=torch.float64, device=f.device)
    for a, b in _chunks(len(f), e.numel() * 2):
        ee = e[a:b] if e.dim() == 3 else e
        prods = f[a:b, None, :] * ee  # [n, C, E]
        cyclic = torch.cat([prods, prods[..., :window - 1]], dim=-1)
        csum = F.pad(cyclic.cumsum(-1), (1, 0))  # csum[..., k] = sum of the first k entries
        scores = torch.relu(csum[..., window:window + dim] - csum[..., :dim])
        total += _importance_from_scores(scores, y[a:b], eps).sum(0)
    return total / len(f)


@torch.no_grad()
def collect_features(method: nn.Module, examples: Examples, task: Task, batch_size: int = 256):
    """Raw image features [N, E], class text features [C, E] (or [N, C, E] for per-image prompts) and labels
    of ``method`` on ``examples`` (the ITM feature space; a DePT plug-in reports its base's features)."""
    method.eval()
    device = next(method.clip.parameters()).device
    imgs, txts = [], []
    for x, _ in examples.ordered_batches(batch_size):
        out = method(x.to(device), task)
        imgs.append(out.image_features.float().cpu())
        if out.text_features.dim() == 3 or not txts:
            txts.append(out.text_features.float().cpu())
    txt = torch.cat(txts) if txts[0].dim() == 3 else txts[0]
    return torch.cat(imgs), txt, examples.labels.clone()


def ci_ratio(ci_base: torch.Tensor, ci_new: torch.Tensor) -> torch.Tensor:
    """CI-Base / CI-New per channel (DePT Fig. 3b/d); NaN where CI-New is 0 (no new-class evidence at all)."""
    return torch.where(ci_new > 0, ci_base / ci_new.clamp_min(1e-300), torch.full_like(ci_base, float("nan")))


def channel_importance_table(methods: Mapping[str, nn.Module], experiment, window: int = 64) -> pd.DataFrame:
    """CI on base and new *test* data for each named method: columns model, channel, base, new, ratio
    (= CI-Base / CI-New, NaN where CI-New is 0), rank (position of the channel when sorted by base CI). ``window=1``: per channel."""
    rows = []
    for name, method in methods.items():
        ci = {}
        for split in ("base", "new"):
            ex = experiment.test_examples(split, method.input_kind)
            img, txt, y = collect_features(method, ex, experiment.tasks[split])
            ci[split] = (channel_importance(img, txt, y) if window == 1
                         else windowed_channel_importance(img, txt, y, window))
        order = torch.argsort(torch.argsort(ci["base"]))
        rows.append(pd.DataFrame({"model": name, "channel": range(len(ci["base"])), "base": ci["base"].numpy(),
                                  "new": ci["new"].numpy(), "ratio": ci_ratio(ci["base"], ci["new"]).numpy(),
                                  "rank": order.numpy()}))
    return pd.concat(rows, ignore_index=True)


def oracle_config(cfg, method: str = "coop"):
    """The oracle of DePT §2.2: ``method`` (CoOp) trained on the few-shot data of *all* classes (base and new).
    Its row in the results table says ``train_classes="all"``: it has seen the new classes."""
    return replace(cfg, method=method, train_classes="all", method_cfg={}, base_method_cfg={}, base_train={})


def channel_importance_study(cfg, methods: Sequence[str] = ("coop", "coop+dept"), window: int = 64,
                             backbone=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train (or reuse) ``methods`` and the oracle for ``cfg``'s dataset/seed, then compute their CI.

    Returns (CI table as :func:`channel_importance_table`, metrics table: model, base, new, hm)."""
    runs = {m: run(replace(cfg, method=m), backbone=backbone) for m in methods}
    runs["oracle"] = run(oracle_config(cfg), backbone=backbone)
    exp = next(iter(runs.values())).experiment  # test data are the same for every run
    table = channel_importance_table({k: r.method for k, r in runs.items()}, exp, window)
    metrics = pd.DataFrame([{"model": k, **r.metrics} for k, r in runs.items()])
    return table, metrics


# ---------------------------------------------------------------------------- feature-channel invariance


def channel_stats(features: torch.Tensor, normalize: bool = True) -> dict[str, torch.Tensor]:
    """Per-channel mean and variance [E] over the classes (and images, for per-image features [.., C, E])."""
    x = features.reshape(-1, features.shape[-1]).double()
    if normalize:
        x = F.normalize(x, dim=-1)
    return {"mean": x.mean(0), "var": x.var(0, unbiased=False)}


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten(), b.double().flatten()
    a, b = a - a.mean(), b - b.mean()
    return float((a @ b) / (a.norm() * b.norm()).clamp_min(1e-300))


def _ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n with ties given their average rank (as Spearman's rho needs)."""
    return torch.from_numpy(pd.Series(x.double().flatten().cpu().numpy()).rank().to_numpy().copy())


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    """Spearman's rank correlation: Pearson's r of the ranks."""
    return pearson(_ranks(a), _ranks(b))


def features_along_omega(features_at: Callable[[float], torch.Tensor],
                         omegas: Iterable[float] = tuple(i / 10 for i in range(11))) -> dict[float, torch.Tensor]:
    """``{omega: features_at(omega)}`` with 0 (= T(P)) and 1 (= T(P')) always included."""
    grid = sorted({0.0, 1.0, *(float(w) for w in omegas)})
    return {w: features_at(w).detach().double().cpu() for w in grid}


def linearity_gap(feats: Mapping[float, torch.Tensor], omega: float) -> tuple[float, float]:
    """(absolute, relative) ``||T(mix_omega) - (omega T(P') + (1-omega) T(P))||`` (Frobenius) from
    :func:`features_along_omega` output; relative = divided by the norm of the linear interpolation."""
    lin = omega * feats[1.0] + (1 - omega) * feats[0.0]
    gap = float((feats[omega] - lin).norm())
    return gap, gap / max(float(lin.norm()), 1e-300)


def invariance_table(feats: Mapping[float, torch.Tensor], normalize: bool = True) -> pd.DataFrame:
    """One row per omega: Pearson/Spearman correlation of the per-channel mean and variance with P's (omega 0),
    and the linearity gap (absolute and relative)."""
    ref = channel_stats(feats[0.0], normalize)
    rows = []
    for w, x in sorted(feats.items()):
        st = channel_stats(x, normalize)
        gap, rel = linearity_gap(feats, w)
        rows.append({"omega": w, "pearson_mean": pearson(st["mean"], ref["mean"]),
                     "spearman_mean": spearman(st["mean"], ref["mean"]),
                     "pearson_var": pearson(st["var"], ref["var"]), "spearman_var": spearman(st["var"], ref["var"]),
                     "gap": gap, "rel_gap": rel})
    return pd.DataFrame(rows)


def channel_stats_table(feats: Mapping[float, torch.Tensor], normalize: bool = True) -> pd.DataFrame:
    """Long table omega, channel, mean, var (for plotting the per-channel statistics along omega)."""
    rows = []
    for w, x in sorted(feats.items()):
        st = channel_stats(x, normalize)
        rows.append(pd.DataFrame({"omega": w, "channel": range(len(st["mean"])), "mean": st["mean"].numpy(),
                                  "var": st["var"].numpy()}))
    return pd.concat(rows, ignore_index=True)


def prompt_mix_fn(method: nn.Module, prompts: Mapping[str, tuple[torch.Tensor, torch.Tensor]], task: Task,
                  x: torch.Tensor | None = None) -> Callable[[float], torch.Tensor]:
    """``features_at(omega)``: the method's raw class text features with every named prompt parameter replaced by
    ``omega * P' + (1 - omega) * P`` (``prompts = {"ctx": (P, P_prime)}``, names as in ``named_parameters``),
    via ``torch.func.functional_call`` (the method is not modified). ``x``: one input for the forward pass
    (text features do not depend on it; default: a zero feature vector for features-kind methods)."""
    params = dict(method.named_parameters())
    unknown = sorted(set(prompts) - set(params))
    if unknown:
        raise ValueError(f"prompt_mix_fn: {unknown} are not parameters of {type(method).__name__}; "
                         f"it has {sorted(n for n, p in params.items() if p.requires_grad)}.")
    if x is None:
        if method.input_kind != "features":
            raise ValueError("prompt_mix_fn needs one input image x for a pixels-kind method.")
        x = torch.zeros(1, method.clip.text_projection.shape[-1], device=params[next(iter(prompts))].device)

    @torch.no_grad()
    def features_at(omega: float) -> torch.Tensor:
        mixed = {n: omega * pp + (1 - omega) * p for n, (p, pp) in prompts.items()}
        return torch.func.functional_call(method, mixed, (x, task)).text_features

    return features_at


# ------------------------------------------------------------------------------------- experiments of the notebooks
def untrained_coop_vs_zeroshot(exp, backbone, words: str = "a photo of a") -> pd.DataFrame:
    """Untrained CoOp (context initialised from ``words``) next to zero-shot CLIP with the template
    ``"<words> {}."`` on the base and new test sets: accuracy of each and the largest logit difference (0 up to
    float rounding: the two are the same model)."""
    coop = resolve("coop").build(backbone, {"ctx_init": words})
    zeroshot = resolve("zeroshot").build(backbone)
    rows = []
    for split in ("base", "new"):
        task = replace(exp.tasks[split], template=words + " {}.")
        ex = exp.test_examples(split, "features")
        zs_logits, coop_logits = predict_logits(zeroshot, ex, task), predict_logits(coop, ex, task)
        rows.append({"split": split, f"zero-shot '{task.template}'": accuracy(zs_logits, ex.labels),
                     f"CoOp untrained, ctx = '{words}'": accuracy(coop_logits, ex.labels),
                     "max |logit difference|": float((zs_logits - coop_logits).abs().max())})
    return pd.DataFrame(rows)


@dataclass
class DHNOExamples:
    """Anchor training images, the hard negative classes DHNO picks for each, and a readable table of both."""

    anchors: list
    negatives: list[list[int]]
    table: pd.DataFrame


def dhno_examples(dpc: nn.Module, experiment, n_anchors: int = 4, seed: int = 0) -> DHNOExamples:
    """What DHNO does for ``n_anchors`` anchors (the first training image of classes spread evenly over the
    training classes): the frozen P model scores every class, its most confident wrong classes become the
    anchor's hard negatives. The table lists each anchor's class, P's top-k classes and the negatives."""
    train = experiment.train_examples(dpc.input_kind)
    items, task = experiment.train_split.train, experiment.train_task
    first_of_class: dict[int, int] = {}
    for i, d in enumerate(items):
        first_of_class.setdefault(d.label, i)
    n_classes = len(task.classnames)
    anchor_idx = torch.tensor([first_of_class[c] for c in range(0, n_classes, max(1, n_classes // n_anchors))]
                              [:n_anchors])
    feats = train.features(0)
    gen = torch.Generator().manual_seed(seed)
    negatives = [dpc.build_batch(feats[i:i + 1], train.labels[i:i + 1], train.labels, lambda idx: feats[idx], task,
                                 gen)[2][0] for i in anchor_idx.tolist()]
    scores = dpc.frozen_logits(feats[anchor_idx], task)
    k = dpc.cfg.top_k
    table = pd.DataFrame({"anchor class": [task.classnames[int(c)] for c in train.labels[anchor_idx]],
                          f"frozen P: top-{k} classes": top_predictions(scores, task.classnames, k=k),
                          "hard negatives": [", ".join(task.classnames[c] for c in negs) for negs in negatives]})
    return DHNOExamples([items[int(i)] for i in anchor_idx], negatives, table)


def ci_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Per model of a :func:`channel_importance_table`: mean CI-Base and CI-New, the median CI-Base : CI-New
    ratio, and the share of channels whose ratio is above 1."""
    return table.groupby("model", sort=False).agg(
        mean_CI_base=("base", "mean"), mean_CI_new=("new", "mean"), median_ratio=("ratio", "median"),
        share_ratio_above_1=("ratio", lambda r: float((r > 1).mean())))


def dpc_prompt_pairs(dpc: nn.Module, init_ctx: torch.Tensor, seed: int = 0) -> dict:
    """The three context pairs notebook 05 mixes: P -> P' (DPC's step 2), init -> P (CoOp's training, from its
    initial context ``init_ctx``) and, as a control, P -> a random context with the norm of P per token."""
    P, P_prime = dpc.frozen()["ctx"].detach(), dpc.prime()["ctx"].detach()
    init = init_ctx.detach().to(P.device)
    random_ctx = torch.randn(P.shape, generator=torch.Generator().manual_seed(seed)).to(P.device)
    random_ctx = random_ctx / random_ctx.norm(dim=-1, keepdim=True) * P.norm(dim=-1, keepdim=True)
    return {"P → P′ (DPC)": (P, P_prime), "init → P (CoOp training)": (init, P),
            "P → random (control)": (P, random_ctx)}


def pair_distances(pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]]) -> pd.DataFrame:
    """How far each (start, end) pair of prompts lies apart, beside the size of its start."""
    return pd.DataFrame([{"pair": k, "‖end − start‖": float((b - a).norm()), "‖start‖": float(a.norm())}
                         for k, (a, b) in pairs.items()])


def invariance_study(method: nn.Module, pairs: Mapping[str, tuple[torch.Tensor, torch.Tensor]],
                     tasks: Mapping[str, Task], omegas: Sequence[float], prompt: str = "ctx"):
    """For every pair of ``prompt`` values and every task (e.g. base and new classes): the class text features of
    ``method`` along omega (:func:`prompt_mix_fn`) and their :func:`invariance_table`. Returns (one table with
    ``pair`` and ``split`` columns, {(pair, split): features along omega})."""
    tables, features = [], {}
    for pair, (start, end) in pairs.items():
        for split, task in tasks.items():
            features[pair, split] = features_along_omega(prompt_mix_fn(method, {prompt: (start, end)}, task), omegas)
            tables.append(invariance_table(features[pair, split]).assign(pair=pair, split=split))
    return pd.concat(tables, ignore_index=True), features


def invariance_far_end(table: pd.DataFrame) -> pd.DataFrame:
    """Per pair and split of an :func:`invariance_study` table: the correlations at the far end (omega = 1) and
    the largest relative linearity gap along the way."""
    far_end = table[table["omega"] == 1.0].set_index(["pair", "split"])
    return far_end[["pearson_mean", "spearman_mean", "pearson_var", "spearman_var"]].assign(
        max_rel_gap=table.groupby(["pair", "split"])["rel_gap"].max())


__all__ = ["channel_importance", "windowed_channel_importance", "collect_features", "ci_ratio", "channel_importance_table",
           "oracle_config", "channel_importance_study", "channel_stats", "pearson", "spearman",
           "features_along_omega", "linearity_gap", "invariance_table", "channel_stats_table", "prompt_mix_fn",
           "untrained_coop_vs_zeroshot", "dhno_examples", "DHNOExamples", "ci_summary",
           "dpc_prompt_pairs", "pair_distances", "invariance_study", "invariance_far_end"]
