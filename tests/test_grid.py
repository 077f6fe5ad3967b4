"""The report's runs spread over worker processes: two workers give exactly one worker's results, every run is
trained once, and a second pass reuses them all."""

from __future__ import annotations

import torch

from dpclab.lab.jobs import local_executor, run_jobs
from dpclab.lab.plan import PlannedRun, grid_jobs
from dpclab.source import Source

ONE_EPOCH = (("epochs", 1),)


def run_grid(plan, src, executor=None) -> list[dict]:
    """The plan's trained runs through dpclab.lab.jobs; every one must finish. One dict per run (result + worker)."""
    records = run_jobs(grid_jobs(plan, src, threads=1), executor, log=None, poll_s=0.2)
    assert all(r.ok for r in records), [r.error for r in records]
    return [{**r.result, "worker": r.worker, "label": r.label} for r in records]


def _source(root, runs) -> Source:
    return Source(data_root=str(root), shots=4, device="cpu", cache_dir=str(runs / "cache"), runs_dir=str(runs),
                  results=str(runs / "results.csv"))


def _run(method: str, seed: int) -> PlannedRun:
    two_step = method.endswith("+dpc")
    return PlannedRun("06", "eurosat", method, seed, train=ONE_EPOCH if method != "zeroshot" else (),
                      base_train=ONE_EPOCH if two_step else ())


def test_two_workers_equal_one_worker_and_nothing_runs_twice(json_root, tmp_path):
    plan = [_run("coop", 1), _run("coop", 2), _run("coop+dpc", 1), _run("zeroshot", 1)]
    one = run_grid(plan, _source(json_root, tmp_path / "one"), None)
    with local_executor(2) as pool:
        two = run_grid(plan, _source(json_root, tmp_path / "two"), pool)
    again = run_grid(plan, _source(json_root, tmp_path / "two"), None)
    key = lambda d: d["label"]  # noqa: E731
    # zero-shot has nothing to train or store: not a job
    assert sorted(map(key, one)) == sorted(map(key, two)) == ["06 eurosat coop seed 1", "06 eurosat coop seed 2",
                                                            "06 eurosat coop+dpc seed 1"]
    assert len({d["worker"] for d in two}) == 2  # both workers took jobs
    assert not any(d["reused"] for d in one + two)  # each run trained once: DPC's step 1 came from wave 1
    assert all(d["reused"] for d in again)
    by_one = {key(d): d for d in one}
    for d in two:
        assert d["metrics"] == by_one[key(d)]["metrics"]
        a = torch.load(f"{d['run_dir']}/model.pt", weights_only=True)["state"]
        b = torch.load(f"{by_one[key(d)]['run_dir']}/model.pt", weights_only=True)["state"]
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_submitit_executor_runs_the_same_jobs(json_root, tmp_path):
    """The cluster path goes through submitit (its in-process 'debug' cluster here; SLURM on a cluster)."""
    from dpclab.lab.jobs import slurm_executor

    plan = [_run("coop", 1)]
    ex = slurm_executor(tmp_path / "logs", cluster="debug", timeout_min=5)
    (res,) = run_grid(plan, _source(json_root, tmp_path / "runs"), ex)
    (local,) = run_grid(plan, _source(json_root, tmp_path / "local"), None)
    assert not res["reused"] and res["metrics"] == local["metrics"]


def test_grid_command_lists_failures_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    """Every run fails (no dataset under the data root): each gets its line, DPC's runs are skipped behind their
    failed step 1, the closing lines list them all, and the exit status is 1."""
    import re

    from dpclab.lab.grid import main

    monkeypatch.chdir(tmp_path)  # runs/ and data/cache/ land here
    (tmp_path / "empty").mkdir()
    code = main(["--datasets", "eurosat", "--seeds", "1", "--epochs", "1", "--pretrained", "random",
                 "--device", "cpu", "--data-root", str(tmp_path / "empty")])
    out = capsys.readouterr().out
    assert code == 1
    lines = [line for line in out.splitlines() if re.match(r"\[ *\d+/\d+\] ", line)]
    assert lines and all(" failed " in line or " skipped " in line for line in lines), out
    (counts,) = re.findall(r"(\d+) jobs: 0 ok, (\d+) failed, (\d+) skipped", out)
    assert int(counts[0]) == len(lines) == int(counts[1]) + int(counts[2]) and int(counts[2]) > 0
    failed = [line for line in out.splitlines() if line.startswith("  failed:  ")]
    skipped = [line for line in out.splitlines() if line.startswith("  skipped: ")]
    assert len(failed) == int(counts[1]) and all("DatasetError: Dataset folder for 'eurosat' not found" in f
                                                  for f in failed)
    assert len(skipped) == int(counts[2]) and any("coop+dpc" in x and "which failed" in x for x in skipped)
