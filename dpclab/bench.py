"""``python -m dpclab.bench``: how much faster dpclab trains CoOp than a reference-style loop, measured side by side.

The *reference-style* loop is written here the way the CoOp/Dassl code does it: every step loads and augments the
images from disk, runs them through the frozen image encoder, builds the full 77-token prompts and runs the whole
text transformer on them. dpclab computes the same loss (checked on one batch, printed as "faithfulness") but

* encodes each augmented view of the training images once, as a cached feature tensor (``data/features.py``);
* truncates the text sequences after the last end-of-text token (``text.py``; exact under the causal mask).

So one dpclab epoch costs "train on cached features" when the view is cached (re-runs, other methods and plug-ins
on the same seed, ``n_views < epochs``), and "train + encode one fresh view" in the faithful default where every
epoch sees a fresh augmentation (``n_views = 0``). Both are reported as ratios to the reference epoch; ratios,
not absolute seconds, are the headline, because the absolute numbers depend on the machine and its load.

Also measured when the pieces exist: DPC's step-2 epoch (``"dpc" in PLUGINS``), the ω-slider update latency
(``dpclab.omega``), the notebook suite's wall time (``python -m dpclab report``), and peak memory per phase.

    python -m dpclab.bench --quick                   # ~1 minute smoke run on a tiny model
    python -m dpclab.bench                           # tiny/embedded model and a random-weight ViT-B-16
    python -m dpclab.bench --model ViT-B-16:openai --classes 50 --shots 16 --device cuda
"""

from __future__ import annotations

import argparse
import csv
import importlib.util
import io
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader

from .backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED, Backbone, embedded_checkpoint, load_clip, \
    register_model_configs, resolve_device
from .data.coop import DatasetSpec
from .data.features import ImageList, cached_features
from .io import atomic_write_text
from .methods.coop import init_context
from .text import eot_positions, tokenize
from .train import Examples, TrainConfig, epoch_generator, fit, lr_at_epoch

#: a tiny open_clip architecture (random weights) for when the embedded checkpoint is not there
TINY_MODEL = "dpclab-bench-tiny"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: class names of realistic token lengths (the text cost depends on them)
CLASSNAMES = ["annual crop land", "forest", "herbaceous vegetation land", "highway or road", "industrial buildings",
              "pasture land", "permanent crop land", "residential buildings", "river", "sea or lake",
              "golden retriever", "aircraft carrier", "sea lion", "boeing 747-400", "red velvet cake",
              "playing the cello", "banded texture", "tabby cat", "sunflower", "mountain bike"]
BENCH_SPEC = DatasetSpec("bench", "bench", "json", "images", "split_bench.json")


# ------------------------------------------------------------------------------------------------ configuration
@dataclass
class ModelCase:
    """One model to benchmark, with its own workload size (a ViT-B/16 on a CPU needs a smaller one)."""

    model: str
    pretrained: str | None
    classes: int
    shots: int
    batch_size: int
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.model}:{self.pretrained or 'random'}"


@dataclass
class BenchConfig:
    cases: list[ModelCase]
    device: str = "auto"
    seed: int = 1
    image_px: int = 96  # side of the generated images on disk (real datasets are larger: loading costs more there)
    dpc_epochs: int = 1
    notebooks: bool = True
    notebooks_quick: bool = True  # time `report --quick` (the CI smoke mode); False: the full suite
    out_csv: Path = Path("reports/bench/bench.csv")
    out_md: Path = Path("reports/bench/bench.md")
    workdir: Path | None = None  # data and caches; a temporary folder when None
    extra: dict = field(default_factory=dict)


def default_small_model() -> tuple[str, str | None]:
    """The embedded tiny CLIP when its checkpoint is present, else a random-weight tiny config."""
    if embedded_checkpoint().is_file():
        return EMBEDDED_MODEL, EMBEDDED_PRETRAINED
    return TINY_MODEL, None


def register_tiny_model(workdir: Path) -> None:
    d = workdir / "model_configs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    register_model_configs(d)


