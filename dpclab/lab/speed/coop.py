"""CoOp epochs on a small bench dataset, dpclab against the reference-style loop (with a faithfulness check: same
loss and gradient on one batch), DPC's step-2 epoch, the ω slider's latency, and the notebook suite's wall time."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from dpclab.backbones import Backbone, load_clip, resolve_device
from dpclab.data.features import ImageList, cached_features
from dpclab.lab.speed.config import BenchConfig, ModelCase
from dpclab.lab.speed.reference import ReferenceCoOp, reference_epoch
from dpclab.lab.speed.report import Row
from dpclab.lab.synthetic import BENCH_SPEC, write_bench_dataset
from dpclab.lab.timing import Peak, peak_memory, sync
from dpclab.methods.table import resolve
from dpclab.omega import DEFAULT_OMEGAS, experiment_grid, omega_view
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.train import Examples, TrainConfig, epoch_generator, fit


def _experiment(case: ModelCase, backbone: Backbone, data_root: Path, cache: Path, seed: int):
    cfg = RunConfig.of(method="coop", dataset="bench", data_root=str(data_root), shots=case.shots, seed=seed,
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

    coop = resolve("coop").build(backbone, {}, n_cls, seed=cfg.seed)
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
            sync(device)
            t = time.perf_counter()
            steps = reference_epoch(ref, items, labels, exp.transforms["train"], opt, epoch, tcfg, device)
            sync(device)
            ref_times.append(time.perf_counter() - t)
        ref_mem = max(ref_mem, mem, key=lambda m: m.rss_mib)
        with peak_memory(device) as mem:
            sync(device)
            t = time.perf_counter()
            exp.features(items, "train", epoch)
            sync(device)
            enc_times.append(time.perf_counter() - t)
        enc_mem = max(enc_mem, mem, key=lambda m: m.rss_mib)
        with peak_memory(device) as mem:
            hist = fit(coop, exp.train_examples("features"), exp.train_task, tcfg, run_dir, {"bench": case.label},
                       stop_after=epoch + 1)
            sync(device)
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
    """DPC's step-2 epoch on top of the CoOp just trained."""
    exp, device = ctx["experiment"], ctx["device"]
    method = resolve("coop+dpc").build(ctx["backbone"], {}, len(exp.train_task.classnames), base_method=ctx["coop"])
    tcfg = TrainConfig(**{**ctx["tcfg"].__dict__, **resolve("coop+dpc").train, "epochs": cfg.dpc_epochs,
                          "progress": False})
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
    if dpc_method is None:
        log(f"[{case.label}] omega slider: not measured (no DPC step 2 was trained)")
        return []

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
    """Wall time of the notebook suite, ``python -m dpclab report [--quick]``, run as a user runs it."""
    cmd = [sys.executable, "-m", "dpclab", "report", "--out", str(out_dir)] + (["--quick"] if quick else [])
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    summary = (proc.stdout.strip().splitlines() or [""])[-1]
    status = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    log(f"notebooks: `{' '.join(cmd[1:])}` took {seconds:.1f}s ({status}; {summary})")
    return [Row("notebooks", "", "report_wall_time" + ("_quick" if quick else ""), seconds, "s", f"{status}; {summary}")]
