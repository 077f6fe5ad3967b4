"""``python -m dpclab grid`` then ``python -m dpclab report`` with the same parameters, in a scratch folder: what the
grid trained, what the notebooks requested ($DPCLAB_REQUEST_LOG), and what the report trained (results.csv rows it
appended for runs with a run directory). Used by tests/test_notebooks.py (the quick suite, fp32) and
tests/test_plan.py (another precision)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parent.parent


@dataclass
class GridThenReport:
    results: dict  # notebook name -> report.NotebookResult
    grid_dirs: set  # run directories the grid trained or reused
    requested_dirs: set  # run directories the notebooks requested (zero-shot has none)
    requests: list  # every request: notebook, label, run_dir, reused
    trained_by_report: int  # results.csv rows with a run directory appended while the report ran
    grid_seconds: float
    report_seconds: float
    grid_output: str


def _trained_rows(results_csv: Path) -> int:
    if not results_csv.is_file():
        return 0
    rows = pd.read_csv(results_csv)
    return int(rows["run_dir"].fillna("").astype(str).str.len().gt(0).sum())


def grid_then_report(work: Path, params: dict, only: list[str] | None = None, workers: int = 2) -> GridThenReport:
    from dpclab.lab.report.run import run_report

    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
           "OMP_NUM_THREADS": "1"}
    argv = [sys.executable, "-m", "dpclab", "grid", "--quick", "--workers", str(workers), "--out", "grid.json"]
    argv += [a for k, v in params.items() for a in ("-p", k, str(v))] + (["--only", *only] if only else [])
    t0 = time.perf_counter()
    grid = subprocess.run(argv, cwd=work, env=env, capture_output=True, text=True, timeout=1800)
    grid_seconds = time.perf_counter() - t0
    assert grid.returncode == 0, grid.stdout + grid.stderr
    grid_dirs = {d["result"]["run_dir"] for d in json.loads((work / "grid.json").read_text())}
    before = _trained_rows(work / "runs" / "results.csv")
    log = work / "requests.jsonl"
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "DPCLAB_REQUEST_LOG")}
    os.environ.update(PYTHONPATH=env["PYTHONPATH"], DPCLAB_REQUEST_LOG=str(log))
    t0 = time.perf_counter()
    try:
        results = run_report(only=only, parameters=params, quick=True, notebook_dir=REPO / "notebooks",
                             out_dir=work / "reports", cwd=work)
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    report_seconds = time.perf_counter() - t0
    requests = [json.loads(line) for line in log.read_text().splitlines()] if log.is_file() else []
    return GridThenReport({r.name: r for r in results}, grid_dirs, {r["run_dir"] for r in requests if r["run_dir"]},
                          requests, _trained_rows(work / "runs" / "results.csv") - before, grid_seconds,
                          report_seconds, grid.stdout)
