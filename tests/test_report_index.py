"""The report reads like one: ``index.html`` with the headline (notebook 06's plug-ins beside the papers', with
verdicts that know their noise), the real wall time, figure thumbnails with their alt text, pages titled by their
notebook, and the
provenance, also as ``reports/provenance.json``."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dpclab.lab.parameters import PARAMETER_KEYS
from dpclab.lab.report.run import NotebookResult, run_report
from dpclab.lab.report.index import write_index
from dpclab.lab.report.headline import (SPREAD_FILE, benchmark_spread, find_headline, load_spread, spread_threshold,
                                        verdict_note, verdicts)
from dpclab.lab.plan import planned_datasets
from dpclab.lab.report.provenance import provenance

ROOT = Path(__file__).resolve().parents[1]


def _notebook(path: Path, title: str, body: str) -> None:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    params = new_code_cell("\n".join(f"{k} = None" for k in PARAMETER_KEYS))
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[new_markdown_cell(f"# {title}\n\ntext"), params, new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(path))


def _runs(dataset: str = "world_x", **rows) -> pd.DataFrame:
    """A runs table: ``label=[(base, new) per seed 1, 2, ...]``."""
    return pd.DataFrame([{"dataset": dataset, "method": m, "seed": seed, "base": b, "new": n}
                         for m, values in rows.items() for seed, (b, n) in enumerate(values, 1)])


#: a benchmark spread of 1.0 point on world_x: the one-seed threshold is 2.0 (SPREAD_SDS sd)
_SPREAD = {"world_x": {"sd": 1.0, "seeds": 3, "rows": ["coop+dpc - coop"], "metric": "base",
                       "source": "docs/benchmark/x_gains.csv", "date": "2026-12-02 17:14"}}


def test_verdicts_with_seeds_say_agrees_or_differs_only_beyond_the_paired_interval():
    runs = _runs(coop=[(80.0, 70.0), (82.0, 71.0), (78.0, 69.0)],
                 **{"coop+dpc": [(83.0, 70.0), (85.2, 71.0), (80.8, 69.0)],  # +3.0 +3.2 +2.8: a clear gain
                    "maple": [(85.0, 75.0), (85.0, 75.0), (85.0, 75.0)],
                    "maple+dpc": [(84.0, 75.0), (87.0, 75.0), (82.0, 75.0)],  # -1 +2 -3: noise
                    "cocoop": [(80.0, 70.0)] * 3, "cocoop+dept": [(75.0, 70.0), (74.0, 70.0), (76.0, 70.0)]})
    table = verdicts(runs, "embedded", spread={})
    assert list(dict.fromkeys(table.index.get_level_values("method"))) == ["coop+dpc", "maple+dpc", "cocoop+dept"]
    assert table.index.names == ["method", "vs", "seeds", "Δ"] and list(table.columns) == [
        "here (embedded)", "paper", "verdict"]
    t = table.reset_index().set_index(["method", "Δ"])
    row = t.loc[("coop+dpc", "base")]
    # mean of the paired differences +3.00, t(2) interval 3.0 ± 4.303 * 0.2 / sqrt(3)
    assert row["vs"] == "coop" and row["seeds"] == 3
    assert row["here (embedded)"] == "↑ +3.00 [+2.50, +3.50]" and row["paper"] == "↑ +3.17"
    assert row["verdict"] == "agrees"
    # DPC's new classes: exactly unchanged on every seed, as in its paper (no spread: not "within noise")
    assert t.loc[("coop+dpc", "new"), "here (embedded)"] == "= +0.00 [+0.00, +0.00]"
    assert t.loc[("coop+dpc", "new"), "verdict"] == "agrees"
    assert t.loc[("cocoop+dept", "new"), "verdict"] == "differs"  # exactly +0.00 on every seed; DePT's paper +0.71
    assert t.loc[("maple+dpc", "base"), "verdict"] == "within noise"  # -0.67, interval spans 0
    assert t.loc[("cocoop+dept", "base"), "verdict"] == "differs"  # -5.0 [-7.48, -2.52]; DePT's paper raises base
    assert "3 seeds" in verdict_note(runs, spread={}) and "interval excludes 0" in verdict_note(runs, spread={})


def test_verdicts_with_one_seed_say_direction_only_within_the_benchmark_spread():
    runs = _runs(coop=[(80.0, 70.0)], maple=[(85.0, 75.0)], cocoop=[(80.0, 70.0)],
                 **{"coop+dpc": [(83.0, 70.0)], "maple+dpc": [(84.0, 75.0)], "cocoop+dept": [(75.0, 70.0)]})
    t = verdicts(runs, "embedded", spread=_SPREAD).reset_index().set_index(["method", "Δ"])
    assert t.loc[("coop+dpc", "base"), "here (embedded)"] == "↑ +3.00"  # no interval from one seed
    assert t.loc[("coop+dpc", "base"), "verdict"] == "agrees"  # |+3.00| > 2 x 1.0
    assert t.loc[("maple+dpc", "base"), "verdict"] == "one seed: direction only"  # |-1.00| <= 2.0
    assert t.loc[("cocoop+dept", "base"), "verdict"] == "differs"  # -5.00, the paper +
    note = verdict_note(runs, spread=_SPREAD)
    assert "|Δ| > 2.00" in note and "x_gains.csv, run 2026-12-02" in note
    assert "world_x: sd 1.00 of one seed's base difference, the largest of its 1 DPC rows against CoOp over 3" in note
    # a dataset the benchmark did not measure: every one-seed word is direction only, and the note says why
    other = verdicts(runs.assign(dataset="eurosat"), "embedded", spread=_SPREAD)
    assert len(other) == 9 and set(other["verdict"]) == {"one seed: direction only"}
    assert "no paired spread on eurosat" in verdict_note(runs.assign(dataset="eurosat"), spread=_SPREAD)
    # two datasets: the spread of their mean, 2 x sqrt(1 + 1) / 2
    assert spread_threshold(["world_x", "world_y"], {**_SPREAD, "world_y": _SPREAD["world_x"]}) == \
        pytest.approx(2 ** 0.5)


def test_shipped_benchmark_spread_matches_docs_benchmark():
    shipped = load_spread()
    assert shipped == benchmark_spread(ROOT / "docs" / "benchmark"), \
        "regenerate: python -c 'from dpclab.lab.report.headline import *; write_benchmark_spread(\"docs/benchmark\")'"
    # world_shapes comes from the 10-seed run, the others from the six-dataset benchmark (3 seeds)
    assert shipped["world_shapes"]["seeds"] == 10 and shipped["world_shapes"]["source"].endswith("shapes10_gains.csv")
    assert shipped["world_tint"]["seeds"] == 3 and shipped["world_shapes"]["date"] == "2026-12-02 17:52"
    assert SPREAD_FILE.parent.name == "report" and "lab/report/*.json" in (ROOT / "pyproject.toml").read_text()


def test_method_bars_label_n_and_draw_no_error_bar_for_one_run():
    from dpclab.lab.plots.report import method_bars

    def bars(runs):
        runs = runs.assign(hm=2 * runs["base"] * runs["new"] / (runs["base"] + runs["new"]))
        summary = pd.DataFrame([{"dataset": "average", "method": m, "hm": 70.0} for m in runs["method"].unique()])
        fig = method_bars(runs, summary, list(runs["method"].unique()), "t", "acc")
        return fig.axes[0]

    one = bars(_runs(coop=[(80.0, 70.0)], **{"coop+dpc": [(83.0, 70.0)]}))
    assert "n = 1" in one.get_title() and "no error bars" in one.get_title() and not one.collections
    three = bars(_runs(coop=[(80.0, 70.0), (82.0, 71.0), (78.0, 69.0)], **{"coop+dpc": [(83.0, 70.0)]}))
    assert "mean ± sample std over n = 1/3 runs" in three.get_title()
    assert [t.get_text() for t in three.get_xticklabels()] == ["coop (n=3)", "coop+dpc (n=1)"]
    (bar_lines,) = three.collections  # one error bar: coop's, none for the single coop+dpc run
    assert len(bar_lines.get_segments()) == 1


def test_index_has_the_headline_real_wall_time_thumbnails_titles_and_provenance(tmp_path):
    books, out = tmp_path / "books", tmp_path / "reports"
    books.mkdir()
    _notebook(books / "a_figure.ipynb", "A · a figure",
              "import matplotlib\nmatplotlib.use('Agg')\nfrom matplotlib.figure import Figure\n"
              "from dpclab.lab import plots\n"
              "fig = Figure(); ax = fig.subplots(); ax.plot([0, 1], [1, 2])\n"
              "plots.save_figure(fig, 'a_line', alt='A rising line, for the test.')")
    _notebook(books / "b_headline.ipynb", "B · the headline",
              "import pandas as pd\nfrom dpclab.lab.report import headline\n"
              "runs = pd.DataFrame([{'dataset': 'world_shapes', 'method': m, 'seed': 1, 'base': b, 'new': 70.0}\n"
              "                     for m, b in (('coop', 80.0), ('coop+dpc', 83.0), ('maple', 80.0),\n"
              "                                  ('maple+dpc', 90.0))])\n"
              "headline.show_headline(headline.verdicts(runs, 'embedded'),\n"
              "                       'test caption ' + headline.verdict_note(runs))\n"
              "print('raw table would be here')")
    results = run_report(notebook_dir=books, out_dir=out, cwd=tmp_path, jobs=2)
    assert all(r.ok for r in results), [r.error for r in results]
    index = (out / "index.html").read_text()
    # the headline: notebook b's marked output, copied
    head = index.split("<h2>Headline</h2>")[1].split("<h2>")[0]
    assert "test caption" in head and "coop+dpc" in head and "↑ +3.00" in head
    # one seed on world_shapes: +3.00 is within the shipped benchmark's spread there (2 x 2.47), +10.00 is not
    assert "one seed: direction only" in head and "agrees" in head and "shapes10_gains.csv" in head
    assert find_headline(nbformat.read(str(out / "b_headline.ipynb"), as_version=4)) in index
    # the figure as a thumbnail with its alt text, linking to the full figure
    thumbs = re.findall(r'<a href="([^"]+)"><img src="([^"]+)" alt="([^"]*)"></a>', index)
    assert thumbs == [("../figures/a_line.png", "thumbs/a_line.png", "A rising line, for the test.")]
    from PIL import Image

    with Image.open(out / "thumbs" / "a_line.png") as im, Image.open(tmp_path / "figures" / "a_line.png") as full:
        assert im.width == 320 < full.width
    # pages titled by their notebook, in the index and in <title>
    assert "<title>A · a figure</title>" in (out / "a_figure.html").read_text()
    assert "<title>B · the headline</title>" in (out / "b_headline.html").read_text()
    assert ">B · the headline</a>" in index
    # the real wall time (the two ran side by side), not the sum of the notebooks' times
    prov = json.loads((out / "provenance.json").read_text())
    summed = sum(r.seconds for r in results)
    assert prov["wall_seconds"] < summed
    assert f"({prov['wall_seconds']:.1f} s; the notebooks' own times add up to {summed:.1f} s" in index
    assert "<h2>Provenance</h2>" in index and "provenance.json" in index


def test_index_wall_time_is_the_one_given(tmp_path):
    res = [NotebookResult(n, Path(f"{n}.ipynb"), tmp_path / f"{n}.ipynb", None, True, s) for n, s in
           [("00_a", 300.0), ("01_b", 200.0)]]
    page = write_index(res, tmp_path, {"quick": True}, tmp_path / "no-figures", wall_seconds=310.0).read_text()
    assert "Wall time <b>5:10</b> (310.0 s; the notebooks' own times add up to 500.0 s" in page
    assert "No headline" in page and "none" in page.split("<h2>Figures</h2>")[1]


def test_provenance_of_the_embedded_report(tmp_path):
    from dpclab.backbones import embedded_checkpoint
    from dpclab.data.world import ensure_world
    from dpclab.io import sha256_file

    ensure_world(tmp_path / "data" / "world", ["world_tint"])
    params = {"interactive": False, "quick": True}
    prov = provenance(params, *planned_datasets(params), cwd=tmp_path, wall_seconds=12.34,
                      command=["python", "-m", "dpclab", "report", "--quick"])
    json.dumps(prov)  # machine-readable as it is
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert prov["dpclab"]["commit"] == head.stdout.strip() and isinstance(prov["dpclab"]["dirty"], bool)
    import dpclab
    import open_clip
    import torch

    assert prov["dpclab"]["version"] == dpclab.__version__
    assert prov["command"] == "python -m dpclab report --quick" and prov["wall_seconds"] == 12.3
    assert prov["versions"] == {"python": sys.version.split()[0], "torch": torch.__version__,
                                "open_clip": open_clip.__version__, "cuda": torch.version.cuda,
                                "cuda_available": torch.cuda.is_available()}
    assert prov["device"].startswith("CPU: ") or torch.cuda.is_available()
    assert prov["precision"] == "fp32" and prov["backend"] == "embedded" and prov["seeds"] == [1]
    manifest = json.loads((ROOT / "data" / "embedded" / "MANIFEST.json").read_text())
    assert prov["weights"]["sha256"] == sha256_file(embedded_checkpoint())
    assert prov["weights"]["sha256"] in json.dumps(manifest)
    world = prov["datasets"]["world_tint"]
    split = json.loads(Path(world["split_file"]).read_text())
    assert Path(world["split_file"]).is_relative_to(tmp_path)
    assert world["split_sha256"] == sha256_file(world["split_file"])
    assert world["images"] == {k: len(split[k]) for k in ("train", "val", "test")} and world["classes"] == 18
    missing = provenance({"dataset": "world_nope"}, ["world_nope"], [1], cwd=tmp_path)["datasets"]["world_nope"]
    assert "error" in missing and "world_nope" in missing["error"]


def test_report_trains_the_plan_first_then_the_notebooks_reuse(tmp_path, monkeypatch, capsys):
    """``report`` trains the planned runs over its workers before the notebooks: the phase has its own line in
    the console, its time in timings.json (the next estimate) and in index.html / provenance.json."""
    import dpclab.lab.report.command as train  # where report_command reads planned_notebooks and train_plan
    from dpclab.lab.report.command import report_command
    from dpclab.lab.report.console import load_timings

    calls = []

    def fake_train(params, names, workers, log, weights=None):
        calls.append((params["quick"], list(names), workers))
        log("[1/1] ok      00 world_tint coop seed 1  worker cpu 0  1.0 s  trained")
        return {"jobs": 1, "ok": 1, "seconds": 1.0, "summary": "1 jobs: 1 ok, 0 failed, 0 skipped"}

    monkeypatch.setattr(train, "planned_notebooks", lambda names: ["00"])
    monkeypatch.setattr(train, "train_plan", fake_train)
    monkeypatch.setattr(train, "preflight_plan", lambda params, names: {})  # tests/test_preflight.py
    books, out = tmp_path / "books", tmp_path / "reports"
    books.mkdir()
    _notebook(books / "00_tiny.ipynb", "00 · tiny", "x = 1")
    assert report_command({}, quick=True, notebook_dir=books, out_dir=out, jobs=2) == 0
    text = capsys.readouterr().out.splitlines()
    assert calls == [(True, ["00_tiny"], 2)]
    assert text[0].startswith("report: 1 notebook, 1 at a time;")
    assert text[1].startswith("[1/1] ok      00 world_tint coop") and text[2].split()[:2] == ["train", "ok"]
    assert text[3].split()[:2] == ["00_tiny", "ok"]
    assert set(load_timings(out, {"interactive": False, "quick": True})) == {"train", "00_tiny"}
    assert "trained the notebooks' 1 runs first" in (out / "index.html").read_text()
    assert json.loads((out / "provenance.json").read_text())["training"]["jobs"] == 1
    # --no-train: no phase
    assert report_command({}, quick=True, notebook_dir=books, out_dir=out, jobs=2, train=False) == 0
    assert len(calls) == 1 and not any(line.startswith("train ") for line in capsys.readouterr().out.splitlines())
