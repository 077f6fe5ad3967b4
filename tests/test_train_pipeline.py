"""The training loop, the pipeline end to end on a fixture dataset, resume, results table, CLI."""

from __future__ import annotations

import dataclasses
import math

import pandas as pd
import pytest
import torch

from dpclab.evaluate import append_result, harmonic_mean, summarize
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.methods import resolve
from dpclab.train import TrainConfig, lr_at_epoch


def test_lr_schedule_matches_dassl_constant_warmup_cosine():
    cfg = TrainConfig(epochs=10, lr=0.002)
    lrs = [lr_at_epoch(e, cfg.lr, cfg) for e in range(10)]
    assert lrs[0] == 1e-5 and lrs[1] == pytest.approx(0.002)
    assert lrs[5] == pytest.approx(0.5 * 0.002 * (1 + math.cos(math.pi * 4 / 10)))
    assert all(a > b for a, b in zip(lrs[1:], lrs[2:]))
    # the same as torch's CosineAnnealingLR stepped after every post-warm-up epoch
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.002)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=10)
    for e in range(1, 10):
        assert lrs[e] == pytest.approx(opt.param_groups[0]["lr"], rel=1e-9)
        opt.step()
        sched.step()


def _cfg(root, tmp_path, **kw):
    base = dict(method="coop", dataset="eurosat", data_root=str(root), model="unused", pretrained="unused",
                shots=4, seed=1, device="cpu", cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"),
                results=str(tmp_path / "runs" / "results.csv"), train={"epochs": 4, "batch_size": 4, "lr": 0.05},
                progress=False)
    base.update(kw)
    return RunConfig.of(**base)


def test_coop_trains_and_beats_its_start(json_root, tmp_path, tiny_backbone):
    cfg = _cfg(json_root, tmp_path)
    exp = Experiment.prepare(cfg, tiny_backbone)
    assert [t.split for t in exp.tasks.values()] == ["base", "new", "all"]
    assert len(exp.tasks["base"].classnames) == 3 and len(exp.tasks["new"].classnames) == 2
    res = run(cfg, experiment=exp)
    hist = res.history
    assert len(hist) == 4 and hist[0]["lr"] == 1e-5 and hist[1]["lr"] == pytest.approx(0.05)
    assert all(h["steps"] == 3 for h in hist)  # 12 base-class shots / batch 4
    m = res.metrics
    assert m["hm"] == pytest.approx(harmonic_mean(m["base"], m["new"]))
    table = pd.read_csv(cfg.source.results)
    assert list(table["method"]) == ["coop"] and table["base"][0] == pytest.approx(m["base"])
    assert (res.run_dir / "model.pt").is_file() and (res.run_dir / "result.json").is_file()
    # the frozen CLIP did not move, only the context did
    assert all(not p.requires_grad for p in res.method.clip.parameters())
    assert [n for n, p in res.method.named_parameters() if p.requires_grad] == ["ctx"]


def test_fit_lowers_the_loss_on_separable_features(tiny_backbone):
    """A few epochs of CoOp on distinct image features fit them (the random tiny image tower cannot separate
    the fixture images, so features are drawn directly here)."""
    from dpclab.methods.base import Task
    from dpclab.train import Examples, fit

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat(8)
    centres = torch.randn(4, 32, generator=g)
    feats = centres[labels] + 0.1 * torch.randn(32, 32, generator=g)
    method = resolve("coop").build(tiny_backbone)
    task = Task(("cat", "dog", "car", "tree"))
    before = method.loss(feats, labels, task)[0].item()
    hist = fit(method, Examples(labels, features=lambda v: feats), task,
               TrainConfig(epochs=15, batch_size=8, lr=2.0, progress=False))
    after = method.loss(feats, labels, task)[0].item()
    assert after < 0.9 * before and hist[-1]["loss"] < hist[0]["loss"]


def test_rerun_reuses_or_refuses_never_silently_overwrites(json_root, tmp_path, tiny_backbone):
    cfg = _cfg(json_root, tmp_path)
    exp = Experiment.prepare(cfg, tiny_backbone)
    first = run(cfg, experiment=exp)
    again = run(cfg, experiment=exp)
    assert again.reused and again.metrics == first.metrics
    ctx_first = first.method.ctx.detach().clone()
    assert torch.equal(again.method.ctx, ctx_first)
    with pytest.raises(FileExistsError, match="already holds a finished run.*--overwrite"):
        run(_cfg(json_root, tmp_path, if_exists="error"), experiment=exp)
    over = run(_cfg(json_root, tmp_path, if_exists="overwrite"), experiment=exp)
    assert not over.reused and over.metrics == first.metrics  # deterministic on CPU


