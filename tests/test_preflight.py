"""dpclab.lab.preflight: the checks before any job starts or is submitted -- every planned dataset readable from the
data root (split file, listed images, a few decoded), in one line naming the fix; the report and the estimate run them
first too. (The grid's refusals before ``sbatch`` and the weights handed as files are in tests/test_grid.py.)"""

from __future__ import annotations

import pytest

from dpclab.lab.preflight import PreflightError, check_data


def test_check_data_reads_the_split_and_decodes_a_sample(json_root):
    (line,) = check_data(str(json_root), ["eurosat", "eurosat"])
    assert line == "data: eurosat readable (100 train / 30 test images listed, 4 decoded)"


def test_an_unreadable_dataset_is_refused_in_one_line(json_root, tmp_path):
    import json

    first = json.loads((json_root / "eurosat" / "split_zhou_EuroSAT.json").read_text())["train"][0][0]
    (json_root / "eurosat" / "2750" / first).write_bytes(b"not a png")  # a truncated download: listed, not an image
    with pytest.raises(PreflightError) as err:
        check_data(str(json_root), ["eurosat", "dtd"])
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith("pre-flight: 2 of 2 planned datasets are not readable")
    assert "eurosat: cannot identify image file" in msg and "(and 1 more: dtd)" in msg and "-p data_root" in msg


def test_the_report_runs_the_preflight_before_any_notebook(tmp_path, monkeypatch):
    """``report`` with a data root that lacks the planned dataset: refused before the training phase or any kernel."""
    from pathlib import Path

    from dpclab.lab.report.command import report_command

    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    with pytest.raises(PreflightError, match="not readable from the data root .*empty"):
        report_command({"data_root": str(tmp_path / "empty"), "pretrained": "random", "model": "ViT-B-16",
                        "dataset": "eurosat"}, quick=True, only=["01"], notebook_dir=notebooks,
                       out_dir=tmp_path / "reports")
    assert not (tmp_path / "reports").exists() and not (tmp_path / "runs").exists()


def test_the_estimate_says_its_preflight_and_goes_on(json_root, tmp_path, monkeypatch):
    from dpclab.lab.estimate.cli import build_parser, preflight_lines, report_runs, settings

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    args = build_parser().parse_args(["--quick", "-p", "dataset", "eurosat", "-p", "pretrained", "openai",
                                      "-p", "data_root", str(json_root)])
    s = settings(args)
    lines = preflight_lines(args, s, report_runs(s))
    assert lines[0].startswith("pre-flight: data: eurosat readable")
    assert lines[1] == "pre-flight: weights: ViT-B-16/openai has no local copy; the jobs download it (open_clip's cache)"
    args = build_parser().parse_args(["--quick", "-p", "dataset", "eurosat", "-p", "data_root", str(tmp_path / "no")])
    s = settings(args)
    (line,) = preflight_lines(args, s, report_runs(s))
    assert line.startswith("pre-flight: 1 of 1 planned datasets are not readable") and "the estimate goes on" in line


def test_a_tag_with_a_local_copy_loads_offline_with_the_tags_identity(tmp_path, monkeypatch, tiny_model_name):
    """What a job on a node without internet does with ``-p pretrained openai``: the tag's file from open_clip's
    Hugging Face cache (or the file the driver handed it) is loaded, nothing is downloaded, and the backbone keeps
    the tag's identity (weights id, QuickGELU, cache key) -- the same runs and caches as a download would give. (The
    tests' tiny model gets an ``openai``-like tag in open_clip's registry, so no 600 MB file is written.)"""
    import open_clip
    import torch

    from dpclab.backbones import load_clip

    def offline(*args, **kwargs):
        raise OSError("no internet on this node")

    tag = {"hf_hub": "test/tiny_clip.openai/", "url": "", "quick_gelu": True}
    known_tags, known_cfg = open_clip.list_pretrained_tags_by_model, open_clip.get_pretrained_cfg
    monkeypatch.setattr(open_clip, "list_pretrained_tags_by_model",
                        lambda m: ["openai"] if m == tiny_model_name else known_tags(m))
    monkeypatch.setattr(open_clip, "get_pretrained_cfg",
                        lambda m, t: dict(tag) if m == tiny_model_name and t == "openai" else known_cfg(m, t))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    monkeypatch.setattr(open_clip.factory, "download_pretrained_from_hf", offline)
    torch.manual_seed(0)
    ref = open_clip.create_model(tiny_model_name, pretrained=None, force_quick_gelu=True)
    repo = tmp_path / "hf" / "models--test--tiny_clip.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    torch.save(ref.state_dict(), repo / "snapshots" / "abc123" / "open_clip_pytorch_model.bin")
    bb = load_clip(tiny_model_name, "openai", "cpu")
    assert bb.weights_id == "openai" and bb.key == f"{tiny_model_name}-openai-quickgelu" and bb.pretrained == "openai"
    ours, theirs = bb.model.state_dict(), ref.state_dict()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
