"""What a user of ``python -m dpclab report`` sees: one status line per notebook, a running line with an estimate
from the last run, real warnings (and no kernel or nbconvert noise), figures with alt text, progress bars that stay
out of logs."""

from __future__ import annotations

import io
import json
import re
import time
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dpclab.lab.alttext import describe_figure
from dpclab.lab.parameters import PARAMETER_KEYS
from dpclab.progress import progress_bar
from dpclab.lab.report.console import (ReportConsole, estimate_remaining, expected_times, load_timings, save_timings,
                                       status_line, typical_times)
from dpclab.lab.report.run import NotebookResult, notebook_warnings


def _result(name: str, seconds: float, ok: bool = True, warnings=()) -> NotebookResult:
    return NotebookResult(name, Path(f"{name}.ipynb"), Path(f"out/{name}.ipynb"), None, ok, seconds,
                          "" if ok else "In [3] (...): ValueError: boom", list(warnings))


# ------------------------------------------------------------------------------------------- estimates
def test_estimate_remaining_follows_the_pools_order():
    last = {"a": 100.0, "b": 30.0, "c": 50.0, "d": 10.0}
    assert estimate_remaining({}, ["a", "b", "c", "d"], last, jobs=1) == 190.0
    # two workers take a and b; b's worker then takes c (at 30, ends at 80), then d (80 -> 90); a ends at 100
    assert estimate_remaining({}, ["a", "b", "c", "d"], last, jobs=2) == 100.0
    # a has run 40 s (60 left), b 10 s (20 left): c goes to b's worker (20 + 50 = 70), d to a's (60 + 10 = 70)
    assert estimate_remaining({"a": 40.0, "b": 10.0}, ["c", "d"], last, jobs=2) == 70.0
    assert estimate_remaining({"a": 40.0}, ["c", "d"], last, jobs=2) == 60.0  # c, then d, on the free worker
    assert estimate_remaining({"a": 150.0}, [], last, jobs=2) == 0.0  # over its last time: nothing known is left
    assert estimate_remaining({"a": 1.0}, ["new_notebook"], last, jobs=2) is None


def test_timings_are_kept_per_parameter_set_and_merged(tmp_path):
    quick, full = {"interactive": False, "quick": True}, {"interactive": False, "quick": False}
    assert load_timings(tmp_path, quick) == {}
    save_timings(tmp_path, quick, {"00_a": 12.34, "01_b": 40.0})
    save_timings(tmp_path, full, {"00_a": 300.0})
    save_timings(tmp_path, quick, {"00_a": 10.0})  # a run of one notebook keeps the other's time
    assert load_timings(tmp_path, quick) == {"00_a": 10.0, "01_b": 40.0}
    assert load_timings(tmp_path, full) == {"00_a": 300.0}
    assert load_timings(tmp_path, {**quick, "seeds": "1"}) == {}  # other parameters: no estimate
    assert [p.name for p in tmp_path.iterdir()] == ["timings.json"]  # written atomically: no temp file left
    (tmp_path / "timings.json").write_text("{ torn")
    from dpclab.io import DamagedFileWarning

    with pytest.warns(DamagedFileWarning, match="timings.json is damaged"):  # named, moved aside
        assert load_timings(tmp_path, quick) == {}  # unreadable: no estimate, no crash
    save_timings(tmp_path, quick, {"00_a": 9.0})
    assert load_timings(tmp_path, quick) == {"00_a": 9.0}


class _Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_console_prints_status_lines_and_a_running_line_with_the_estimate():
    clock, log = _Clock(), io.StringIO()
    console = ReportConsole(["00_a", "01_b"], {"00_a": 60.0, "01_b": 120.0}, "by this machine's last run", jobs=1,
                            stream=log, clock=clock)
    assert console.start_line() == "report: 2 notebooks, 1 at a time; expected 3:00 (by this machine's last run)"
    console.started("00_a")
    clock.now += 15
    assert console.line() == "running 00_a 0:15/~1:00 · 0:15 elapsed, ~2:45 left"
    console.finished(_result("00_a", 15.2, warnings=["In [4]: UserWarning: coarse grid"]))
    console.started("01_b")
    clock.now += 200
    assert console.line() == "running 01_b 3:20/~2:00 (longer than expected) · 3:35 elapsed, taking longer than " \
                             "expected"
    console.finished(_result("01_b", 200.0, ok=False))
    lines = log.getvalue().splitlines()
    # every status line says what is left (the last one: nothing)
    assert lines[0].split() == ["00_a", "ok", "15.2", "s", "(expected", "60.0", "s)", "·", "~2:00", "left"]
    assert lines[1] == "    warning: In [4]: UserWarning: coarse grid"
    assert lines[2].split()[:3] == ["01_b", "failed", "200.0"] and "ValueError: boom" in lines[2]
    assert "left" not in lines[2]
    assert len(lines) == 3  # not a terminal: no running line between the status lines (only the heartbeat)
    fresh = ReportConsole(["x"], {}, "no typical times for the open_clip backend (full)", stream=io.StringIO(),
                          clock=clock)
    assert fresh.start_line() == "report: 1 notebook, 1 at a time; no estimate (no typical times for the " \
                                 "open_clip backend (full))"
    fresh.started("x")
    assert "no estimate yet" in fresh.line()