# --------------------------------------------------------------------------------------------------- data
def write_bench_dataset(root: Path, n_classes: int, per_class: int, px: int, seed: int = 0) -> Path:
    """A CoOp-layout dataset of coloured noise images, ``per_class`` train and 2 test images per class."""
    if n_classes > len(CLASSNAMES):
        raise ValueError(f"The bench dataset has at most {len(CLASSNAMES)} classes; pass --classes <= that.")
    base = root / BENCH_SPEC.dirname
    rng = np.random.default_rng(seed)
    split = {"train": [], "val": [], "test": []}
    for c, name in enumerate(CLASSNAMES[:n_classes]):
        colour = rng.integers(0, 255, 3)
        for part, n in (("train", per_class), ("test", 2)):
            for i in range(n):
                rel = f"c{c}/{part}_{i}.png"
                arr = np.clip(colour + rng.normal(0, 30, (px, px, 3)), 0, 255).astype(np.uint8)
                (base / "images" / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(arr).save(base / "images" / rel)
                split[part].append([rel, c, name])
    (base / BENCH_SPEC.split_file).write_text(json.dumps(split))
    return root


# -------------------------------------------------------------------------------------- reference-style CoOp
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


# ------------------------------------------------------------------------------------------ measuring tools
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Peak:
    rss_mib: float = 0.0
    rss_start_mib: float = 0.0
    cuda_mib: float = float("nan")


@contextmanager
def peak_memory(device: torch.device, interval: float = 0.005) -> Iterator[Peak]:
    """Peak resident memory of this process during the block (sampled by a thread) and peak CUDA allocation."""
    peak = Peak(rss_start_mib=_rss_bytes() / 2**20)
    peak.rss_mib = peak.rss_start_mib
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak.rss_mib = max(peak.rss_mib, _rss_bytes() / 2**20)
            stop.wait(interval)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()
        peak.rss_mib = max(peak.rss_mib, _rss_bytes() / 2**20)
        if device.type == "cuda":
            peak.cuda_mib = torch.cuda.max_memory_allocated(device) / 2**20


# --------------------------------------------------------------------------------------------- the benchmark
@dataclass
class Row:
    section: str
    model: str
    metric: str
    value: float
    unit: str
    note: str = ""


def _experiment(case: ModelCase, backbone: Backbone, data_root: Path, cache: Path, seed: int):
    from .pipeline import Experiment, RunConfig

    cfg = RunConfig(method="coop", dataset="bench", data_root=str(data_root), shots=case.shots, seed=seed,
                    cache_dir=str(cache), train_classes="all", progress=False)
    return Experiment.prepare(cfg, backbone, specs={"bench": BENCH_SPEC})


def faithfulness(coop: nn.Module, ref: ReferenceCoOp, exp, cfg: TrainConfig) -> dict:
    """Loss and context gradient of dpclab's CoOp (cached features, truncated text) and of the reference-style
    module (pixels, 77 tokens) on the first batch of epoch 0. Not timed."""
    items = exp.train_split.train
    labels = torch.tensor([d.label for d in items])
    idx = Examples(labels).index_batches(cfg.batch_size, epoch_generator(cfg.seed, 0))[0]
    device = exp.backbone.device
    bb = exp.backbone  # view 0 of epoch 0, encoded without touching the cache (the timed loop encodes it cold)
    feats = cached_features(bb.model, bb.key, items, exp.transforms["train"], "train", device, None, view=0,
                            seed=exp.seed)[idx].to(device)
    images = ImageList(items, exp.transforms["train"], view_seed=cfg.seed * 7919)
    pixels = torch.stack([images[int(i)][0] for i in idx]).to(device)
    y = labels[idx].to(device)
    ours, _ = coop.loss(feats, y, exp.train_task)
    (g_ours,) = torch.autograd.grad(ours, coop.ctx)
    theirs = F.cross_entropy(ref(pixels), y)
    (g_ref,) = torch.autograd.grad(theirs, ref.ctx)
    return {"loss_dpclab": ours.item(), "loss_reference": theirs.item(),
            "abs_diff": abs(ours.item() - theirs.item()),
            "grad_rel_diff": ((g_ours - g_ref).norm() / g_ref.norm().clamp_min(1e-30)).item()}


def bench_coop(case: ModelCase, cfg: BenchConfig, workdir: Path, log=print) -> tuple[list[Row], dict]:
    """Reference-style vs dpclab CoOp epochs on one model; returns rows and the objects DPC's bench reuses."""
    from .pipeline import build_method

    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    t0 = time.perf_counter()
    backbone = load_clip(case.model, case.pretrained, device)
    log(f"[{case.label}] loaded in {time.perf_counter() - t0:.1f}s; {case.classes} classes x {case.shots} shots, "
        f"batch {case.batch_size}, {case.epochs} epoch(s), device {device}")
    data_root = workdir / f"data-{case.classes}x{case.shots}"
    if not (data_root / BENCH_SPEC.dirname / BENCH_SPEC.split_file).is_file():
        write_bench_dataset(data_root, case.classes, case.shots, cfg.image_px, cfg.seed)
    cache = workdir / f"cache-{backbone.key}"
    exp = _experiment(case, backbone, data_root, cache, cfg.seed)
    items = exp.train_split.train
    labels = torch.tensor([d.label for d in items])
    tcfg = TrainConfig(epochs=case.epochs, batch_size=case.batch_size, lr=0.002, seed=cfg.seed, progress=False)
    n_cls = len(exp.train_task.classnames)

    coop = build_method("coop", backbone, {}, n_cls, seed=cfg.seed)
    ref = ReferenceCoOp(backbone, exp.train_task.classnames, coop.ctx).to(device)
    faith = faithfulness(coop, ref, exp, tcfg)
    log(f"[{case.label}] faithfulness (first batch): loss dpclab {faith['loss_dpclab']:.6f}  reference "
        f"{faith['loss_reference']:.6f}  |diff| {faith['abs_diff']:.2e}  ctx-grad rel. diff {faith['grad_rel_diff']:.2e}")

    # The three phases are interleaved epoch by epoch, so that drifting load on a shared machine hits them alike:
    # a reference-style epoch; dpclab encoding that epoch's fresh view; dpclab's fit() training that epoch on the
    # cached view (fit resumes from its own epoch checkpoint each time; its per-epoch seconds exclude the resume).
    opt = torch.optim.SGD([ref.ctx], lr=tcfg.lr, momentum=tcfg.momentum, weight_decay=tcfg.weight_decay)
    run_dir = workdir / f"run-{backbone.key}"
    shutil.rmtree(run_dir, ignore_errors=True)  # a fresh run (fit would resume a finished one)
    ref_times, enc_times, ref_mem, enc_mem, fit_mem = [], [], Peak(), Peak(), Peak()
    hist: list[dict] = []
    for epoch in range(case.epochs):
        with peak_memory(device) as mem:
            _sync(device)
            t = time.perf_counter()
            steps = reference_epoch(ref, items, labels, exp.transforms["train"], opt, epoch, tcfg, device)
            _sync(device)
            ref_times.append(time.perf_counter() - t)
        ref_mem = max(ref_mem, mem, key=lambda m: m.rss_mib)
        with peak_memory(device) as mem:
            _sync(device)
            t = time.perf_counter()
            exp.features(items, "train", epoch)
            _sync(device)
            enc_times.append(time.perf_counter() - t)
        enc_mem = max(enc_mem, mem, key=lambda m: m.rss_mib)
        with peak_memory(device) as mem:
            hist = fit(coop, exp.train_examples("features"), exp.train_task, tcfg, run_dir, {"bench": case.label},
                       stop_after=epoch + 1)
            _sync(device)
        fit_mem = max(fit_mem, mem, key=lambda m: m.rss_mib)
    log(f"[{case.label}] reference-style: {statistics.median(ref_times):.3f}s/epoch ({steps} steps), "
        f"peak RSS {ref_mem.rss_mib:.0f} MiB")
    train_times = [h["seconds"] for h in hist]
    ref_s, enc_s, train_s = (statistics.median(x) for x in (ref_times, enc_times, train_times))
    warm_x, cold_x = ref_s / train_s, ref_s / (train_s + enc_s)
    log(f"[{case.label}] dpclab: {train_s:.3f}s/epoch on cached features (+{enc_s:.3f}s to encode a fresh view), "
        f"peak RSS {fit_mem.rss_mib:.0f} MiB")
    log(f"[{case.label}] speed-up per CoOp epoch: {warm_x:.1f}x (view cached), {cold_x:.1f}x (fresh view encoded "
        f"every epoch)")
    m, sec = case.label, "coop"
    shape = f"{n_cls} classes x {case.shots} shots, batch {case.batch_size}, {device}"
    rows = [
        Row(sec, m, "speedup_cached_view", warm_x, "x", "reference epoch / dpclab epoch on cached features"),
        Row(sec, m, "speedup_fresh_view", cold_x, "x", "reference epoch / (dpclab epoch + encoding one view)"),
        Row(sec, m, "reference_epoch", ref_s, "s", shape),
        Row(sec, m, "dpclab_epoch_cached", train_s, "s", shape),
        Row(sec, m, "dpclab_encode_view", enc_s, "s", f"{len(items)} images"),
        Row(sec, m, "faithfulness_loss_abs_diff", faith["abs_diff"], "",
            f"dpclab {faith['loss_dpclab']:.6f} vs reference {faith['loss_reference']:.6f}"),
        Row(sec, m, "faithfulness_ctx_grad_rel_diff", faith["grad_rel_diff"], ""),
        Row(sec, m, "peak_rss_reference", ref_mem.rss_mib, "MiB", f"+{ref_mem.rss_mib - ref_mem.rss_start_mib:.0f}"),
        Row(sec, m, "peak_rss_dpclab_encode", enc_mem.rss_mib, "MiB", f"+{enc_mem.rss_mib - enc_mem.rss_start_mib:.0f}"),
        Row(sec, m, "peak_rss_dpclab_train", fit_mem.rss_mib, "MiB", f"+{fit_mem.rss_mib - fit_mem.rss_start_mib:.0f}"),
    ]
    if device.type == "cuda":
        rows += [Row(sec, m, "peak_cuda_reference", ref_mem.cuda_mib, "MiB"),
                 Row(sec, m, "peak_cuda_dpclab_train", fit_mem.cuda_mib, "MiB")]
    return rows, {"backbone": backbone, "experiment": exp, "coop": coop, "tcfg": tcfg, "coop_epoch_s": train_s,
                  "ref_epoch_s": ref_s, "device": device}


def bench_dpc(case: ModelCase, ctx: dict, cfg: BenchConfig, log=print) -> tuple[list[Row], nn.Module | None]:
    """DPC's step-2 epoch on top of the CoOp just trained (only when the DPC plug-in is installed)."""
    from .methods import PLUGINS
    from .pipeline import build_method

    if "dpc" not in PLUGINS:
        log(f"[{case.label}] DPC: not measured ('dpc' is not in PLUGINS on this branch)")
        return [], None
    exp, device = ctx["experiment"], ctx["device"]
    method = build_method("coop+dpc", ctx["backbone"], {}, len(exp.train_task.classnames), base_method=ctx["coop"])
    spec = PLUGINS["dpc"]
    tcfg = TrainConfig(**{**ctx["tcfg"].__dict__, **spec.train, "epochs": cfg.dpc_epochs, "progress": False})
    for view in range(tcfg.views()):
        exp.features(exp.train_split.train, "train", view)
    with peak_memory(device) as mem:
        hist = fit(method, exp.train_examples(method.input_kind), exp.train_task, tcfg, None)
    dpc_s = statistics.median(h["seconds"] for h in hist)
    log(f"[{case.label}] DPC step 2: {dpc_s:.3f}s/epoch (batch {tcfg.batch_size}), peak RSS {mem.rss_mib:.0f} MiB")
    return [Row("dpc", case.label, "dpc_step2_epoch", dpc_s, "s", f"batch {tcfg.batch_size}"),
            Row("dpc", case.label, "dpc_epoch_over_reference_coop_epoch", dpc_s / ctx["ref_epoch_s"], "x",
                "dpclab DPC step-2 epoch / reference-style CoOp epoch"),
            Row("dpc", case.label, "peak_rss_dpc_train", mem.rss_mib, "MiB")], method


def bench_omega(case: ModelCase, dpc_method, experiment, log=print, repeats: int = 200) -> list[Row]:
    """ω slider: the one-off grid precomputation (text encoded once per ω on the grid, logits on the cached test
    features) and the latency of one slider update (a read-out of the grid)."""
    if dpc_method is None or importlib.util.find_spec("dpclab.omega") is None:
        log(f"[{case.label}] omega slider: not measured (no DPC / dpclab.omega on this branch)")
        return []
    from .omega import DEFAULT_OMEGAS, experiment_grid, omega_view

    t = time.perf_counter()
    grid = experiment_grid(dpc_method, experiment)
    build_s = time.perf_counter() - t
    times = []
    for i in range(repeats):
        w = DEFAULT_OMEGAS[i % len(DEFAULT_OMEGAS)]
        t = time.perf_counter()
        omega_view(grid, w, 1.0 - w)
        times.append(time.perf_counter() - t)
    update_ms = 1000 * statistics.median(times)
    log(f"[{case.label}] omega slider: grid of {len(grid.omegas)} values built in {build_s:.2f}s; "
        f"one update {update_ms:.4f} ms")
    return [Row("omega", case.label, "slider_update_latency", update_ms, "ms", f"median of {repeats} read-outs"),
            Row("omega", case.label, "omega_grid_build", build_s, "s", f"{len(grid.omegas)} values, base+new")]


def bench_notebooks(out_dir: Path, quick: bool = True, log=print) -> list[Row]:
    """Wall time of the notebook suite, ``python -m dpclab report [--quick]``, when that command exists."""
    from .cli import build_parser

    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    if "report" not in sub.choices:
        log("notebooks: not measured (no `python -m dpclab report` on this branch)")
        return []
    cmd = [sys.executable, "-m", "dpclab", "report", "--out", str(out_dir)] + (["--quick"] if quick else [])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    log(f"notebooks: `{' '.join(cmd[1:])}` took {seconds:.1f}s ({status}; {summary})")
    return [Row("notebooks", "", "report_wall_time" + ("_quick" if quick else ""), seconds, "s", f"{status}; {summary}")]


# -------------------------------------------------------------------------------------------------- output
def write_csv(rows: Sequence[Row], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["section", "model", "metric", "value", "unit", "note"])
    for r in rows:
        w.writerow([r.section, r.model, r.metric, f"{r.value:.6g}", r.unit, r.note])
    atomic_write_text(path, buf.getvalue())


def markdown(rows: Sequence[Row], header: str) -> str:
    """A short table per model (speed-ups first), then the other sections."""
    def get(model, metric):
        return next((r for r in rows if r.model == model and r.metric == metric), None)

    lines = [header, "", "| model | workload | reference s/epoch | dpclab s/epoch (cached view) | + encode a view | "
             "**speed-up, cached view** | **speed-up, fresh view** | loss |diff| | peak RSS ref / dpclab (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r.model for r in rows if r.section == "coop"):
        v = {k: get(model, k) for k in ("reference_epoch", "dpclab_epoch_cached", "dpclab_encode_view",
                                         "speedup_cached_view", "speedup_fresh_view", "faithfulness_loss_abs_diff",
                                         "peak_rss_reference", "peak_rss_dpclab_train")}
        lines.append(f"| {model} | {v['reference_epoch'].note} | {v['reference_epoch'].value:.3f} | "
                     f"{v['dpclab_epoch_cached'].value:.3f} | {v['dpclab_encode_view'].value:.3f} | "
                     f"**{v['speedup_cached_view'].value:.1f}x** | **{v['speedup_fresh_view'].value:.1f}x** | "
                     f"{v['faithfulness_loss_abs_diff'].value:.1e} | {v['peak_rss_reference'].value:.0f} / "
                     f"{v['peak_rss_dpclab_train'].value:.0f} |")
    other = [r for r in rows if r.section != "coop"]
    if other:
        lines += ["", "| section | model | metric | value | note |", "|---|---|---|---|---|"]
        lines += [f"| {r.section} | {r.model} | {r.metric} | {r.value:.4g} {r.unit} | {r.note} |" for r in other]
    return "\n".join(lines) + "\n"


def run_bench(cfg: BenchConfig, log=print) -> list[Row]:
    """Run every part of the benchmark; write the CSV and markdown; return the rows."""
    with tempfile.TemporaryDirectory(prefix="dpclab-bench-") as tmp:
        workdir = Path(cfg.workdir) if cfg.workdir is not None else Path(tmp)
        register_tiny_model(workdir)
        rows: list[Row] = []
        for case in cfg.cases:
            coop_rows, ctx = bench_coop(case, cfg, workdir, log)
            rows += coop_rows
            dpc_rows, dpc_method = bench_dpc(case, ctx, cfg, log)
            rows += dpc_rows
            rows += bench_omega(case, dpc_method, ctx["experiment"], log)
        if cfg.notebooks:
            rows += bench_notebooks(Path(cfg.out_csv).parent / "notebooks", cfg.notebooks_quick, log)
    header = (f"# dpclab benchmark ({time.strftime('%Y-%m-%d %H:%M')}, torch {torch.__version__}, "
              f"{torch.get_num_threads()} CPU threads{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''})\n\n"
              f"Speed-up = reference-style CoOp epoch time / dpclab CoOp epoch time, measured in the same process. "
              f"'cached view': the augmented view's features are cached (re-runs, other methods on the same seed, "
              f"n_views < epochs); 'fresh view': dpclab also encodes a new augmented view that epoch (the faithful "
              f"default).")
    write_csv(rows, Path(cfg.out_csv))
    atomic_write_text(cfg.out_md, markdown(rows, header))
    return rows


# ---------------------------------------------------------------------------------------------------- CLI
def parse_model(text: str) -> tuple[str, str | None]:
    """``NAME[:PRETRAINED]``; ``small`` = the embedded model if present, else a random tiny one."""
    if text == "small":
        return default_small_model()
    name, _, pretrained = text.partition(":")
    return name, (None if pretrained in ("", "random", "none") else pretrained)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m dpclab.bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~1 minute smoke run: the small model only, tiny workload")
    p.add_argument("--model", action="append", metavar="NAME[:PRETRAINED]",
                   help="model(s) to benchmark (repeatable); default: 'small' (embedded or tiny) and ViT-B-16:random")
    p.add_argument("--classes", type=int, help="classes of the small-model workload (default 10; quick 4)")
    p.add_argument("--shots", type=int, help="shots per class (default 16; quick 4)")
    p.add_argument("--batch-size", type=int, help="batch size (default 32; quick 4)")
    p.add_argument("--epochs", type=int, help="epochs per loop (default 3; quick 2)")
    p.add_argument("--vit-classes", type=int, default=4, help="classes for ViT-B models (default 4)")
    p.add_argument("--vit-shots", type=int, default=2, help="shots for ViT-B models (default 2)")
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, help="torch CPU threads for both loops (on a busy shared machine 1 avoids "
                   "thread oversubscription, which slows small ops several-fold)")
    p.add_argument("--skip-notebooks", action="store_true", help="do not time `python -m dpclab report`")
    p.add_argument("--notebooks-full", action="store_true", help="time the full notebook suite instead of "
                   "`report --quick`")
    p.add_argument("--csv", default="reports/bench/bench.csv")
    p.add_argument("--markdown", default="reports/bench/bench.md")
    p.add_argument("--workdir", help="keep generated data and caches here (default: a temporary folder)")
    return p


def config_from_args(args: argparse.Namespace) -> BenchConfig:
    models = [parse_model(m) for m in (args.model or (["small"] if args.quick else ["small", "ViT-B-16"]))]
    cases = []
    for name, pretrained in models:
        big = name.startswith("ViT-") or name.startswith("RN")
        if big:
            cases.append(ModelCase(name, pretrained, args.vit_classes, args.vit_shots, min(4, args.batch_size or 4),
                                   args.epochs or 2))
        else:
            cases.append(ModelCase(name, pretrained, args.classes or (4 if args.quick else 10),
                                   args.shots or (4 if args.quick else 16), args.batch_size or (4 if args.quick else 32),
                                   args.epochs or (2 if args.quick else 3)))
    return BenchConfig(cases=cases, device=args.device, notebooks=not (args.skip_notebooks or args.quick),
                       notebooks_quick=not args.notebooks_full,
                       out_csv=Path(args.csv), out_md=Path(args.markdown),
                       workdir=Path(args.workdir) if args.workdir else None)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    cfg = config_from_args(args)
    threads = torch.get_num_threads()
    if args.threads:
        torch.set_num_threads(args.threads)
    t = time.perf_counter()
    rows = run_bench(cfg)
    print(f"\nwrote {cfg.out_csv} and {cfg.out_md} in {time.perf_counter() - t:.0f}s\n")
    print(Path(cfg.out_md).read_text())
    torch.set_num_threads(threads)
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
