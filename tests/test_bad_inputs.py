"""The bad-input catalogue: what a user can get wrong, and that each mistake gives an error naming the fix.

Already covered elsewhere (not repeated here): missing data root / dataset folder / split file, split file that is
not JSON or has malformed entries, missing and unreadable image files at load time (tests/test_data.py); unknown
model, pretrained tag, checkpoint of another architecture (tests/test_text_and_backbones.py); unknown method or
option, checkpoint of another class count, NaN loss inside ``fit``, rerun into a finished run directory, an
interrupted results-table write (tests/test_train_pipeline.py).

Added here: the same mistakes through the command line (one ``error: ...`` line, exit code 2), an unreadable image
met during feature encoding, K larger than the images of some classes, learned state of another backbone, a NaN
produced by real divergence end to end, a changed dataset under a finished run, and interrupted writes of
result.json / checkpoints, and an out-of-range ω refused before DPC's step 1 and by the slider.
"""

from __future__ import annotations

import json
import os
import re
import warnings

import pytest
import torch

from conftest import write_json_dataset
from dpclab.lab.cli import main
from dpclab.data.coop import FewShotWarning, few_shot, load_dataset
from dpclab.data.items import DatasetError
from dpclab.io import atomic_torch_save, atomic_write_text
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.methods import resolve


def _cli(tmp_path, root, *extra, model="dpclab-test-tiny"):
    return ["train", "--dataset", "eurosat", "--data-root", str(root), "--model", model, "--pretrained", "random",
            "--shots", "4", "--seeds", "1", "--epochs", "2", "--batch-size", "4", "--lr", "0.05", "--device", "cpu",
            "--cache-dir", str(tmp_path / "cache"), "--runs-dir", str(tmp_path / "runs"),
            "--results", str(tmp_path / "runs" / "results.csv"), "--no-progress", *extra]


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    errors = [line for line in err if line.startswith("error: ")]
    assert len(errors) == 1, err
    return errors[0]


# --------------------------------------------------------------------------------------- through the CLI
def test_cli_missing_data_root(tmp_path, tiny_model_name, capsys):
    assert main(_cli(tmp_path, tmp_path / "nowhere")) == 2
    line = _error_line(capsys)
    assert "Data root not found" in line and "--data-root" in line


def test_cli_missing_and_malformed_split_file(json_root, tmp_path, tiny_model_name, capsys):
    split = json_root / "eurosat" / "split_zhou_EuroSAT.json"
    good = split.read_text()
    split.write_text('{"train": [["a.png", 0]], "test": []}')
    assert main(_cli(tmp_path, json_root)) == 2
    assert "entry 0 of 'train'" in _error_line(capsys)
    split.unlink()
    assert main(_cli(tmp_path, json_root)) == 2
    line = _error_line(capsys)
    assert "Split file not found" in line and "Download the split file" in line
    split.write_text(good)
    assert main(_cli(tmp_path, json_root)) == 0


@pytest.mark.parametrize("args,message", [
    (["--method", "cooop"], "Unknown method 'cooop'. Available: zeroshot, coop"),
    (["--opt", "n_ctxx=2"], "Unknown option(s) ['n_ctxx'] for 'coop'"),
    (["--train", "epochz=3"], "Unknown training option(s) ['epochz']"),
])
def test_cli_unknown_method_and_options(json_root, tmp_path, tiny_model_name, capsys, args, message):
    assert main(_cli(tmp_path, json_root, *args)) == 2
    assert message in _error_line(capsys)


def test_cli_unknown_model(json_root, tmp_path, capsys):
    assert main(_cli(tmp_path, json_root, model="ViT-B-61")) == 2
    line = _error_line(capsys)
    assert "Unknown open_clip model 'ViT-B-61'" in line and "Did you mean" in line


@pytest.fixture(scope="module")
def wide_model_name(tmp_path_factory) -> str:
    """The tiny architecture with a wider text tower (48), registered through dpclab's config-path mechanism."""
    from conftest import TINY_CONFIG
    from dpclab.backbones import register_model_configs

    cfg = json.loads(json.dumps(TINY_CONFIG))
    cfg["text_cfg"]["width"] = 48
    path = tmp_path_factory.mktemp("wide") / "dpclab-test-tiny-wide.json"
    path.write_text(json.dumps(cfg))
    register_model_configs(path)
    return path.stem


