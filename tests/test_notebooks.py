"""The notebooks: structure (parameters cell, kernelspec, no outputs, no logic of their own), the report runner,
and - the real check - every notebook executing under papermill in quick mode on the embedded default."""

from __future__ import annotations

import ast
import json
import math
import os
import re
import sys
from pathlib import Path

import nbformat
import pandas as pd
import pytest

from dpclab.lab.notebook import Setup, setup
from dpclab.lab.plan import parse_datasets, parse_seeds
from dpclab.lab.parameters import PARAMETER_KEYS
from dpclab.evaluate import harmonic_mean
from dpclab.lab.options import parse_value
from dpclab.lab.report.run import check_parameters, discover, run_report

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK_DIR = REPO / "notebooks"
EXPECTED = ["00_quickstart", "01_baseline_tuning", "02_dhno_training", "03_omega_sliders", "04_dept_channel_importance",
            "05_feature_invariance", "06_reproducibility_report"]
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("*.ipynb"))


def _code(nb) -> list:
    return [c for c in nb.cells if c.cell_type == "code"]


def test_the_seven_notebooks_exist():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path):
    nb = nbformat.read(str(path), as_version=4)
    nbformat.validate(nb)
    # papermill -p needs a kernelspec with a language, and a cell tagged "parameters" defining every key
    ks = nb.metadata.get("kernelspec", {})
    assert ks.get("name") == "python3" and ks.get("language") == "python"
    assert nb.metadata.get("language_info", {}).get("name") == "python"
    tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and tagged[0].cell_type == "code"
    import papermill as pm

    assert set(pm.inspect_notebook(str(path))) == set(PARAMETER_KEYS)
    # the defaults are the embedded backend
    defaults = {}
    exec(tagged[0].source, {}, defaults)  # noqa: S102 - our own literal assignments
    assert defaults["pretrained"] == "embedded" and defaults["quick"] is False and defaults["interactive"] is True
    # and setup() is called with exactly those names, in order
    call = "nb.setup(" + ", ".join(PARAMETER_KEYS) + ")"
    assert any(call in c.source for c in _code(nb)), f"{path.name} does not call {call}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_no_committed_outputs(path):
    """Outputs are stripped before committing (python -m dpclab strip)."""
    nb = nbformat.read(str(path), as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and (c.outputs or c.execution_count)]
    assert not dirty, f"{path.name} has outputs in cells {dirty}; strip them: python -m dpclab strip {path}"


#: calls that draw: figures belong in dpclab.lab.plots (one call per figure in a notebook)
PLOTTING_CALLS = {"plot", "scatter", "imshow", "bar", "barh", "hist", "contour", "contourf", "pcolormesh", "axhline",
                  "axvline", "fill_between", "errorbar", "subplots", "subplot", "figure", "savefig", "tight_layout",
                  "colorbar", "set_title", "set_xlabel", "set_ylabel", "set_xticks", "set_yticks", "set_xlim",
                  "set_ylim", "legend", "twinx", "suptitle", "text", "annotate", "histplot", "heatmap", "lineplot",
                  "show"}
PLOTTING_NAMES = {"plt", "ax", "axes", "sns"}
PLOTTING_MODULES = ("matplotlib", "seaborn")
#: longest code cell outside the parameters cell, in non-blank lines
MAX_CELL_LINES = 12


def logic_problems(source: str) -> list[str]:
    """What a notebook code cell must not hold: definitions, plotting, or more than MAX_CELL_LINES lines."""
    tree = ast.parse(source)
    problems = [f"defines {n.name}" for n in ast.walk(tree)
                if isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef))]
    for n in ast.walk(tree):
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Attribute) and n.func.attr in PLOTTING_CALLS:
            problems.append(f"calls .{n.func.attr}(")
        elif isinstance(n, ast.Name) and n.id in PLOTTING_NAMES:
            problems.append(f"uses {n.id}")
        elif isinstance(n, (ast.Import, ast.ImportFrom)):
            names = [a.name for a in n.names] + ([n.module] if isinstance(n, ast.ImportFrom) and n.module else [])
            problems += [f"imports {m}" for m in names if m.split(".")[0] in PLOTTING_MODULES]
    lines = [line for line in source.splitlines() if line.strip()]
    if len(lines) > MAX_CELL_LINES:
        problems.append(f"has {len(lines)} lines (at most {MAX_CELL_LINES})")
    return problems


