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