def test_first_run_estimates_from_the_shipped_typical_times(tmp_path):
    """A fresh clone has no timings.json: the start line and every status line still carry an estimate, from the
    per-notebook times shipped with the package; after a run this machine's own times replace them."""
    from dpclab.lab.report.run import discover

    names = [p.stem for p in discover("notebooks")]
    for quick in (False, True):
        params = {"interactive": False, "quick": quick}
        typical, source = typical_times(params)
        assert set(names) <= set(typical) and all(t > 0 for t in typical.values()), (quick, typical)
        assert source.startswith("typical times of ") and expected_times(tmp_path, params) == (typical, source)
        log = io.StringIO()
        console = ReportConsole(names, typical, source, jobs=2, stream=log, clock=_Clock())
        assert re.fullmatch(r"report: 7 notebooks, 2 at a time; expected \d+:\d\d \(typical times of .+\)",
                            console.start_line())
    full = {"interactive": False, "quick": False}
    assert typical_times({**full, "model": "ViT-B-16", "pretrained": "openai"})[0] == {}
    assert "default seeds" in typical_times({**full, "seeds": "1 2 3"})[1]  # the embedded default is seed 1
    assert typical_times({**full, "seeds": [1], "dataset": None})[0]  # the defaults, spelled another way
    save_timings(tmp_path, full, {"00_quickstart": 5.0})  # this machine's own time replaces the typical one
    assert expected_times(tmp_path, full) == ({**typical_times(full)[0], "00_quickstart": 5.0},
                                              "by this machine's last run")
    other = {**full, "seeds": "1 2 3"}  # a workload without typical times
    save_timings(tmp_path, other, {"00_quickstart": 7.0})
    assert expected_times(tmp_path, other) == ({"00_quickstart": 7.0}, "by this machine's last run")


def test_estimate_with_a_training_phase_before_the_notebooks():
    last = {"train": 100.0, "a": 10.0, "b": 30.0, "c": 20.0}
    # the training phase takes every worker; then a, b, c over 2 workers: a|b -> c after a (10 + 20) -> 30
    assert estimate_remaining({}, ["train", "a", "b", "c"], last, jobs=2, serial=["train"]) == 130.0
    assert estimate_remaining({"train": 40.0}, ["a", "b", "c"], last, jobs=2, serial=["train"]) == 90.0


def test_console_heartbeat_in_logs_and_redraw_on_a_terminal():
    log = io.StringIO()
    with ReportConsole(["00_a"], {"00_a": 5.0}, stream=log, heartbeat=0.05) as console:
        console.started("00_a")
        time.sleep(0.3)
        console.finished(_result("00_a", 0.3))
    beats = [line for line in log.getvalue().splitlines() if line.startswith("running 00_a")]
    assert beats and "\r" not in log.getvalue()
    tty = _Terminal()
    with ReportConsole(["00_a"], {}, stream=tty, tick=0.05) as console:
        console.started("00_a")
        time.sleep(0.2)
        console.finished(_result("00_a", 0.2))
    text = tty.getvalue()
    assert "\r\x1b[K" in text and text.count("running 00_a") >= 2  # redrawn in place
    assert text.endswith("\n") and text.rsplit("\r\x1b[K", 1)[1].startswith("00_a ")  # the status line replaced it


def test_status_line_lists_warnings():
    line = status_line(_result("03_x", 3.0, warnings=["In [2]: RuntimeWarning: a", "In [5]: UserWarning: b"]))
    assert line.splitlines()[1:] == ["    warning: In [2]: RuntimeWarning: a", "    warning: In [5]: UserWarning: b"]


def test_notebook_warnings_finds_python_warnings_in_stderr_outputs():
    from nbformat.v4 import new_code_cell, new_notebook, new_output

    cell = new_code_cell("x", execution_count=7)
    cell.outputs = [new_output("stream", name="stderr", text="/tmp/ipykernel_1/2.py:3: UserWarning: grid too coarse\n"
                                                             "  warnings.warn('grid too coarse')\nother text\n"),
                    new_output("stream", name="stdout", text="a.py:1: UserWarning: printed, not warned\n"),
                    new_output("stream", name="stderr", text="x.py:9: UserWarning: grid too coarse\n")]
    nb = new_notebook(cells=[cell, new_code_cell("y", execution_count=8)])
    assert notebook_warnings(nb) == ["In [7]: UserWarning: grid too coarse"]


