"""The benchmark's quick mode runs end to end on the tiny model and writes its CSV and markdown; its reference-style
CoOp computes the same loss and gradient as dpclab's (the faithfulness check). No timing assertions."""

from __future__ import annotations

import csv

import torch
import torch.nn.functional as F

from dpclab.lab.speed.cli import main
from dpclab.lab.speed.config import BenchConfig, ModelCase
from dpclab.lab.speed.coop import bench_notebooks
from dpclab.lab.speed.reference import ReferenceCoOp
from dpclab.lab.speed.report import Row, markdown, shapes_markdown
from dpclab.lab.speed.shapes import ShapeCase, bench_shape
from dpclab.methods.base import Task
from dpclab.methods.coop import CoOp, CoOpConfig


def test_quick_bench_writes_csv_and_markdown(tmp_path, tiny_model_name, capsys):
    out_csv, out_md = tmp_path / "out" / "speed.csv", tmp_path / "out" / "speed.md"
    code = main(["--quick", "--model", f"{tiny_model_name}:random", "--csv", str(out_csv),
                       "--markdown", str(out_md), "--workdir", str(tmp_path / "work")])
    assert code == 0
    rows = list(csv.DictReader(out_csv.open()))
    by_metric = {r["metric"]: r for r in rows if r["model"] == f"{tiny_model_name}:random"}
    for ratio in ("speedup_cached_view", "speedup_fresh_view"):
        assert float(by_metric[ratio]["value"]) > 0 and by_metric[ratio]["unit"] == "x"
    for seconds in ("reference_epoch", "dpclab_epoch_cached", "dpclab_encode_view"):
        assert float(by_metric[seconds]["value"]) > 0
    assert float(by_metric["peak_rss_reference"]["value"]) > 0
    # the two loops compute the same loss on the same batch (fp32 rounding apart)
    assert float(by_metric["faithfulness_loss_abs_diff"]["value"]) < 1e-4
    assert float(by_metric["faithfulness_ctx_grad_rel_diff"]["value"]) < 1e-3
    md = out_md.read_text()
    assert f"| {tiny_model_name}:random |" in md and "speed-up" in md
    from dpclab.methods import PLUGINS

    if "dpc" in PLUGINS:  # DPC's step-2 epoch and the omega slider are measured once DPC is installed
        assert float(by_metric["dpc_step2_epoch"]["value"]) > 0
        assert float(by_metric["dpc_epoch_over_reference_coop_epoch"]["value"]) > 0
        assert float(by_metric["slider_update_latency"]["value"]) > 0
    else:
        assert "dpc_step2_epoch" not in by_metric
    printed = capsys.readouterr().out
    assert "faithfulness (first batch)" in printed and "speed-up per CoOp epoch" in printed


def test_reference_style_coop_equals_dpclab_coop(tiny_backbone):
    """Full 77-token prompts through open_clip's transformer module == dpclab's truncated prompt encoding, and the
    pixel path == cached image features: same logits, same context gradient."""
    names = ("forest", "sea or lake", "boeing 747-400")
    coop = CoOp(tiny_backbone, CoOpConfig())
    ref = ReferenceCoOp(tiny_backbone, names, coop.ctx)
    torch.manual_seed(0)
    pixels = torch.randn(5, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():
        feats = tiny_backbone.model.encode_image(pixels)
    ours = F.cross_entropy(coop(feats, Task(names)).logits, y)
    theirs = F.cross_entropy(ref(pixels), y)
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)
    (g1,) = torch.autograd.grad(ours, coop.ctx)
    (g2,) = torch.autograd.grad(theirs, ref.ctx)
    # fp32 sums over 77 positions vs the truncated sequence: the gradients agree to a few 1e-6 (measured 2.7e-6)
    torch.testing.assert_close(g1, g2, atol=1e-5, rtol=1e-4)