def test_logic_problems_catches_definitions_plotting_and_long_cells():
    assert logic_problems("from dpclab.lab import plots\nplots.save_figure(plots.tradeoff(c), 'x', alt='a')") == []
    assert logic_problems("def f():\n    pass") == ["defines f"]
    assert "calls .set_title(" in logic_problems("fig = plots.tradeoff(c)\nfig.axes[0].set_title('t')")
    assert "uses plt" in logic_problems("plt.show()")
    assert "calls .plot(" in logic_problems("df.plot(x='a')")
    assert logic_problems("import matplotlib.pyplot as p") == ["imports matplotlib.pyplot"]
    assert logic_problems("\n".join(["x = 1"] * 13)) == ["has 13 lines (at most 12)"]
    assert logic_problems("\n\n".join(["x = 1"] * 12)) == []  # blank lines do not count


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebooks_hold_no_logic_of_their_own(path):
    """Notebooks call dpclab: functions, classes and figures belong in the package, where they are tested; each
    code cell outside the parameters cell is short (a figure or table is one package call plus narrative)."""
    nb = nbformat.read(str(path), as_version=4)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code" or "parameters" in cell.metadata.get("tags", []):
            continue
        problems = logic_problems(cell.source)
        assert not problems, f"{path.name} cell {i} {'; '.join(problems)}: move the code into dpclab"


#: a number that reads as a measured result: a decimal (87.6, 0.36), a signed change (+1.75, −0.6, ±18), a percentage
#: or a number of points
RESULT_NUMBER = re.compile(r"(?<![\w.])[+−-]?\d+(?:\.\d+)?\s?(?:%|points?\b)|(?<![\w.])[+−±]\d+(?:\.\d+)?"
                           r"|(?<![\w.])\d+\.\d+")
#: what is not a result: code spans, settings (ω_b = 0.2, lr=0.0002, lr 0.0035, 1e-5), factors (5·lr, 10×), one-digit
#: ω values, an interval's confidence level
NOT_RESULTS = re.compile(r"`[^`]*`|[=≈]\s*[+−-]?\d+(?:\.\d+)?|\d+(?:\.\d+)?\s*[·×]|\d+e-\d+|\b[01]\.\d\b(?!\d)"
                         r"|\b(?:lr|batch|epochs|weight decay)\s+\d+(?:\.\d+)?|\b95 % (?:paired )?(?:t )?interval")
#: a quote of the documented benchmark: the doc, the date of its run and the commit, said not to be this run
CITATION = re.compile(r"docs/[\w/.-]+\.md.*\d{4}-\d\d-\d\d.*commit [0-9a-f]{7}", re.S)


def uncited_numbers(markdown: str) -> list[str]:
    """The result-like numbers of a Markdown cell that neither this run computed (a notebook's markdown cannot) nor
    a quote of the documented benchmark gives its source for (doc, date, commit, "not this run")."""
    if CITATION.search(markdown) and "not this run" in markdown:
        return []
    return RESULT_NUMBER.findall(NOT_RESULTS.sub(" ", markdown))