def test_cli_checkpoint_of_another_model(json_root, tmp_path, tiny_backbone, wide_model_name, capsys):
    path = tmp_path / "tiny.pt"
    torch.save(tiny_backbone.model.state_dict(), path)
    args = _cli(tmp_path, json_root, model=wide_model_name)
    args[args.index("--pretrained") + 1] = str(path)
    assert main(args) == 2
    line = _error_line(capsys)
    assert f"does not fit model '{wide_model_name}'" in line
    assert "Pass the model name the checkpoint was trained for" in line


# ----------------------------------------------------------------------------------- unreadable image
def test_unreadable_image_met_while_encoding_names_the_file(json_root, tmp_path, tiny_backbone, capsys):
    """The loader only checks that files exist; a corrupt file is caught when the features are computed."""
    split = json.loads((json_root / "eurosat" / "split_zhou_EuroSAT.json").read_text())
    bad = json_root / "eurosat" / "2750" / split["test"][0][0]
    bad.write_bytes(b"\x89PNG truncated")
    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=4, device="cpu", cache_dir=None,
                    runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 1, "batch_size": 4},
                    progress=False)
    with pytest.raises(DatasetError, match=f"cannot be read: {bad}.*Re-download or remove it"):
        run(cfg, backbone=tiny_backbone)
    assert main(_cli(tmp_path, json_root)) == 2
    assert f"Image file cannot be read: {bad}" in _error_line(capsys)


# ------------------------------------------------------------------------------------- K > images per class
def test_more_shots_than_images_takes_all_and_warns_naming_the_classes(tmp_path):
    write_json_dataset(tmp_path, n_classes=3, per_class=(6, 2, 2))
    data = load_dataset(tmp_path, "eurosat")
    # make class 1 short: 2 training images instead of 6
    data.train = [d for d in data.train if d.label != 1] + [d for d in data.train if d.label == 1][:2]
    with pytest.warns(FewShotWarning, match=r"4 shots requested but 1 class\(es\) have fewer training images: "
                                            r"'class 1' \(2\).*smaller\s+--shots") as record:
        sampled = few_shot(data, 4, seed=1)
    assert len(record) == 1
    counts = {c: sum(d.label == c for d in sampled.train) for c in range(3)}
    assert counts == {0: 4, 1: 2, 2: 4}  # the reference's "take all" for the short class
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        few_shot(data, 2, seed=1)  # enough images everywhere: no warning


def test_cli_prints_the_few_shot_warning_as_one_line(tmp_path, tiny_model_name, capsys):
    write_json_dataset(tmp_path, n_classes=4, per_class=(3, 1, 2))
    assert main(_cli(tmp_path, tmp_path)) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("warning: ")]
    assert len(warned) == 1 and "'class 0' (3), 'class 1' (3), 'class 2' (3), 'class 3' (3)" in warned[0]


# ----------------------------------------------------------------------------- checkpoints of other things
def test_learned_state_of_another_backbone_is_rejected(tiny_backbone, wide_model_name):
    from dpclab.backbones import load_clip
    from dpclab.methods.base import learned_state, load_learned_state

    wide = resolve("coop").build(load_clip(wide_model_name, None, "cpu"))
    narrow = resolve("coop").build(tiny_backbone)
    with pytest.raises(ValueError, match=r"model.pt does not fit this CoOp \(shape mismatch ctx: \(4, 48\) vs "
                                         r"\(4, 32\)\).*pass the matching settings"):
        load_learned_state(narrow, learned_state(wide), "model.pt")


# ------------------------------------------------------------------------------------------ NaN, end to end
def test_cli_divergence_stops_with_message_and_keeps_last_good_checkpoint(json_root, tmp_path, tiny_model_name,
                                                                          capsys):
    """Epoch 0 is the warm-up (lr 1e-5) and ends with a checkpoint; epoch 1 at lr 1e38 blows the context up."""
    args = _cli(tmp_path, json_root)
    args[args.index("--epochs") + 1] = "3"
    args[args.index("--lr") + 1] = "1e38"
    assert main(args) == 2
    line = _error_line(capsys)
    assert re.search(r"Loss became (nan|inf) at epoch 1, step \d+\. Training stopped; the last good checkpoint", line)
    assert "Lower the learning rate" in line
    (ckpt,) = (tmp_path / "runs").rglob("checkpoint.pt")
    kept = torch.load(ckpt, weights_only=True)
    assert kept["epoch"] == 0 and torch.isfinite(kept["state"]["ctx"]).all()
    assert not list((tmp_path / "runs").rglob("result.json"))


