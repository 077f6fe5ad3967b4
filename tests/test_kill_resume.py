"""kill -9 in the middle of an epoch of ``python -m dpclab train`` (a mid-epoch checkpoint, ``--train
checkpoint_steps=1``), then the same command again: the resumed run ends with exactly the metrics and learned context
of an uninterrupted run; in-process, a run interrupted between two mid-epoch checkpoints resumes exactly too. Plus
the ways to make your own model loadable by name (``DPCLAB_MODEL_CONFIGS``, a config-file path as the model name)
that such a subprocess needs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import TINY_CONFIG, write_json_dataset
from dpclab.backbones import MODEL_CONFIGS_ENV, load_clip, register_model_configs

REPO = Path(__file__).resolve().parents[1]


def _write_config(folder: Path, name: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.json"
    path.write_text(json.dumps(TINY_CONFIG))
    return path


# ------------------------------------------------------------------------------------ custom model configs
def test_model_configs_from_environment_variable(tmp_path, monkeypatch):
    a = _write_config(tmp_path / "dir_a", "dpclab-env-tiny-a")
    b = _write_config(tmp_path / "elsewhere", "dpclab-env-tiny-b")
    with pytest.raises(ValueError, match="Unknown open_clip model 'dpclab-env-tiny-a'.*DPCLAB_MODEL_CONFIGS"):
        load_clip("dpclab-env-tiny-a", None, "cpu")
    monkeypatch.setenv(MODEL_CONFIGS_ENV, f"{a.parent}{os.pathsep}{b}")  # a folder and a single file
    for name in ("dpclab-env-tiny-a", "dpclab-env-tiny-b"):
        bb = load_clip(name, None, "cpu")
        assert bb.model_name == name and bb.image_size == 32 and bb.model.text_projection.shape == (32, 32)


def test_config_file_as_model_name_and_weights_file(tmp_path):
    cfg = _write_config(tmp_path / "cfgs", "dpclab-file-tiny")
    torch.manual_seed(3)
    first = load_clip(str(cfg), None, "cpu")
    assert first.model_name == "dpclab-file-tiny"
    weights = tmp_path / "w.pt"
    torch.save(first.model.state_dict(), weights)
    again = load_clip(str(cfg), str(weights), "cpu")
    for (k, x), (_, y) in zip(first.model.state_dict().items(), again.model.state_dict().items()):
        assert torch.equal(x, y), k


def test_missing_config_path_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.setenv(MODEL_CONFIGS_ENV, str(tmp_path / "no_such_dir"))
    with pytest.raises(FileNotFoundError, match="no_such_dir does not exist \\(from DPCLAB_MODEL_CONFIGS"):
        load_clip("ViT-B-16", None, "cpu")
    monkeypatch.delenv(MODEL_CONFIGS_ENV)
    with pytest.raises(FileNotFoundError, match="missing.json does not exist"):
        load_clip(str(tmp_path / "missing.json"), None, "cpu")


# --------------------------------------------------------------------------------------------- kill -9
MODEL = "dpclab-kill-tiny"
EPOCHS = 5


@pytest.fixture
def setup(tmp_path):
    """A fixture dataset, a tiny model config + weights file, and the environment a subprocess needs."""
    write_json_dataset(tmp_path / "data")
    cfg_dir = tmp_path / "configs"
    _write_config(cfg_dir, MODEL)
    register_model_configs(cfg_dir)
    torch.manual_seed(11)
    weights = tmp_path / f"{MODEL}.pt"
    torch.save(load_clip(MODEL, None, "cpu").model.state_dict(), weights)
    # the subprocess uses this process's thread count, so its float reductions match the in-process run's
    env = {**os.environ, MODEL_CONFIGS_ENV: str(cfg_dir), "OMP_NUM_THREADS": str(torch.get_num_threads()),
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return tmp_path, weights, env


def _command(tmp_path: Path, weights: Path, name: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "dpclab", "train", "--dataset", "eurosat", "--data-root", str(tmp_path / "data"),
            "--model", MODEL, "--pretrained", str(weights), "--shots", "4", "--seeds", "1",
            "--epochs", str(EPOCHS), "--batch-size", "4", "--lr", "0.05", "--device", "cpu",
            "--cache-dir", str(tmp_path / f"cache-{name}"), "--runs-dir", str(tmp_path / f"runs-{name}"),
            "--results", str(tmp_path / f"runs-{name}" / "results.csv"), "--no-progress", *extra]


def _load(ckpt: Path) -> dict | None:
    try:
        return torch.load(ckpt, weights_only=True)
    except (OSError, RuntimeError, EOFError):  # not there yet
        return None


def _finished(runs: Path) -> tuple[dict, torch.Tensor]:
    (result,) = runs.rglob("result.json")
    stored = json.loads(result.read_text())
    ctx = torch.load(result.parent / "model.pt", weights_only=True)["state"]["ctx"]
    return stored, ctx


def _trajectory(history: list[dict]) -> list[tuple]:
    return [(h["epoch"], h["lr"], h["steps"], h["loss"], h["acc"]) for h in history]


def test_kill_9_mid_epoch_then_resume_equals_uninterrupted_run(setup, monkeypatch):
    from dpclab.lab.cli import main

    tmp_path, weights, env = setup
    # the uninterrupted run: the same command, in this process (saves a slow interpreter start); checkpoint_steps is
    # not part of the run's configuration, so it runs without it
    monkeypatch.setenv(MODEL_CONFIGS_ENV, env[MODEL_CONFIGS_ENV])
    assert main(_command(tmp_path, weights, "full")[3:]) == 0

    cmd = _command(tmp_path, weights, "killed", "--train", "checkpoint_steps=1")
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    runs = tmp_path / "runs-killed"
    deadline = time.monotonic() + 240
    ckpt = state = None
    while state is None and proc.poll() is None and time.monotonic() < deadline:
        found = list(runs.rglob("checkpoint.pt"))
        seen = _load(found[0]) if found else None
        if seen is not None and "partial" in seen and seen["epoch"] >= 0:  # inside an epoch after a finished one
            proc.send_signal(signal.SIGSTOP)  # freeze it, then make sure the checkpoint on disk is still mid-epoch
            state = _load(found[0])
            if state is None or "partial" not in state:
                state = None
                proc.send_signal(signal.SIGCONT)
            ckpt = found[0]
        time.sleep(0.01)
    assert state is not None, f"no mid-epoch checkpoint appeared: {proc.communicate()[1] if proc.poll() else ''}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert torch.load(ckpt, weights_only=True)["partial"] == state["partial"]  # killed exactly there
    epoch, steps = state["partial"]["epoch"], state["partial"]["steps"]
    assert 1 <= epoch < EPOCHS and steps >= 1 and not list(runs.rglob("result.json"))  # it really was cut short

    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr
    full, full_ctx = _finished(tmp_path / "runs-full")
    resumed, resumed_ctx = _finished(runs)
    # bit-identical on CPU: same metrics, same loss trajectory (the resumed epoch's too), same learned context
    assert resumed["metrics"] == full["metrics"]
    assert _trajectory(resumed["history"]) == _trajectory(full["history"])
    assert torch.equal(resumed_ctx, full_ctx)
    assert resumed["config_fingerprint"] == full["config_fingerprint"]


class _Killed(Exception):
    pass


@pytest.mark.parametrize("method", ["coop", "coop+dpc", "maple"])
def test_mid_epoch_checkpoint_resumes_exactly_in_process(method, json_root, tmp_path, tiny_backbone, monkeypatch):
    """Interrupted after step 7 of epoch 1 (of 2) with a checkpoint every 3 steps: the resumed fit redraws epoch 1's
    batches (DPC: its hard negatives from the epoch's generator too), skips the 6 saved steps, ends bit-identical;
    a pixel method (MaPLe) decodes none of the skipped images."""
    from dpclab.methods.dpc import DPC
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig
    from dpclab.methods import resolve
    from dpclab.train import TrainConfig, fit

    cfg = RunConfig.of(method="coop", dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None, progress=False)
    exp = Experiment.prepare(cfg, tiny_backbone)
    data, task = exp.train_examples("pixels" if method == "maple" else "features"), exp.train_task
    tcfg = TrainConfig(epochs=2, batch_size=1, lr=0.05, seed=1, progress=False, checkpoint_steps=3)

    def fresh():
        if method != "coop+dpc":
            return resolve(method).build(tiny_backbone, seed=1)
        base = resolve("coop").build(tiny_backbone)
        with torch.no_grad():
            base.ctx.add_(0.01 * torch.randn(base.ctx.shape, generator=torch.Generator().manual_seed(0)))
        return DPC(base)

    whole = fresh()
    full = fit(whole, data, task, tcfg)
    per_epoch = full[0]["steps"]
    assert per_epoch > 7

    cut = fresh()
    done = [0]
    real_step = cut.step

    def step(loss, opt, scaler):
        real_step(loss, opt, scaler)
        done[0] += 1
        if done[0] == per_epoch + 7:
            raise _Killed

    cut.step = step
    with pytest.raises(_Killed):
        fit(cut, data, task, tcfg, tmp_path / "rd")
    saved = torch.load(tmp_path / "rd" / "checkpoint.pt", weights_only=True)
    assert saved["epoch"] == 0 and saved["partial"]["epoch"] == 1 and saved["partial"]["steps"] == 6

    resumed_method = fresh()
    from dpclab.data.features import ImageList

    decoded, real_get = [], ImageList.__getitem__
    monkeypatch.setattr(ImageList, "__getitem__", lambda self, i: decoded.append(i) or real_get(self, i))
    resumed = fit(resumed_method, data, task, tcfg, tmp_path / "rd")
    if method == "maple":
        assert len(decoded) == per_epoch - 6  # batch 1: only the steps of epoch 1 not yet done
    assert _trajectory(resumed) == _trajectory(full)
    assert all(torch.equal(a, b) for a, b in zip(resumed_method.parameters(), whole.parameters()))
    assert "partial" not in torch.load(tmp_path / "rd" / "checkpoint.pt", weights_only=True)


# ------------------------------------------------------------------------------------------- determinism
def test_two_identical_runs_are_bit_identical_even_with_random_context_init(json_root, tmp_path, tiny_backbone):
    """Random context initialisation (ctx_init=None) is drawn from the run's seed, not from whatever state the
    global RNG is in, so repeating a run in the same process (a notebook) gives the same numbers."""
    from dpclab.pipeline import run
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig

    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=4, seed=1, device="cpu",
                    cache_dir=str(tmp_path / "cache"), runs_dir=str(tmp_path / "runs"), results=None,
                    train={"epochs": 2, "batch_size": 4, "lr": 0.05}, method_cfg={"ctx_init": None, "n_ctx": 4},
                    if_exists="overwrite", progress=False)
    exp = Experiment.prepare(cfg, tiny_backbone)
    first = run(cfg, experiment=exp)
    torch.randn(100)  # disturb the global RNG, as any other notebook cell would
    second = run(cfg, experiment=exp)
    assert second.metrics == first.metrics and torch.equal(second.method.ctx, first.method.ctx)
    assert [h["loss"] for h in second.history] == [h["loss"] for h in first.history]
    from dataclasses import replace

    other_seed = run(replace(cfg, seed=2), experiment=exp)
    assert not torch.equal(other_seed.method.ctx, first.method.ctx)


def test_checkpoint_options_change_neither_the_run_directory_nor_the_fingerprint(tiny_backbone, tmp_path):
    """A run interrupted without ``checkpoint_minutes`` and resumed with it (or the other way round) resumes in its
    own directory: how often a run checkpoints is not part of what it is."""
    from dpclab.methods.table import resolve
    from dpclab.runconfig import RunConfig, train_config
    from dpclab.runkey import full_fingerprint, run_key
    from dpclab.train import TrainConfig

    def key(cfg):
        return run_key(cfg, train_config(cfg, resolve(cfg.method)), tiny_backbone.key, "x", (0.08, 1.0))

    plain = RunConfig.of(method="coop+dpc", dataset="eurosat", runs_dir=str(tmp_path), train={"epochs": 3})
    often = RunConfig.of(method="coop+dpc", dataset="eurosat", runs_dir=str(tmp_path),
                         train={"epochs": 3, "checkpoint_minutes": 1.5}, base_train={"checkpoint_steps": 10})
    assert key(plain).run_dir == key(often).run_dir and key(plain).fingerprint == key(often).fingerprint
    other = RunConfig.of(method="coop+dpc", dataset="eurosat", runs_dir=str(tmp_path), train={"epochs": 4})
    assert key(other).run_dir != key(plain).run_dir
    assert full_fingerprint(TrainConfig(checkpoint_steps=5, checkpoint_minutes=0), {}) == \
        full_fingerprint(TrainConfig(), {})
    with pytest.raises(ValueError, match="checkpoint_steps and checkpoint_minutes must be >= 0"):
        TrainConfig(checkpoint_steps=-1)