def test_uncited_numbers_finds_results_in_prose_and_accepts_settings_and_quotes():
    assert uncited_numbers("seed 1, full protocol: CoOp 99.44, `released` 98.89; +1.25 on seed 1, ~90 % of its "
                           "shots, about 15 points, ±18 over seeds") == ["99.44", "98.89", "+1.25", "90 %",
                                                                          "15 points", "±18"]
    assert uncited_numbers("ω_b = 0.2 of P′ (5·lr, 10× smaller, `lr=0.0002`, 1e-5, ω = 1, 16 shots, "
                           "11 datasets), its ω_b sweep at 0.2, a paired 95 % interval, lr 0.0035") == []
    quote = "**From the documented benchmark, not this run** (`docs/benchmark/x.md`, run 2026-12-02, commit 0691583): "
    assert uncited_numbers(quote + "+1.75") == [] and uncited_numbers(quote.replace("not this run", "") + "+1.75")
    assert uncited_numbers(quote.replace("commit 0691583", "") + "+1.75") == ["+1.75"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_markdown_numbers_are_computed_or_quoted_with_their_source(path):
    """Prose cannot contradict its outputs: a number that describes this run is computed
    (``display(Markdown(f"..."))`` from the runs); a number from the documented benchmark is quoted with its source
    (doc, date, commit) and said not to be this run."""
    nb = nbformat.read(str(path), as_version=4)
    bad = {c.get("id", i): found for i, c in enumerate(nb.cells) if c.cell_type == "markdown"
           and (found := uncited_numbers(c.source))}
    assert not bad, (f"{path.name}: numbers in markdown without a source {bad}; compute them in a code cell "
                     f"(display(Markdown(f'...'))) or quote the benchmark with doc, date, commit and 'not this run'")


def test_parse_value_follows_papermill_cli():
    assert parse_value("16") == 16 and parse_value("None") is None and parse_value("True") is True
    assert parse_value("ViT-B-16") == "ViT-B-16" and parse_value("1 2 3") == "1 2 3"
    assert parse_value("[1, 2]") == [1, 2] and parse_value("0.5") == 0.5


def test_seeds_and_datasets_parameters():
    assert parse_seeds("1 2 3") == parse_seeds("[1, 2, 3]") == parse_seeds([1, 2, 3]) == parse_seeds("1,2,3")
    assert parse_seeds(4) == [4]
    with pytest.raises(ValueError, match="seeds must be integers"):
        parse_seeds("one two")
    assert parse_datasets("a, b") == ["a", "b"] and parse_datasets(["x"]) == ["x"]


def test_setup_resolves_backends_and_rejects_bad_input(tmp_path):
    with pytest.raises(ValueError, match="data_root is required on real CLIP"):
        setup("auto", "ViT-B-16", "openai", chdir=False, threads=0)
    with pytest.raises(ValueError, match="backend='embedded' runs model='dpclab-tiny'"):
        setup("embedded", "ViT-B-16", "openai", chdir=False, threads=0)
    with pytest.raises(ValueError, match="backend must be"):
        setup("cuda", chdir=False, threads=0)
    s = setup("auto", "ViT-B-16", "openai", data_root=str(tmp_path), seeds="1 2 3", quick=True, chdir=False,
              threads=0)
    assert s.backend == "open_clip" and s.dataset == "eurosat" and s.seeds == [1] and "ViT-B-16 / openai" in s.label
    # quick mode scales each method's protocol epochs down; an explicit epochs wins
    assert s.config("coop").train == {"epochs": 20} and s.config("zeroshot").train == {}
    s2 = setup("auto", "ViT-B-16", "openai", data_root=str(tmp_path), epochs=3, chdir=False, threads=0)
    assert s2.config("coop").train == {"epochs": 3} and s2.seeds == [1, 2, 3]
    # full mode with protocol epochs: no overrides, so the run directories are the CLI's
    s3 = setup("auto", "ViT-B-16", "openai", data_root=str(tmp_path), chdir=False, threads=0)
    assert s3.config("coop").train == {} and s3.config("coop+dpc").base_train == {}
    assert s3.effective_epochs("coop") == {"epochs": 200}
    assert s3.effective_epochs("coop+dpc") == {"epochs": 20, "step1_epochs": 200}
    assert s.effective_epochs("coop+dpc") == {"epochs": 2, "step1_epochs": 20}


def test_report_refuses_unknown_parameters_and_notebooks():
    with pytest.raises(ValueError, match="Unknown notebook parameter.*modle"):
        check_parameters({"modle": "ViT-B-16"})
    with pytest.raises(ValueError, match="--only '99' matches no notebook"):
        discover(NOTEBOOK_DIR, ["99"])
    assert [p.stem for p in discover(NOTEBOOK_DIR, ["01", "00"])] == EXPECTED[:2]


def _tiny_notebook(path: Path, fail: bool) -> None:
    from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

    params = new_code_cell("\n".join(f"{k} = None" for k in PARAMETER_KEYS))
    params.metadata["tags"] = ["parameters"]
    cells = [new_markdown_cell("# tiny"), params, new_code_cell("x = 1\nprint('quick is', quick)"),
             new_code_cell("raise ValueError('boom in the third code cell')" if fail else "y = 2")]
    nb = new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                            "language": "python"},
                                             "language_info": {"name": "python"}})
    nbformat.write(nb, str(path))


