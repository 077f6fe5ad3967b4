"""Fault injection: every file the kit writes and reads back is cut short or corrupted in turn, ``report`` is killed
(kill -9) at several points of its training phase and of its notebook phase and run again, and two ``report`` s run
on the same folder at once. Each case: no traceback, the damaged file named (and moved aside, never deleted) or
silently rebuilt, no finished run retrained or lost, the results rows intact, and the final report the same as an
undisturbed one (what is deterministic: the notebook's tables and text, the results rows, the runs' metrics).

The library-level cases (a tiny random model, in process) take seconds; the report-level ones run
``report --quick --only 01 -p epochs 1`` (two one-epoch runs, one notebook) in scratch folders that share one
generated world (so their runs have the same keys) and one undisturbed reference run.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from conftest import write_json_dataset
from dpclab.io import (DamagedFileError, DamagedFileWarning, archive_damage, atomic_torch_save, atomic_write_json,
                       check_folder, move_aside, read_json, set_aside, torch_load)

REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ how files are damaged
def cut(path: Path, keep: float = 0.5) -> None:
    """Cut the file short (a full disk, a killed copy)."""
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def flip(path: Path) -> None:
    """Flip one byte (a bad copy, a bad disk): in the middle of the file, or of a torch archive's largest record
    (not in the padding between records, which holds nothing)."""
    import struct
    import zipfile

    data = bytearray(path.read_bytes())
    at = len(data) // 2
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            info = max(archive.infolist(), key=lambda i: i.file_size)
        name_len, extra_len = struct.unpack("<HH", data[info.header_offset + 26:info.header_offset + 30])
        at = info.header_offset + 30 + name_len + extra_len + info.file_size // 2
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def garble(path: Path) -> None:
    """Replace the content with bytes that are nothing the kit writes (not UTF-8, not an archive)."""
    path.write_bytes(b"\x00\xff\xfe garbage \x80")


FAULTS = {"cut": cut, "flip": flip, "garble": garble, "empty": lambda p: p.write_bytes(b"")}


def aside(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f"{path.name}.damaged-*"))


# ------------------------------------------------------------------------------------------ the readers themselves
@pytest.mark.parametrize("fault", FAULTS)
def test_readers_name_every_damaged_file(tmp_path, fault):
    js, pt = tmp_path / "r.json", tmp_path / "m.pt"
    atomic_write_json(js, {"metrics": {"base": 1.0}, "history": []})
    atomic_torch_save({"state": {"w": torch.arange(1000.0)}}, pt)
    assert read_json(js, ("metrics",))["metrics"] == {"base": 1.0}
    assert torch.equal(torch_load(pt, keys=("state",))["state"]["w"], torch.arange(1000.0))
    for path, read in ((js, lambda: read_json(js, ("metrics",))), (pt, lambda: torch_load(pt, keys=("state",)))):
        if fault == "flip" and path is js:
            path.write_text('{"metrics": {"base": 1.0}, "history": [')  # JSON has no checksum: cut it instead
        else:
            FAULTS[fault](path)
        with pytest.raises(DamagedFileError, match=re.escape(str(path)) + " is damaged") as err:
            read()
        assert err.value.path == path and "\n" not in str(err.value)
    atomic_write_json(js, [1, 2])  # valid JSON, but not what a run writes
    with pytest.raises(DamagedFileError, match="not a JSON object with metrics"):
        read_json(js, ("metrics",))


def test_a_flipped_byte_in_a_torch_archive_is_found_though_torch_load_reads_it():
    """torch.load does not check the archive's CRC-32s: without the check, a flipped byte gives other numbers."""
    import io

    buffer = io.BytesIO()
    torch.save({"w": torch.arange(1000.0)}, buffer)
    data = bytearray(buffer.getvalue())
    data[len(data) // 2] ^= 0xFF
    silently = torch.load(io.BytesIO(bytes(data)), weights_only=True)["w"]
    assert not torch.equal(silently, torch.arange(1000.0))  # what an unchecked reader would use


def test_missing_files_stay_missing_and_moving_aside_never_overwrites(tmp_path):
    (tmp_path / "file").write_text("x")
    for missing in (tmp_path / "nope.json", tmp_path / "file" / "under_a_file.json"):
        with pytest.raises(FileNotFoundError):
            read_json(missing)
        with pytest.raises(FileNotFoundError):
            torch_load(missing.with_suffix(".pt"))
    path = tmp_path / "a.json"
    moved = []
    for text in ("one", "two", "three"):  # within the same second: three distinct names, nothing lost
        path.write_text(text)
        moved.append(move_aside(path))
    assert sorted(p.read_text() for p in moved) == ["one", "three", "two"] and not path.exists()
    assert all(p.name.startswith("a.json.damaged-") for p in moved)
    assert move_aside(path) is None  # already gone (another process moved it): nothing to do
    path.write_text("{ torn")
    with pytest.raises(DamagedFileError) as err:
        read_json(path)
    atomic_write_json(path, {"rebuilt": True})  # another process repaired it meanwhile: its file is not moved
    assert set_aside(err.value, "rebuilt") is None and read_json(path) == {"rebuilt": True} \
        and len(aside(path)) == 3
    with pytest.raises(ValueError, match=r"The runs folder .*file/runs cannot be a folder: .*file is a file"):
        check_folder(tmp_path / "file" / "runs", "runs folder")
    assert check_folder(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created


# ------------------------------------------------------------------------------------------ runs, caches, results
@pytest.fixture(scope="module")
def lab(tmp_path_factory, tiny_backbone):
    """A fixture dataset and one finished two-epoch CoOp run (with its feature and split caches and results table),
    kept as the pristine copy each case starts from."""
    from dpclab.pipeline import run
    from dpclab.runconfig import RunConfig

    root = tmp_path_factory.mktemp("faults_lab")
    write_json_dataset(root / "data")
    pristine = root / "pristine"
    cfg = _cfg(root / "data", pristine)
    res = run(cfg, tiny_backbone)
    assert not res.reused
    return root, pristine, res.metrics, res.run_dir.relative_to(pristine)


def _cfg(data: Path, work: Path):
    from dpclab.runconfig import RunConfig

    return RunConfig.of(method="coop", dataset="eurosat", data_root=str(data), model="dpclab-test-tiny",
                     pretrained="random", shots=4, seed=1, device="cpu", cache_dir=str(work / "cache"),
                     runs_dir=str(work / "runs"), results=str(work / "runs" / "results.csv"),
                     train={"epochs": 2, "batch_size": 4, "lr": 0.05}, progress=False)


def _copy(lab, name: str) -> Path:
    root, pristine, _, _ = lab
    work = root / name
    shutil.copytree(pristine, work)
    return work


def _run_again(lab, work, tiny_backbone, features: bool = False):
    """Run the same configuration again in ``work``: its result, the plan's action, and the warnings. With
    ``features``, a reused run is evaluated again and its training features read (every cache entry)."""
    from dpclab.pipeline import plan_run, run
    from dpclab.experiment import Experiment

    cfg = _cfg(lab[0] / "data", work)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exp = Experiment.prepare(cfg, tiny_backbone)
        action = plan_run(cfg, exp)[0].action
        res = run(cfg, experiment=exp)
        if features:
            train = exp.train_examples(res.method.input_kind)
            for view in range(cfg.train["epochs"]):  # the views the two epochs read
                train.features(view)
            assert exp.evaluate(res.method) == lab[2]
    return res, action, [str(w.message) for w in caught if issubclass(w.category, DamagedFileWarning)]


#: run-file faults: the files damaged, and what the run then does (resume from its intact checkpoint, or retrain)
RUN_FAULTS = {
    "result.json cut": ({"result.json": cut}, "resume"),
    "result.json garbled": ({"result.json": garble}, "resume"),
    "result.json not a run's": ({"result.json": lambda p: p.write_text("[]")}, "resume"),
    "model.pt cut": ({"model.pt": cut}, "resume"),
    "model.pt byte flipped": ({"model.pt": flip}, "resume"),
    "model.pt empty": ({"model.pt": FAULTS["empty"]}, "resume"),
    "result.json and checkpoint.pt cut": ({"result.json": cut, "checkpoint.pt": cut}, "train"),
    "model.pt flipped, checkpoint.pt garbled": ({"model.pt": flip, "checkpoint.pt": garble}, "train"),
}


@pytest.mark.parametrize("case", RUN_FAULTS)
def test_a_damaged_run_file_is_named_moved_aside_and_the_run_finished_again(lab, tiny_backbone, case):
    damage, expected = RUN_FAULTS[case]
    work = _copy(lab, re.sub(r"\W+", "_", case))
    run_dir = work / lab[3]
    for name, fault in damage.items():
        fault(run_dir / name)
    res, action, said = _run_again(lab, work, tiny_backbone)
    assert action == expected
    assert res.metrics == lab[2] and not res.reused  # deterministic: the same numbers as the undisturbed run
    for name in damage:
        assert any(f"{run_dir / name} is damaged" in line for line in said), said
        assert len(aside(run_dir / name)) == 1  # kept, never deleted
    assert res.run_dir == run_dir and (run_dir / "result.json").is_file()
    res2, action2, said2 = _run_again(lab, work, tiny_backbone)  # now a finished run again: reused, no warning
    assert (action2, res2.reused, res2.metrics, said2) == ("reuse", True, lab[2], [])
    rows = pd.read_csv(work / "runs" / "results.csv")
    assert len(rows) == 2 and rows["base"].nunique() == 1  # the first row intact, one row for the run made again


def test_a_missing_model_file_makes_the_run_unfinished(lab, tiny_backbone):
    work = _copy(lab, "model_missing")
    (work / lab[3] / "model.pt").unlink()
    res, action, said = _run_again(lab, work, tiny_backbone)
    assert action == "resume" and res.metrics == lab[2]
    assert any("result.json is damaged (its model.pt is missing)" in line for line in said), said


def test_a_finished_run_whose_row_was_lost_gets_it_back_when_reused(lab, tiny_backbone):
    """Killed between writing result.json and appending its row (found by killing ``report``): the run is
    reused, and its row written then."""
    work = _copy(lab, "row_lost")
    table = work / "runs" / "results.csv"
    row = pd.read_csv(table)
    table.write_text(",".join(row.columns) + "\n")  # the header only: the run's row never made it
    res, action, said = _run_again(lab, work, tiny_backbone)
    assert (action, res.reused, said) == ("reuse", True, [])
    again = pd.read_csv(table)
    assert len(again) == 1 and again.loc[0, "run_dir"] == str(work / lab[3])
    assert again.loc[0, ["base", "new", "hm"]].tolist() == row.loc[0, ["base", "new", "hm"]].tolist()
    _run_again(lab, work, tiny_backbone)
    assert len(pd.read_csv(table)) == 1  # once


@pytest.mark.parametrize("fault", ["cut", "flip", "garble"])
def test_damaged_cache_entries_are_recomputed_with_a_warning(lab, tiny_backbone, fault):
    work = _copy(lab, f"cache_{fault}")
    entries = sorted((work / "cache").rglob("*.pt")) + sorted((work / "cache").rglob("*.json"))
    assert {p.parent.name for p in entries} >= {"fewshot"} and any(p.suffix == ".pt" for p in entries)
    for path in entries:
        (cut if fault == "flip" and path.suffix == ".json" else FAULTS[fault])(path)
    res, action, said = _run_again(lab, work, tiny_backbone, features=True)
    assert action == "reuse" and res.reused and res.metrics == lab[2]
    for path in entries:
        assert any(f"{path} is damaged" in line and "moved aside" in line for line in said), (path, said)
        assert path.is_file() and len(aside(path)) == 1  # rebuilt, the damaged one kept beside it
    assert not _run_again(lab, work, tiny_backbone, features=True)[2]  # rebuilt entries read without a word


@pytest.mark.parametrize("fault", ["last row cut", "header cut", "garbled", "line pasted in"])
def test_a_damaged_results_table_keeps_its_intact_rows(tmp_path, fault):
    from dpclab.evaluate import append_result, read_results

    path = tmp_path / "results.csv"
    row = {"dataset": "d", "method": "coop", "model": "m", "pretrained": "p", "shots": 16, "train_classes": "base",
           "base": 80.0, "new": 70.0, "hm": 74.7, "epochs": 1, "run_dir": "", "backend": "embedded",
           "time": "2026-12-06 10:00:00"}
    for seed in (1, 2, 3):
        append_result(path, {**row, "seed": seed})
    data = path.read_bytes()
    kept = {"last row cut": [1, 2], "header cut": [], "garbled": [], "line pasted in": [1, 2, 3]}[fault]
    first, rest = data.split(b"\n", 1)
    pasted = first + b"\n" + b",".join([b"<<<<<<< HEAD"] * 20) + b"\n" + rest  # a merge conflict's marker
    path.write_bytes({"last row cut": data[:-15], "header cut": data[:20], "garbled": b"\x00\xff garbage",
                      "line pasted in": pasted}[fault])
    with pytest.warns(DamagedFileWarning, match=re.escape(f"{path} is damaged")):
        assert list(read_results(path)["seed"]) == kept
    assert len(aside(path)) == 1 and aside(path)[0].read_bytes() != path.read_bytes()
    append_result(path, {**row, "seed": 4})
    assert list(read_results(path)["seed"]) == kept + [4]


def test_other_tables_are_appended_to_and_never_taken_for_damaged(tmp_path):
    """The transfer table (other columns) goes through the same append: not a results table, not damaged."""
    from dpclab.evaluate import append_result, read_results

    path = tmp_path / "transfer.csv"
    for seed in (1, 2):
        append_result(path, {"setting": "cross_dataset", "method": "coop", "source": "a", "seed": seed,
                             "target": "b", "role": "target", "accuracy": 50.0})
    assert list(pd.read_csv(path)["seed"]) == [1, 2] and not aside(path)
    with pytest.raises(ValueError, match="transfer.csv is not a results table \\(no column dataset, base, new\\)"):
        read_results(path)
    assert not aside(path)


def test_damaged_best_epoch_and_omega_grid_files_are_rebuilt(tmp_path):
    from dpclab.omega import OmegaGrid
    from dpclab.selection import BestBaseEpoch

    atomic_torch_save({"epoch": 0, "base_test": 50.0, "state": {}}, tmp_path / "best.pt")
    assert BestBaseEpoch(lambda m: 0.0, tmp_path).best["base_test"] == 50.0
    cut(tmp_path / "best.pt")
    with pytest.warns(DamagedFileWarning, match="best.pt is damaged.*searched again"):
        assert BestBaseEpoch(lambda m: 0.0, tmp_path).best is None
    grid = OmegaGrid([0.0, 1.0], {"base": torch.ones(2)}, {"base": torch.zeros(3)})
    grid.save(tmp_path / "g.pt")
    assert OmegaGrid.load(tmp_path / "g.pt").omegas == [0.0, 1.0]
    flip(tmp_path / "g.pt")
    with pytest.raises(DamagedFileError, match="g.pt is damaged"):
        OmegaGrid.load(tmp_path / "g.pt")


@pytest.mark.parametrize("fault", ["cut", "garble"])
def test_a_damaged_split_file_is_named_with_its_fix(tmp_path, fault):
    """A split file cut short, or bytes that are not UTF-8 (the latter used to fail without naming the file); the
    generated world's (stamped) gets the command that writes it again instead of "re-download"."""
    from dpclab.data.coop import read_json_split
    from dpclab.data.items import DatasetError

    base = write_json_dataset(tmp_path)
    split = base / "split_zhou_EuroSAT.json"
    FAULTS[fault](split)
    with pytest.raises(DatasetError, match=re.escape(f"Split file {split} is not valid JSON") + ".*Re-download"):
        read_json_split(split, base / "2750")
    (base / ".world_stamp").write_text("v1\n")
    with pytest.raises(DatasetError, match=f"python -m dpclab world --root {re.escape(str(tmp_path))} --names eurosat"):
        read_json_split(split, base / "2750")


def test_a_damaged_grid_state_starts_the_grid_over(tmp_path):
    from dpclab.lab.jobs import GridState

    state = GridState(tmp_path / "grid-state.json")
    state.jobs["k"] = {"status": "ok", "label": "x"}
    state.save()
    assert GridState(state.path).jobs == {"k": {"status": "ok", "label": "x"}}
    cut(state.path)
    with pytest.warns(DamagedFileWarning, match="grid-state.json is damaged.*the grid starts over"):
        assert GridState(state.path).jobs == {}
    assert len(aside(state.path)) == 1


@pytest.mark.parametrize("fault", ["cut", "flip"])
def test_damaged_weights_are_called_damaged_not_another_architecture(tmp_path, fault):
    from dpclab.backbones import embedded_checkpoint, load_clip

    if not embedded_checkpoint().is_file():
        pytest.skip("the embedded checkpoint is not in this checkout")
    weights = tmp_path / "dpclab-tiny.pt"
    shutil.copyfile(embedded_checkpoint(), weights)
    FAULTS[fault](weights)
    with pytest.raises(ValueError, match=re.escape(f"Checkpoint {weights} is damaged")) as err:
        load_clip("dpclab-tiny", str(weights), "cpu")
    assert "architecture" not in str(err.value)


def test_timings_and_typical_times_damaged(tmp_path, caplog):
    from dpclab.lab.report.console import load_timings, save_timings, typical_times

    params = {"quick": True}
    save_timings(tmp_path, params, {"00": 3.0})
    for bad in ('{"a": ', json.dumps({"k": {"seconds": {"00": "slow"}}})):
        (tmp_path / "timings.json").write_text(bad)
        with pytest.warns(DamagedFileWarning, match="timings.json is damaged.*estimates start over"):
            assert load_timings(tmp_path, params) == {}
    assert len(aside(tmp_path / "timings.json")) == 2
    save_timings(tmp_path, params, {"00": 4.0})
    assert load_timings(tmp_path, params) == {"00": 4.0}
    shipped = tmp_path / "typical_times.json"
    shipped.write_text('{"embedded": {"quick": {"label": "x", "seconds": {"00": 1')
    assert typical_times({}, shipped) == ({}, "the shipped typical times typical_times.json are damaged")
    assert "typical_times.json is damaged" in caplog.text and shipped.is_file()  # named, never moved


def test_a_damaged_shipped_benchmark_spread_is_named(tmp_path, caplog):
    from dpclab.lab.report.headline import load_spread

    shipped = tmp_path / "benchmark_spread.json"
    shipped.write_text('{"world_tint": ')
    assert load_spread(shipped) == {} and shipped.is_file()
    assert f"{shipped} is damaged" in caplog.text and "direction only" in caplog.text


# ------------------------------------------------------------------------------------------ the command line
def test_output_folders_that_cannot_be_folders_are_named_before_anything_runs(tmp_path, tiny_model_name, capsys):
    from dpclab.lab.cli import main

    write_json_dataset(tmp_path / "data")
    (tmp_path / "afile").write_text("x")
    for flag in ("--runs-dir", "--cache-dir", "--results", "--out"):
        target = str(tmp_path / "afile" / ("r.csv" if flag == "--results" else "sub"))
        argv = ["train", "--method", "coop", "--dataset", "eurosat", "--data-root", str(tmp_path / "data"),
                "--model", tiny_model_name, "--pretrained", "random", "--shots", "2", "--epochs", "1",
                "--device", "cpu", "--no-progress", "--runs-dir", str(tmp_path / "runs"), "--cache-dir",
                str(tmp_path / "cache"), flag, target]
        if flag == "--out":
            argv = ["report", "--only", "00", "--out", target]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and f"{tmp_path / 'afile'} is a file" in err[0], err
        assert not list((tmp_path / "runs").rglob("result.json"))  # refused before training


@pytest.mark.parametrize("param", [("shots", "-1"), ("shots", "2.5"), ("shots", "True"), ("epochs", "0"),
                                   ("epochs", "2.5"), ("seeds", "-1"), ("quick", "maybe")])
def test_report_parameters_are_range_checked_as_train_options(param, capsys):
    from dpclab.lab.cli import main

    assert main(["report", "--only", "00", "--out", "/nonexistent/never", "-p", *param]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and param[0] in err[0], err


def test_shots_zero_means_all_images_for_report_as_for_train():
    from dpclab.lab.notebook import resolve
    from dpclab.lab.options import check_parameter_values

    assert check_parameter_values({"shots": 0, "epochs": "3", "quick": "True"})["shots"] == 0
    assert resolve({"shots": 0}).shots == 0  # RunConfig.shots 0: every training image (README, train --shots 0)


# ------------------------------------------------------------------------------------------ report, end to end
REPORT = ["report", "--quick", "--only", "01", "-p", "epochs", "1", "--notebooks", str(REPO / "notebooks"),
          "--out", "reports"]
NOTEBOOK = "01_baseline_tuning"
#: a training-phase line: ``[1/2] ok      01 world_tint coop seed 1 curve  worker cpu 0  3.0 s  trained``
JOB_LINE = re.compile(r"^\[\d+/\d+\] ok\s+01 \S+ (?P<method>\S+) seed \d+ .*\d s  (?P<note>.+)$", re.M)


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _start(work: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "dpclab", *REPORT], cwd=work, env=_env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)


def _finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0 and "Traceback" not in out, out
    return out


def _kill_when(work: Path, seen) -> str:
    """Start the report and kill -9 it (its whole process group: workers and notebook kernel too) as soon as
    ``seen(output so far)`` is true (checked on every line and every 0.1 s); the output it printed."""
    import threading

    proc, lines = _start(work), []

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    while proc.poll() is None and not seen("".join(lines)):
        time.sleep(0.1)
    hit = seen("".join(lines))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    reader.join(timeout=10)
    out = "".join(lines)
    assert hit, f"the report ended before the kill point:\n{out}"
    return out


def _project(root: Path, name: str, world: Path) -> Path:
    """A scratch project whose data/world is the shared world (the same image paths: the same run keys)."""
    work = root / name
    (work / "data").mkdir(parents=True)
    (work / "data" / "world").symlink_to(world, target_is_directory=True)
    return work


def _snapshot(work: Path) -> dict:
    """What must not change: the notebook's tables and text, the results rows, every run's metrics."""
    import nbformat

    nb = nbformat.read(str(work / "reports" / f"{NOTEBOOK}.ipynb"), as_version=4)
    outputs = [o["data"].get(k) for c in nb.cells if c.cell_type == "code" for o in c.outputs if "data" in o
               for k in ("text/plain", "text/markdown") if k in o["data"]]
    rows = pd.read_csv(work / "runs" / "results.csv")
    keys = ["dataset", "method", "seed", "base", "new", "hm", "epochs", "run_dir"]
    runs = {str(p.parent.relative_to(work)): json.loads(p.read_text())["metrics"]
            for p in (work / "runs").rglob("result.json")}
    return {"outputs": outputs, "rows": sorted(set(rows[keys].fillna("").itertuples(index=False, name=None))),
            "runs": runs, "index": (work / "reports" / "index.html").is_file()}


def _notes(out: str) -> dict[str, str]:
    return {m["method"]: m["note"] for m in JOB_LINE.finditer(out)}


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """One undisturbed report; the world it generated is shared by every other case."""
    from dpclab.backbones import embedded_checkpoint

    if not embedded_checkpoint().is_file():
        pytest.skip("the embedded checkpoint is not in this checkout")
    root = tmp_path_factory.mktemp("faults_report")
    world = root / "world"
    world.mkdir()
    ref = _project(root, "reference", world)
    t0 = time.perf_counter()
    out = _finish(_start(ref))
    print(f"reference report {time.perf_counter() - t0:.0f} s")
    assert _notes(out) == {"coop": "trained", "kgcoop": "trained"}, out
    return root, world, ref, _snapshot(ref)


def test_two_reports_at_once_after_every_kind_of_damage(reference):
    """Each file type the report reads back, damaged in one copy of the finished project; then two ``report`` s on
    it at once. Every damaged file is named and moved aside once, the run whose checkpoint is intact is resumed
    (nothing trained), the one whose checkpoint is damaged too is trained once, the other report reuses both."""
    root, world, ref, expected = reference
    work = root / "damaged"
    shutil.copytree(ref, work, symlinks=True)
    coop, kgcoop = (p.parent for p in sorted((work / "runs").rglob("result.json")))
    assert coop.parent.name == "coop" and kgcoop.parent.name == "kgcoop"
    damaged = {coop / "result.json": cut,  # resumed from its intact checkpoint (its last epoch: nothing trained)
               kgcoop / "model.pt": flip, kgcoop / "checkpoint.pt": cut,  # retrained
               work / "runs" / "results.csv": lambda p: p.write_bytes(p.read_bytes()[:-9]),  # last row cut
               work / "reports" / "timings.json": garble}
    caches = sorted((work / "data" / "cache").rglob("*.pt")) + sorted((work / "data" / "cache").rglob("*.json"))
    for i, path in enumerate(caches):
        damaged[path] = (cut, garble)[i % 2]
    for path, fault in damaged.items():
        fault(path)
    a, b = _start(work), _start(work)
    outs = [_finish(a), _finish(b)]
    for path in damaged:
        assert any(f"{path.relative_to(work)} is damaged" in out for out in outs), (path, outs)
        assert len(aside(path)) == 1 and path.is_file(), path
    notes = [_notes(out) for out in outs]
    assert sorted(n["coop"] for n in notes) == ["resumed from epoch 1", "reused"], outs
    assert sorted(n["kgcoop"] for n in notes) == ["reused", "trained"], outs
    assert _snapshot(work) == expected


def _finished(work: Path) -> set[str]:
    return {p.parent.parent.name for p in (work / "runs").rglob("result.json")}


def test_report_killed_at_four_points_then_run_again(reference):
    """kill -9 as the training starts, after its first run finished, as the notebook's kernel starts writing, and
    as the notebook ended (before index.html, provenance and timings); each time the report again: a run finished
    before a kill is never trained again, and the last report is the undisturbed one."""
    root, world, _, expected = reference
    work = _project(root, "killed", world)
    executed = work / "reports" / f"{NOTEBOOK}.ipynb"
    points = {"training starts": lambda out: "training the 2 runs" in out,
              "first run done": lambda out: bool(JOB_LINE.search(out)),
              "kernel started": lambda out: re.search(r"^train\s+ok", out, re.M) is not None and executed.is_file(),
              "notebook done": lambda out: re.search(rf"^{NOTEBOOK}\s+ok", out, re.M) is not None}
    finished: set[str] = set()
    for point, seen in points.items():
        out = _kill_when(work, seen)
        for method, note in _notes(out).items():
            assert method not in finished or note == "reused", (point, out)
        finished = _finished(work)
        if point == "first run done":
            assert finished, out
    out = _finish(_start(work))
    assert _notes(out) == {"coop": "reused", "kgcoop": "reused"}, out
    assert _snapshot(work) == expected
