"""CLI commands that wrap the world writer and the pretraining script."""

from __future__ import annotations

import json

import pytest

from dpclab.lab.cli import main


def test_world_command_writes_coop_layout(tmp_path, capsys):
    assert main(["world", "--root", str(tmp_path), "--names", "world_tint"]) == 0
    split = next((tmp_path / "world_tint").glob("split_zhou_*.json"))
    data = json.loads(split.read_text())
    assert set(data) >= {"train", "val", "test"} and data["train"]
    assert "world_tint" in capsys.readouterr().out


def test_world_command_stamps_what_it_writes_and_a_stale_world_is_regenerated(tmp_path, caplog):
    from dpclab.data.world import STAMP_FILE, ensure_world, world_stamp

    assert main(["world", "--root", str(tmp_path), "--names", "world_tint"]) == 0
    stamp = tmp_path / "world_tint" / STAMP_FILE
    image = next((tmp_path / "world_tint" / "images").rglob("*.png"))
    assert stamp.read_text().strip() == world_stamp(0)
    before = image.stat().st_mtime_ns
    assert ensure_world(tmp_path, ["world_tint"]) == []  # accepted as current: nothing rewritten
    assert image.stat().st_mtime_ns == before
    stamp.write_text("seed0-000000000000\n")  # as if an older generator had written it
    image.write_bytes(b"left over by the old generator")
    with caplog.at_level("WARNING", logger="dpclab.data.world"):
        assert ensure_world(tmp_path, ["world_tint"]) == ["world_tint"]
    said = [r.getMessage() for r in caplog.records]
    assert len(said) == 1 and "regenerating" in said[0] and "seed0-000000000000" in said[0], said
    assert stamp.read_text().strip() == world_stamp(0)
    from PIL import Image

    with Image.open(image) as im:  # the world's image again, with a new file stamp (caches keyed on it miss)
        assert im.size[0] > 0
    assert image.stat().st_mtime_ns != before


def test_pretrain_command_uses_the_pretraining_parser(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["pretrain", "--help"])
    assert exc.value.code == 0 and "--steps" in capsys.readouterr().out


# ------------------------------------------------------------------------------ what a command will run, bad input
def _train_args(root, tmp_path, model, *extra):
    return ["train", "--dataset", "eurosat", "--data-root", str(root), "--model", model, "--pretrained", "random",
            "--shots", "2", "--seeds", "1", "--device", "cpu", "--cache-dir", str(tmp_path / "c"),
            "--runs-dir", str(tmp_path / "r"), "--results", str(tmp_path / "r.csv"), "--no-progress", *extra]


def test_two_step_method_prints_each_step_before_it_starts(json_root, tmp_path, tiny_model_name, capsys):
    from dpclab.methods import PLUGINS, resolve

    from dpclab.protocol import dataset_train

    coop = {**resolve("coop").train, **dataset_train("coop", "eurosat", shots=2)}  # CoOp's rule: 2 shots, 100 epochs
    assert coop["epochs"] == 100
    # --epochs reaches step 2 only: the plan says step 1 trains coop's own default epochs, and a note says why.
    # (omega_b=2 is refused before step 1 starts, so nothing trains here)
    assert main(_train_args(json_root, tmp_path, tiny_model_name, "--method", "coop+dpc", "--epochs", "3",
                            "--opt", "omega_b=2")) == 2
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("device: CPU") and out[1].startswith("precision: fp32 (CLIP float32, prompts float32)")
    assert out[2] == "image loader workers: 0 (images decoded in the main process)"  # the start-up lines
    out = out[3:]
    assert out[0].startswith("note: --epochs applies to step 2 (coop+dpc) only") and "--base-train epochs=3" in out[0]
    assert out[1].startswith(f"seed 1 step 1/2 coop: {coop['epochs']} epochs, batch {coop['batch_size']}, "
                             f"lr {coop['lr']:g} -> train (")
    dpc = {**PLUGINS["dpc"].train, **PLUGINS["dpc"].train_by_base.get("coop", {})}
    assert out[2].startswith(f"seed 1 step 2/2 coop+dpc: 3 epochs, batch {dpc['batch_size']}, lr {dpc['lr']:g} "
                             f"-> train (")
    # both steps given: no note; trained, then both steps reused on the rerun
    args = _train_args(json_root, tmp_path, tiny_model_name, "--method", "coop+dpc", "--epochs", "1",
                       "--base-train", "epochs=2", "lr=0.01")
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()[3:]
    assert out[0] == f"seed 1 step 1/2 coop: 2 epochs, batch {coop['batch_size']}, lr 0.01 -> train (" + \
        out[0].split("(", 1)[1]
    assert "step 2/2 coop+dpc: 1 epochs" in out[1] and "-> train (" in out[1]
    assert main(args) == 0
    out = capsys.readouterr().out.splitlines()[3:]
    assert [line.split(" -> ")[1].split(" (")[0] for line in out[:2]] == ["reuse the finished run"] * 2
    assert main(_train_args(json_root, tmp_path, tiny_model_name, "--method", "zeroshot")) == 0
    assert capsys.readouterr().out.split("\n", 3)[3].startswith("seed 1 step 1/1 zeroshot: nothing to train, evaluate\n")


def test_negative_shots_are_refused_and_zero_means_all(json_root, tmp_path, tiny_model_name, capsys):
    from dpclab.lab.cli import build_parser
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig

    with pytest.raises(SystemExit) as exc:
        main(_train_args(json_root, tmp_path, tiny_model_name, "--shots", "-3"))
    err = capsys.readouterr().err
    assert exc.value.code == 2 and "--shots" in err and "must be >= 0" in err and "0 = all" in err
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    assert "0 = all training images" in " ".join(capsys.readouterr().out.split())
    with pytest.raises(ValueError, match="shots must be an integer >= 0"):  # Source's check, the only one
        RunConfig.of(shots=-1)
    args = build_parser().parse_args(_train_args(json_root, tmp_path, tiny_model_name, "--shots", "0"))
    assert args.shots == 0
    from dpclab.backbones import load_clip

    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=0, cache_dir=None)
    exp = Experiment.prepare(cfg, load_clip(tiny_model_name, "random", "cpu"))
    from dpclab.data.coop import load_dataset

    assert exp.data.train == load_dataset(json_root, "eurosat").train  # every training image


@pytest.mark.parametrize("where", ["before", "after"])
def test_verbose_shows_the_traceback_instead_of_one_line(tmp_path, tiny_model_name, capsys, where):
    args = _train_args(tmp_path / "nowhere", tmp_path, tiny_model_name)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: Data root not found") and "Traceback" not in err and "-v shows" in err
    assert main(["-v", *args] if where == "before" else [*args, "-v"]) == 2
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err and "DatasetError: Data root not found" in err
    assert "load_dataset" in err and not any(line.startswith("error: ") for line in err.splitlines())