def test_report_runs_notebooks_writes_html_and_index_and_names_the_failing_cell(tmp_path):
    books = tmp_path / "books"
    books.mkdir()
    _tiny_notebook(books / "a_ok.ipynb", fail=False)
    _tiny_notebook(books / "b_bad.ipynb", fail=True)
    out = tmp_path / "reports"
    results = run_report(parameters={"seeds": "1 2"}, quick=True, notebook_dir=books, out_dir=out, cwd=tmp_path)
    ok, bad = results
    assert ok.ok and not bad.ok
    assert "In [4] (cell 4 of the executed notebook" in bad.error and "ValueError: boom in the third code cell" in bad.error
    executed = nbformat.read(str(ok.executed), as_version=4)
    assert any("quick is True" in o.get("text", "") for c in _code(executed) for o in c.outputs)
    assert ok.html.is_file() and bad.html.is_file() and "boom" in bad.html.read_text()
    index = (out / "index.html").read_text()
    assert "a_ok.html" in index and "b_bad.html" in index and "failed" in index and "1/2 notebooks" in index
    # the CLI exits non-zero and names the notebook and cell
    from dpclab.lab.cli import main

    assert main(["report", "--notebooks", str(books), "--out", str(out), "--only", "a"]) == 0
    assert main(["report", "--notebooks", str(books), "--out", str(out)]) == 1


def test_strip_removes_outputs(tmp_path):
    from dpclab.lab.report.strip import strip_outputs

    path = tmp_path / "n.ipynb"
    _tiny_notebook(path, fail=False)
    nb = nbformat.read(str(path), as_version=4)
    nb.cells[2].outputs = [nbformat.v4.new_output("stream", text="hi")]
    nb.cells[2].execution_count = 3
    nb.cells[2].metadata["papermill"] = {"duration": 1.0}
    nbformat.write(nb, str(path))
    assert strip_outputs([path]) == [path]
    clean = nbformat.read(str(path), as_version=4)
    assert clean.cells[2].outputs == [] and clean.cells[2].execution_count is None
    assert "papermill" not in clean.cells[2].metadata and clean.cells[1].metadata["tags"] == ["parameters"]
    assert strip_outputs([path]) == []  # already clean: untouched


# ------------------------------------------------------------------------- every notebook, quick, embedded
def _embedded_available() -> bool:
    from dpclab.backbones import embedded_checkpoint

    try:
        import dpclab.data.world  # noqa: F401
    except ImportError:
        return False
    return embedded_checkpoint().is_file()


@pytest.fixture(scope="module")
def quick_report(tmp_path_factory):
    """Run the whole quick suite once (in a scratch folder: its runs/, data/ and figures/ stay there)."""
    if not _embedded_available():
        pytest.skip("the embedded checkpoint (data/embedded/dpclab-tiny.pt) and world are not in this checkout")
    from plan_check import grid_then_report

    work = tmp_path_factory.mktemp("quick_suite")
    # the grid trains the plan first (2 workers); the report then trains nothing (test below)
    check = grid_then_report(work, {})
    print(f"grid {check.grid_seconds:.0f} s, report {check.report_seconds:.0f} s")
    return work, check.results, check


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_runs_in_quick_mode(quick_report, name):
    work, results, _ = quick_report
    res = results[name]
    assert res.ok, f"{name} failed: {res.error} (executed copy: {res.executed})"
    assert res.html.is_file()
    assert (work / "reports" / "index.html").is_file()