def test_interrupted_training_resumes_to_the_same_result(json_root, tmp_path, tiny_backbone):
    from dpclab.train import fit

    cfg = _cfg(json_root, tmp_path, train={"epochs": 5, "batch_size": 4, "lr": 0.05})
    exp = Experiment.prepare(cfg, tiny_backbone)
    full = run(cfg, experiment=exp)

    cfg2 = _cfg(json_root, tmp_path, runs_dir=str(tmp_path / "runs2"), train=cfg.train)
    method = resolve("coop").build(tiny_backbone)
    from dpclab.pipeline import plan_run
    step = plan_run(cfg2, exp)[-1]  # its run directory and fingerprint (dpclab.runkey)
    rd = step.run_dir
    fit(method, exp.train_examples("features"), exp.train_task, step.train, rd, step.fingerprint, stop_after=2)
    assert torch.load(rd / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = run(cfg2, experiment=exp)  # a fresh method object picks up the checkpoint
    assert resumed.metrics == full.metrics
    assert [h["loss"] for h in resumed.history] == [h["loss"] for h in full.history]
    assert torch.equal(resumed.method.ctx, full.method.ctx)


def test_checkpoint_of_other_config_is_not_overwritten(json_root, tmp_path, tiny_backbone):
    from dpclab.train import RunDirError, fit

    cfg = _cfg(json_root, tmp_path)
    exp = Experiment.prepare(cfg, tiny_backbone)
    rd = tmp_path / "rd"
    fit(resolve("coop").build(tiny_backbone), exp.train_examples("features"), exp.train_task,
        TrainConfig(epochs=3, batch_size=4, lr=0.01, progress=False), rd, {}, stop_after=1)
    with pytest.raises(RunDirError, match="different configuration"):
        fit(resolve("coop").build(tiny_backbone), exp.train_examples("features"), exp.train_task,
            TrainConfig(epochs=3, batch_size=4, lr=0.02, progress=False), rd, {})


def test_nan_loss_stops_with_clear_message_and_keeps_checkpoint(json_root, tmp_path, tiny_backbone):
    from dpclab.train import fit

    cfg = _cfg(json_root, tmp_path)
    exp = Experiment.prepare(cfg, tiny_backbone)
    method = resolve("coop").build(tiny_backbone)
    rd = tmp_path / "nan"
    tcfg = TrainConfig(epochs=3, batch_size=4, lr=0.01, progress=False)
    fit(method, exp.train_examples("features"), exp.train_task, tcfg, rd, {}, stop_after=1)
    good = torch.load(rd / "checkpoint.pt", weights_only=True)
    with torch.no_grad():
        method.ctx.fill_(float("nan"))
    fresh = resolve("coop").build(tiny_backbone)
    orig_loss = fresh.loss
    fresh.loss = lambda x, y, t: dataclasses.replace(orig_loss(x, y, t), total=orig_loss(x, y, t).total * float("nan"))
    with pytest.raises(FloatingPointError, match="Loss became nan at epoch 1.*last good checkpoint"):
        fit(fresh, exp.train_examples("features"), exp.train_task, tcfg, rd, {})
    kept = torch.load(rd / "checkpoint.pt", weights_only=True)
    assert kept["epoch"] == good["epoch"] and torch.equal(kept["state"]["ctx"], good["state"]["ctx"])


def test_unknown_method_and_options(tiny_backbone):
    with pytest.raises(ValueError, match="Unknown method 'cooop'.*coop"):
        resolve("cooop").build(tiny_backbone)
    with pytest.raises(ValueError, match="Unknown option.*n_ctxx"):
        resolve("coop").build(tiny_backbone, {"n_ctxx": 2})


def test_checkpoint_of_other_class_count_is_rejected(tiny_backbone):
    from dpclab.methods.base import learned_state, load_learned_state

    a = resolve("coop").build(tiny_backbone, {"csc": True}, n_classes=3)
    b = resolve("coop").build(tiny_backbone, {"csc": True}, n_classes=5)
    with pytest.raises(ValueError, match="does not fit this CoOp.*shape mismatch ctx"):
        load_learned_state(b, learned_state(a))


def test_results_table_append_and_summary(tmp_path):
    path = tmp_path / "r.csv"
    for seed, (b, n) in enumerate([(80, 60), (82, 62), (84, 58)], 1):
        append_result(path, {"dataset": "d", "method": "m", "seed": seed, "base": b, "new": n})
    s = summarize(path).iloc[0]
    assert s.base == pytest.approx(82) and s.new == pytest.approx(60) and s.runs == 3
    assert s.hm == pytest.approx(harmonic_mean(82, 60)) and s.base_std == pytest.approx(2)
    assert not list(tmp_path.glob(".*tmp*"))


def test_results_write_interrupted_leaves_old_file_intact(tmp_path, monkeypatch):
    import os

    path = tmp_path / "r.csv"
    append_result(path, {"dataset": "d", "method": "m", "seed": 1, "base": 1.0, "new": 2.0})
    before = path.read_text()

    def crash(src, dst):
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        append_result(path, {"dataset": "d", "method": "m", "seed": 2, "base": 3.0, "new": 4.0})
    assert path.read_text() == before


def test_parallel_runs_of_one_config_train_once_and_record_every_row(json_root, tmp_path, tiny_backbone):
    """Two workers asking for the same run: the run-directory lock (an flock, which also separates threads that
    open the lock file separately) makes the second wait and reuse it."""
    import threading

    cfg = _cfg(json_root, tmp_path)
    Experiment.prepare(cfg, tiny_backbone)  # write the few-shot cache first
    results = []
    workers = [threading.Thread(target=lambda: results.append(run(cfg, backbone=tiny_backbone))) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    assert sorted(r.reused for r in results) == [False, True]
    assert results[0].metrics == results[1].metrics
    table = pd.read_csv(cfg.source.results)
    assert len(table) == 1  # trained and recorded once; the other process reused the finished run
    run_dirs = list((tmp_path / "runs").rglob("result.json"))
    assert len(run_dirs) == 1


def test_concurrent_result_appends_lose_no_row(tmp_path):
    import multiprocessing as mp

    path = tmp_path / "r.csv"
    ctx = mp.get_context("fork")
    procs = [ctx.Process(target=lambda s=s: [append_result(path, {"dataset": "d", "method": "m", "seed": s * 10 + i,
                                                                  "base": 1.0, "new": 1.0}) for i in range(5)])
             for s in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
    assert sorted(pd.read_csv(path)["seed"]) == sorted(s * 10 + i for s in range(3) for i in range(5))