# ------------------------------------------------------------------------------------ existing output dir
def test_cli_rerun_reuses_a_changed_dataset_trains_anew_and_another_config_is_refused(json_root, tmp_path,
                                                                                      tiny_model_name, capsys):
    assert main(_cli(tmp_path, json_root)) == 0
    (model_pt,) = (tmp_path / "runs").rglob("model.pt")
    stamp = model_pt.stat().st_mtime_ns
    assert main(_cli(tmp_path, json_root)) == 0
    out = capsys.readouterr().out
    assert "-> reuse the finished run" in out and "(reused finished run)" in out
    assert model_pt.stat().st_mtime_ns == stamp
    # the dataset changed: the run read other images, so it is a new run (new directory); the old one is kept
    split_path = json_root / "eurosat" / "split_zhou_EuroSAT.json"
    split = json.loads(split_path.read_text())
    split["test"] = split["test"][1:]
    split_path.write_text(json.dumps(split))
    assert main(_cli(tmp_path, json_root)) == 0
    assert "-> train" in capsys.readouterr().out
    assert len(list((tmp_path / "runs").rglob("model.pt"))) == 2 and model_pt.stat().st_mtime_ns == stamp
    # a finished run of another configuration in the same directory: refuse, name the fix, keep the old run
    (result,) = [p for p in (tmp_path / "runs").rglob("result.json") if p.parent != model_pt.parent]
    stored = json.loads(result.read_text())
    result.write_text(json.dumps({**stored, "config_fingerprint": "another"}))
    assert main(_cli(tmp_path, json_root)) == 2
    captured = capsys.readouterr()
    assert "-> refused: the run directory holds a run of another configuration" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "already holds a finished run with a different configuration" in errors[0]
    assert "--overwrite" in errors[0]
    new_pt = result.parent / "model.pt"
    new_stamp = new_pt.stat().st_mtime_ns
    assert main(_cli(tmp_path, json_root, "--overwrite")) == 0
    assert "-> retrain (--overwrite)" in capsys.readouterr().out and new_pt.stat().st_mtime_ns != new_stamp
    assert model_pt.stat().st_mtime_ns == stamp


# ------------------------------------------------------------------------------------- interrupted writes
def _crash(*_):
    raise KeyboardInterrupt


@pytest.mark.parametrize("writer", ["result.json", "checkpoint"])
def test_interrupted_write_leaves_the_old_file(tmp_path, monkeypatch, writer):
    path = tmp_path / ("result.json" if writer == "result.json" else "checkpoint.pt")
    write = ((lambda v: atomic_write_text(path, json.dumps({"metrics": v}))) if writer == "result.json" else
             (lambda v: atomic_torch_save({"metrics": v}, path)))
    read = ((lambda: json.loads(path.read_text())) if writer == "result.json" else
            (lambda: torch.load(path, weights_only=True)))
    write(1.0)
    monkeypatch.setattr(os, "replace", _crash)
    with pytest.raises(KeyboardInterrupt):
        write(2.0)
    monkeypatch.undo()
    assert read() == {"metrics": 1.0}
    write(3.0)  # and the next write works despite the stale temporary file
    assert read() == {"metrics": 3.0}


def test_experiment_with_too_few_shots_still_runs(tmp_path, tiny_backbone):
    """K larger than every class: a warning, and the run trains on all images (not an error)."""
    write_json_dataset(tmp_path, n_classes=4, per_class=(2, 1, 2))
    cfg = RunConfig.of(dataset="eurosat", data_root=str(tmp_path), shots=16, device="cpu", cache_dir=None,
                    runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 1, "batch_size": 2},
                    progress=False)
    with pytest.warns(FewShotWarning):
        exp = Experiment.prepare(cfg, tiny_backbone)
    assert len(exp.train_split.train) == 4  # 2 base classes x all 2 images