def test_after_the_grid_the_report_trains_nothing_and_requests_exactly_the_plan(quick_report):
    """``grid --quick --workers 2`` then ``report --quick``: every run a notebook requests was made by the grid."""
    _, results, check = quick_report
    assert all(r.ok for r in results.values())
    assert check.trained_by_report == 0, check.requests
    assert check.requested_dirs == check.grid_dirs
    assert all(r["reused"] for r in check.requests if r["run_dir"])
    assert {r["notebook"] for r in check.requests} == {name[:2] for name in EXPECTED}


def test_quick_report_has_the_headline_raw_runs_as_a_file_and_provenance(quick_report):
    """The embedded report's index shows notebook 06's headline; 06 shows the summary before the per-seed tables
    and links the raw per-run table as a CSV file; provenance.json describes what produced it."""
    from dpclab.backbones import embedded_checkpoint
    from dpclab.io import sha256_file

    work, results, _ = quick_report
    out = work / "reports"
    index = (out / "index.html").read_text()
    head = index.split("<h2>Headline</h2>")[1].split("<h2>")[0]
    assert "coop+dpc" in head and "coop+dept" in head and "here (embedded)" in head and "paper" in head
    # one seed: each verdict is direction only unless |Δ| exceeds the shipped benchmark's spread, which it names
    assert "verdict" in head and "One seed: no interval" in head and "shapes10_gains.csv" in head
    page = (out / "06_reproducibility_report.html").read_text()
    assert page.index("dpclab-headline") < page.index("mean ± std over seeds, HM of the means")
    assert 'download="summary_embedded_runs.csv" href="data:text/csv;base64,' in page
    assert (work / "runs" / "summary_embedded_runs.csv").is_file()
    assert "run_dir" not in page  # the raw per-run table is a file, not a 42-column table up front
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["backend"] == "embedded" and prov["quick"] and prov["seeds"] == [1]
    assert prov["weights"]["sha256"] == sha256_file(embedded_checkpoint())
    tint = prov["datasets"]["world_tint"]
    assert tint["split_sha256"] == sha256_file(tint["split_file"]) and tint["images"]["test"] > 0
    assert prov["dpclab"]["version"] and "commit" in prov["dpclab"] and prov["versions"]["torch"]
    assert "<h2>Provenance</h2>" in index and tint["split_sha256"] in index


def test_quick_report_prose_states_this_runs_numbers(quick_report):
    """Notebook 03's sentence about this run's ω_b sweep is computed from the grid the notebook saved (world_shapes,
    its embedded dataset), not written in advance."""
    import torch

    from dpclab.omega import OmegaGrid

    work, results, _ = quick_report
    nb = nbformat.read(str(results["03_omega_sliders"].executed), as_version=4)
    said = [o["data"]["text/markdown"] for c in nb.cells for o in c.get("outputs", [])
            if "text/markdown" in o.get("data", {}) and "**This run** (`" in o["data"]["text/markdown"]]
    (grid_path,) = sorted(work.glob("runs/*/world_shapes/coop+dpc/*/omega_grid_*.pt"))
    base = OmegaGrid.load(grid_path).accuracy["base"]
    assert len(said) == 1 and said[0].startswith("**This run** (`world_shapes`, seed 1, `paper` mode)")
    assert f"{float(base[0]):.2f} at ω_b = 0 (P)" in said[0] and f"{float(base[-1]):.2f} at ω_b = 1" in said[0]
    assert f"highest {float(torch.max(base)):.2f}" in said[0]