def test_markdown_lists_other_sections():
    rows = [Row("coop", "m", k, v, u, "4 classes x 2 shots") for k, v, u in [
        ("reference_epoch", 2.0, "s"), ("dpclab_epoch_cached", 0.5, "s"), ("dpclab_encode_view", 0.5, "s"),
        ("speedup_cached_view", 4.0, "x"), ("speedup_fresh_view", 2.0, "x"), ("faithfulness_loss_abs_diff", 0, ""),
        ("peak_rss_reference", 100, "MiB"), ("peak_rss_dpclab_train", 90, "MiB")]]
    rows.append(Row("notebooks", "", "report_wall_time", 12.5, "s", "ok"))
    md = markdown(rows, "# t")
    assert "**4.0x**" in md and "**2.0x**" in md and "| notebooks |  | report_wall_time | 12.5 s | ok |" in md


def test_notebook_timing_runs_the_report_command(tmp_path, monkeypatch):
    import subprocess

    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout="a ok\n3/3 notebooks ok in 9.0 s\n", stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    (row,) = bench_notebooks(tmp_path / "nb", quick=True, log=lambda *_: None)
    assert calls[-1][-4:] == ["report", "--out", str(tmp_path / "nb"), "--quick"]
    assert row.metric == "report_wall_time_quick" and row.value > 0 and "3/3 notebooks ok" in row.note


def test_shape_comparison_rows_for_a_features_and_a_pixel_method(tmp_path, tiny_model_name, tiny_backbone):
    """dpclab's loop against the reference-style loop at a (tiny) dataset shape: step times, epoch ratios, a
    profile of the step, peak memory; a features method also reports the cached-view ratio, a pixel method not."""
    cfg = BenchConfig(cases=[], device="cpu", image_px=40, workdir=tmp_path)
    model = ModelCase(tiny_model_name, None, 0, 0, 0, 0)
    shape = ShapeCase("toy", classes=4, shots=2)
    rows = []
    for method in ("coop", "maple"):
        rows += bench_shape(model, shape, method, tiny_backbone, tmp_path, cfg, steps=1, log=lambda *_: None)
    got = {(r.model.split()[-1], r.metric): r.value for r in rows}
    for method in ("coop", "maple"):
        assert got[(method, "reference_step")] > 0 and got[(method, "dpclab_step")] > 0
        assert got[(method, "speedup_fresh_view")] > 0 and got[(method, "peak_rss_reference")] > 0
        assert got[(method, "profile_text_forward")] > 0 and got[(method, "profile_optimizer")] > 0
    assert got[("maple", "profile_image_forward")] > 0  # MaPLe runs the image tower in its step
    assert got[("coop", "profile_image_forward")] == 0  # CoOp's step reads cached features
    assert ("coop", "speedup_cached_view") in got and ("maple", "speedup_cached_view") not in got
    assert "| toy shape" in shapes_markdown(rows)


def first_component(module: str) -> str:
    """``dpclab.lab.plan.x`` -> ``plan``; ``dpclab.pipeline`` -> ``pipeline`` (the layer prefix is not a module)."""
    parts = module.split(".")[1:]
    return parts[1] if parts[0] == "lab" and len(parts) > 1 else parts[0]


def imported_modules(package: str) -> set[str]:
    """The dpclab modules (first component under dpclab) that the files of ``dpclab.<package>`` import."""
    import ast
    from pathlib import Path

    import dpclab

    out = set()
    for path in (Path(dpclab.__file__).parent / "lab" / package).glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level == 0 and (node.module or "").startswith("dpclab."):
                    out.add(first_component(node.module))
            elif isinstance(node, ast.Import):
                out |= {first_component(a.name) for a in node.names if a.name.startswith("dpclab.")}
    return out - {package}  # its own modules


TOOLS = {"speed", "estimate", "gpu_check", "grid", "cli", "benchmark", "dpc_study", "report"}


def test_speed_stands_on_the_core_not_on_other_tools():
    assert imported_modules("speed") & TOOLS == set()
    assert {"synthetic", "timing"} <= imported_modules("speed")  # the shared helpers, once


def test_estimate_stands_on_the_core_and_the_plan_not_on_other_tools():
    assert imported_modules("estimate") & TOOLS == set()
    assert {"plan", "jobs", "synthetic", "timing"} <= imported_modules("estimate")  # the report's plan, the grid's jobs