# ------------------------------------------------------------------------------------------ DPC's omega
def test_omega_out_of_range_fails_before_step_1_and_in_the_slider(json_root, tmp_path, tiny_model_name,
                                                                   tiny_backbone, capsys):
    """(DPCConfig, forward_at and the CLI's exit code are tested in tests/test_dpc.py.) Here: a bad ω is refused
    before the expensive step 1 trains anything, and the slider read-out refuses it too."""
    from dpclab.methods import PLUGINS
    from dpclab.omega import experiment_grid, omega_view

    assert "dpc" in PLUGINS
    assert main(_cli(tmp_path, json_root, "--method", "coop+dpc", "--opt", "omega_n=-0.5")) == 2
    line = _error_line(capsys)
    assert "omega_n must be a number in [0, 1]" in line and "got -0.5" in line
    assert not (tmp_path / "runs").exists()  # step 1 (CoOp, 200 epochs by default) never started

    cfg = RunConfig.of(method="coop+dpc", dataset="eurosat", data_root=str(json_root), shots=4, device="cpu",
                    cache_dir=None, runs_dir=str(tmp_path / "runs2"), results=None,
                    train={"epochs": 1, "batch_size": 4}, base_train={"epochs": 1, "batch_size": 4}, progress=False)
    res = run(cfg, backbone=tiny_backbone)
    grid = experiment_grid(res.method, res.experiment, omegas=(0.0, 0.5, 1.0))
    assert omega_view(grid, 1.0, 0.0)["omega_b"] == 1.0
    with pytest.raises(ValueError, match=r"omega must be a number in \[0, 1\].*got 1.2"):
        omega_view(grid, 1.2, 0.0)


# ------------------------------------------------------------------------- numbers out of range, data roots
@pytest.mark.parametrize("args,message", [
    (["--batch-size", "0"], "argument --batch-size: must be at least 1, got 0"),
    (["--seeds", "-1"], "argument --seeds: must be >= 0 (the papers use 1 2 3), got -1"),
    (["--epochs", "0"], "argument --epochs: must be at least 1 (to evaluate without training use `python -m dpclab "
                        "eval`"),
    (["--lr", "0"], "argument --lr: must be above 0, got 0"),
    (["--lr", "-0.1"], "argument --lr: must be above 0, got -0.1"),
    (["--shots", "two"], "argument --shots: expected an integer, got 'two'"),
])
def test_cli_numbers_out_of_range_are_usage_errors_naming_the_option(json_root, tmp_path, capsys, args, message):
    with pytest.raises(SystemExit) as exc:
        main(_cli(tmp_path, json_root, *args))
    assert exc.value.code == 2 and message in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("args,message", [
    (["--train", "epochs=0"], "--train epochs=0: must be at least 1"),
    (["--train", "batch_size=-2"], "--train batch_size=-2: must be at least 1"),
    (["--train", "lr=0"], "--train lr=0: must be above 0"),
    (["--method", "coop+dpc", "--base-train", "epochs=0"], "--base-train epochs=0: must be at least 1"),
])
def test_cli_training_overrides_out_of_range_are_one_line_errors(json_root, tmp_path, capsys, args, message):
    assert main(_cli(tmp_path, json_root, *args)) == 2
    assert message in _error_line(capsys)


@pytest.mark.parametrize("argv,message", [
    (["grid", "--quick", "--dry-run", "-p", "epochs", "0"], "epochs must be >= 1"),
    (["grid", "--quick", "--dry-run", "-p", "seeds", "1 -2"], "seeds must be >= 0"),
    (["grid", "--quick", "--dry-run", "-p", "shots", "-1"], "shots must be an integer >= 0"),
    (["grid", "--quick", "--dry-run", "-p", "precison", "amp"], "Unknown notebook parameter(s) ['precison']"),
    (["report", "--quick", "-p", "seeds", "-1"], "seeds must be >= 0"),
])
def test_grid_and_report_parameters_out_of_range_fail_before_anything_runs(tmp_path, monkeypatch, capsys, argv,
                                                                         message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert message in _error_line(capsys)
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


@pytest.mark.parametrize("argv", [["grid", "--workers", "0"], ["grid", "--threads", "-1"],
                                  ["report", "--jobs", "0"], ["report", "--timeout", "0"]])
def test_tool_counts_out_of_range_are_usage_errors(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2 and "must be" in capsys.readouterr().err


def test_a_relative_and_an_absolute_data_root_are_the_same_run(json_root, tmp_path, tiny_model_name, monkeypatch,
                                                               capsys):
    monkeypatch.chdir(json_root.parent)
    assert main(_cli(tmp_path, json_root.name)) == 0  # relative
    assert main(_cli(tmp_path, str(json_root))) == 0  # absolute: the same images, so the same run, reused
    out = capsys.readouterr().out
    assert out.count("-> train (") == 1 and out.count("-> reuse the finished run") == 1


def test_a_cuda_device_torch_cannot_see_is_one_line_naming_the_fix(json_root, tmp_path, capsys):
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    assert main(_cli(tmp_path, json_root, "--device", "cuda")) == 2
    line = _error_line(capsys)
    assert "device='cuda' but torch sees no CUDA GPU" in line and "--device cpu" in line