def test_untrained_coop_equals_zeroshot_helper(json_root, tmp_path, tiny_backbone):
    from dpclab.lab.analysis import untrained_coop_vs_zeroshot
    from dpclab.experiment import Experiment
    from dpclab.runconfig import RunConfig

    cfg = RunConfig.of(dataset="eurosat", data_root=str(json_root), shots=4, cache_dir=str(tmp_path / "c"),
                    progress=False)
    table = untrained_coop_vs_zeroshot(Experiment.prepare(cfg, tiny_backbone), tiny_backbone)
    assert list(table["split"]) == ["base", "new"]
    assert (table["max |logit difference|"] < 1e-4).all()
    assert (table.iloc[:, 1] == table.iloc[:, 2]).all()


def test_slider_callback_reads_the_grid(capsys):
    import torch

    from dpclab.evaluate import harmonic_mean
    from dpclab.omega import OmegaGrid
    from dpclab.lab.widgets import omega_sliders, omega_summary

    grid = OmegaGrid(omegas=[0.0, 0.5, 1.0], accuracy={"base": torch.tensor([60.0, 70.0, 65.0], dtype=torch.float64),
                                                       "new": torch.tensor([50.0, 45.0, 40.0], dtype=torch.float64)},
                     labels={}, meta={"default": [0.5, 0.0]})
    text = omega_summary(grid, 0.45, 0.1)  # nearest grid values: 0.5 and 0.0
    assert "ω_b = 0.50, ω_n = 0.00" in text and "base **70.00**" in text and "new **50.00**" in text
    assert f"HM **{harmonic_mean(70, 50):.2f}**" in text
    box = omega_sliders(grid)
    slider_b, slider_n = box.children[0].children
    assert (slider_b.value, slider_n.value, slider_b.step) == (0.5, 0.0, 0.5)
    slider_n.value = 1.0  # fires the callback outside a kernel: it must not raise
    assert slider_n.value == 1.0


def test_setup_grid_trains_each_method_with_its_own_epochs(json_root, tmp_path, tiny_backbone):
    """Notebook 06's grid: run_matrix with the notebook's per-method epochs; DPC's step 1 is the CoOp row's run."""
    from dpclab.lab.matrix import run_matrix

    from dpclab.lab.plan import Scope
    from dpclab.source import Source

    s = Setup(Source(model="tiny", pretrained="random", data_root=str(json_root), shots=4, device="cpu"),
              Scope(("eurosat",), (1,), quick=True), interactive=False)
    assert s.train_overrides("coop") == ({"epochs": 20}, {}) and s.train_overrides("zeroshot") == ({}, {})
    assert s.train_overrides("coop+dpc") == ({"epochs": 2}, {"epochs": 20})
    source = Source(model="tiny", pretrained="random", data_root=s.data_root, shots=4, runs_dir=str(tmp_path / "runs"),
                    cache_dir=None, results=str(tmp_path / "results.csv"), device="cpu")
    runs = run_matrix(source, s.datasets, ["zeroshot", "coop", "coop+dpc"], s.seeds, train_for=s.train_overrides,
                      backbone=tiny_backbone)
    assert list(runs["epochs"]) == [0, 20, 2]
    assert runs.loc[2, "new"] == runs.loc[1, "new"]  # omega_n = 0: new classes go to step 1, the CoOp run
    assert sorted(pd.read_csv(tmp_path / "results.csv")["method"]) == ["coop", "coop+dpc", "zeroshot"]
    with pytest.raises(ValueError, match="train or train_for"):
        run_matrix(source, ["eurosat"], ["coop"], [1], train={"epochs": 1}, train_for=s.train_overrides,
                   backbone=tiny_backbone)