# ------------------------------------------------------------------------- a real report run, end to end
def _notebook(path: Path, body: str) -> None:
    from nbformat.v4 import new_code_cell, new_notebook

    params = new_code_cell("\n".join(f"{k} = None" for k in PARAMETER_KEYS))
    params.metadata["tags"] = ["parameters"]
    nb = new_notebook(cells=[params, new_code_cell(body)],
                      metadata={"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}})
    nbformat.write(nb, str(path))


def test_report_is_quiet_but_shows_real_warnings_and_figures_get_alt_text(tmp_path, capfd):
    from dpclab.lab.cli import main

    books, out = tmp_path / "books", tmp_path / "reports"
    books.mkdir()
    _notebook(books / "a_warns.ipynb",
              "import warnings\n"
              "def load_grid():\n"
              "    warnings.warn('omega grid has 3 values: the sweep is coarse', UserWarning)\n"
              "load_grid()")
    _notebook(books / "b_figure.ipynb",
              "import matplotlib.pyplot as plt\n"
              "from dpclab.lab import notebook as nb\n"
              "S = nb.setup('open_clip', 'ViT-B-16', 'openai', data_root='.', chdir=False, threads=0)  # alt text on\n"
              "fig, ax = plt.subplots()\n"
              "ax.plot([0, 1], [2, 3], label='base')\n"
              "ax.set_title('accuracy over epochs'); ax.set_xlabel('epoch'); ax.set_ylabel('accuracy (%)')\n"
              "ax.legend()\n"
              "plt.show()")
    assert main(["report", "--notebooks", str(books), "--out", str(out), "--jobs", "2"]) == 0
    first = capfd.readouterr()
    text = first.out + first.err
    assert "Kernel is running over TCP" not in text and "Alternative text is missing" not in text
    assert "warning: In [3]: UserWarning: omega grid has 3 values: the sweep is coarse" in first.out
    status = [line for line in first.out.splitlines() if re.match(r"[ab]_\w+ +ok +[\d.]+ s", line)]
    assert len(status) == 2, first.out
    assert "2/2 notebooks ok" in first.out
    assert set(load_timings(out, {"interactive": False, "quick": False})) == {"a_warns", "b_figure"}
    page = (out / "b_figure.html").read_text()
    alts = re.findall(r'<img alt="([^"]*)"', page)
    assert alts == ["Figure. Line plot 'accuracy over epochs' of accuracy (%) against epoch (series: base)."]
    assert "No description has been provided" not in page
    assert "omega grid has 3 values" in (out / "index.html").read_text()
    # the second run knows the first one's times
    assert main(["report", "--notebooks", str(books), "--out", str(out), "--only", "a", "--jobs", "1"]) == 0
    second = capfd.readouterr().out
    assert re.search(r"a_warns +ok +[\d.]+ s  \(expected [\d.]+ s\)", second), second
    start = next(line for line in second.splitlines() if line.startswith("report: "))
    assert "expected" in start and "by this machine's last run" in start


# ----------------------------------------------------------------------------------- alt text, bars, figure
def test_describe_figure_names_panels_labels_and_series():
    fig = Figure()
    fig.suptitle("DPC sweep")
    left, right = fig.subplots(1, 2)
    left.plot([0, 1], [1, 2], label="base accuracy")
    left.plot([0, 1], [2, 1], label="new accuracy")
    left.legend()
    left.set(title="computed here", xlabel="ω", ylabel="accuracy (%)")
    right.imshow(np.zeros((2, 2)))
    right.set_title("HM over (ω_b, ω_n)")
    assert describe_figure(fig) == ("Figure: DPC sweep. 2 panels: (1) line plot 'computed here' of accuracy (%) "
                                    "against ω (series: base accuracy, new accuracy); (2) image 'HM over (ω_b, ω_n)'.")
    grid = Figure()
    for k, ax in enumerate(grid.subplots(2, 4).ravel()):
        ax.imshow(np.zeros((2, 2)))
        ax.set_title(f"class {k}")
    assert describe_figure(grid).startswith("Figure. 8 image panels titled: class 0, class 1,")
    assert len(describe_figure(grid, max_chars=40)) == 40


def test_progress_bars_print_nothing_per_iteration_when_not_on_a_terminal(capsys):
    log = io.StringIO()
    outer = progress_bar(range(3), desc="train", file=log)
    assert [sum(1 for _ in progress_bar(range(4), desc="encode", leave=False, file=log)) for _ in outer] == [4] * 3
    assert log.getvalue() == ""
    tty = _Terminal()
    list(progress_bar(range(3), desc="train", file=tty))
    assert "train" in tty.getvalue() and "3/3" in tty.getvalue()
    off = _Terminal()
    list(progress_bar(range(3), enabled=False, file=off))
    assert off.getvalue() == ""


def test_channel_importance_suptitle_does_not_cover_the_panel_titles():
    from dpclab.lab.plots.analysis import channel_importance as plot_channel_importance

    rng = np.random.default_rng(0)
    table = pd.DataFrame([{"model": m, "channel": c, "base": rng.random(), "new": rng.random()}
                          for m in ["zero-shot", "CoOp", "oracle", "CoOp+DePT", "CoOp+DPC"] for c in range(16)])
    fig = plot_channel_importance(table, title="channel importance on world_tint (embedded)")
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    top = next(t for t in fig.texts if t.get_text() == fig.get_suptitle()).get_window_extent(renderer)
    titles = [ax.title.get_window_extent(renderer) for ax in fig.axes]
    assert [ax.get_title() for ax in fig.axes][2] == "oracle"
    assert all(not top.overlaps(t) for t in titles) and all(top.y0 >= t.y1 for t in titles)