def test_save_figure_writes_the_png_it_displays(tmp_path):
    from matplotlib.figure import Figure
    from PIL import Image

    from dpclab.lab.plots import save_figure, tradeoff

    fig = tradeoff({"m": pd.DataFrame({"base": [60.0, 70.0], "new": [50.0, 40.0]})}, {"base": 55.0, "new": 52.0})
    saved = save_figure(fig, "01_tradeoff", alt="  base against new accuracy  ", folder=tmp_path / "figures")
    assert saved.path == tmp_path / "figures" / "01_tradeoff.png" and saved.alt == "base against new accuracy"
    data, meta = saved._repr_png_()
    assert data == saved.path.read_bytes() and meta["alt"] == saved.alt
    with Image.open(saved.path) as img:
        assert img.info["Description"] == saved.alt and meta["width"] == round(img.width * 100 / 120)
    assert not list((tmp_path / "figures").glob(".*"))  # no temporary file left behind
    with pytest.raises(ValueError, match="needs alt text"):
        save_figure(Figure(), "x", alt=" ", folder=tmp_path)
    with pytest.raises(ValueError, match="letters, digits"):
        save_figure(Figure(), "../x", alt="a", folder=tmp_path)


def test_paper_comparison_puts_ours_beside_each_papers_numbers():
    from dpclab.lab import paper_numbers

    ours = pd.DataFrame({"method": ["zeroshot", "coop", "coop+dpc", "coop+dept"], "base": [60.0, 80.0, 82.0, 81.0],
                         "new": [50.0, 40.0, 40.0, 45.0]})
    ours["hm"] = [harmonic_mean(b, n) for b, n in zip(ours["base"], ours["new"])]
    table = paper_numbers.comparison(ours, "embedded")
    assert list(table.index) == list(ours["method"])
    assert table.loc["coop", "ours base (embedded)"] == 80.0 and table.loc["coop+dept", "ours new"] == 45.0
    assert table.loc["coop", "DPC paper HM"] == 74.84 and table.loc["coop", "DePT paper HM"] == 75.18
    assert math.isnan(table.loc["zeroshot", "DPC paper base"])  # the papers do not report zero-shot here
    assert table.loc["coop+dpc", "ours ΔHM vs base"] == pytest.approx(ours.hm[2] - ours.hm[1])
    assert table.loc["coop+dpc", "paper ΔHM vs base"] == pytest.approx(76.13 - 74.84)  # DPC's own paper
    assert table.loc["coop+dept", "paper ΔHM vs base"] == pytest.approx(77.29 - 75.18)  # DePT's own paper
    assert math.isnan(table.loc["coop", "ours ΔHM vs base"])


def test_notebook_tables_by_hand():
    """The small tables the notebooks show: CI summary per model, the invariance study's far end, pair distances."""
    import torch

    from dpclab.lab import analysis

    ci = pd.DataFrame({"model": ["a", "a", "b", "b"], "base": [1.0, 3.0, 2.0, 2.0], "new": [1.0, 1.0, 4.0, 2.0],
                       "ratio": [1.0, 3.0, 0.5, 1.0]})
    s = analysis.ci_summary(ci)
    assert list(s.index) == ["a", "b"] and s.loc["a", "mean_CI_base"] == 2.0 and s.loc["b", "mean_CI_new"] == 3.0
    assert s.loc["a", "median_ratio"] == 2.0 and s.loc["a", "share_ratio_above_1"] == 0.5
    assert s.loc["b", "share_ratio_above_1"] == 0.0
    inv = pd.DataFrame({"pair": ["p"] * 3, "split": ["base"] * 3, "omega": [0.0, 0.5, 1.0],
                        "pearson_mean": [1.0, 0.9, 0.8], "spearman_mean": [1.0, 0.9, 0.7],
                        "pearson_var": [1.0, 0.9, 0.6], "spearman_var": [1.0, 0.9, 0.5], "rel_gap": [0.0, 0.3, 0.1]})
    far = analysis.invariance_far_end(inv)
    assert far.loc[("p", "base")].to_dict() == {"pearson_mean": 0.8, "spearman_mean": 0.7, "pearson_var": 0.6,
                                               "spearman_var": 0.5, "max_rel_gap": 0.3}
    a, b = torch.zeros(2, 2), torch.tensor([[3.0, 4.0], [0.0, 0.0]])
    d = analysis.pair_distances({"a → b": (a, b), "b → a": (b, a)})
    assert d["‖end − start‖"].tolist() == [5.0, 5.0] and d["‖start‖"].tolist() == [0.0, 5.0]
