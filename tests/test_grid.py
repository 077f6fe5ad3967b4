"""The report's runs spread over worker processes: two workers give exactly one worker's results, every run is
trained once, and a second pass reuses them all."""

from __future__ import annotations

import pytest
import torch

from dpclab.lab.jobs import local_executor, run_jobs
from dpclab.lab.plan import PlannedRun
from dpclab.lab.trainjobs import grid_jobs
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
    import pandas as pd  # the results row and the job's result carry the device the run really ran on

    assert res["device"] == "cpu" and list(pd.read_csv(tmp_path / "runs" / "results.csv")["device"]) == ["cpu"]


def test_grid_command_lists_failures_and_exits_non_zero(tmp_path, capsys, monkeypatch):
    """Every run fails (no dataset under the data root): each gets its line, DPC's runs are skipped behind their
    failed step 1, the closing lines list them all, and the exit status is 1."""
    import re

    from dpclab.lab.grid import main

    monkeypatch.chdir(tmp_path)  # runs/ and data/cache/ land here
    (tmp_path / "empty").mkdir()
    code = main(["--datasets", "eurosat", "--seeds", "1", "--epochs", "1", "--pretrained", "random",
                 "--device", "cpu", "--data-root", str(tmp_path / "empty"), "--no-preflight"])
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


# ------------------------------------------------------------------------------------ the cluster path (issue 26)
TESTS = __import__("pathlib").Path(__file__).resolve().parent


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A stand-in ``sbatch`` (records every call, answers job 4242) and ``srun`` on PATH: what reaches SLURM."""
    import os

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls.txt"
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncat \"$1\" >> {calls}\necho 'Submitted batch job 4242'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


@pytest.fixture
def job_env(monkeypatch):
    """submitit's local executor runs each job in a fresh Python that imports job_fns and dpclab by name."""
    import os

    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _grid_args(root, *more) -> list[str]:
    return ["--datasets", "eurosat", "--seeds", "1", "--epochs", "1", "--data-root", str(root), *more]


def test_preflight_refuses_an_empty_data_root_and_a_tag_without_local_copy_before_any_submission(
        fake_slurm, json_root, tmp_path, monkeypatch):
    """``grid --slurm``: an empty data root, then weights given as a tag with no local copy (the jobs would download
    them on nodes without internet) are refused in one line naming the fix; ``sbatch`` is never called."""
    from dpclab.lab.grid import main
    from dpclab.lab.preflight import PreflightError

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hf"))  # empty caches: no local copy of any tag
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(PreflightError) as err:
        main(_grid_args(tmp_path / "empty", "--pretrained", "random", "--slurm", "partition=gpu"))
    msg = str(err.value)
    assert "\n" not in msg and "not readable from the data root" in msg and "eurosat" in msg
    assert "-p data_root" in msg and "nothing was started" in msg
    with pytest.raises(PreflightError) as err:
        main(_grid_args(json_root, "--model", "ViT-B-16", "--pretrained", "openai", "--slurm", "partition=gpu"))
    msg = str(err.value)
    assert "\n" not in msg and "weights ViT-B-16/openai have no local copy" in msg and "--allow-download" in msg
    assert not fake_slurm.exists()  # no sbatch call at all


def test_a_tag_resolves_to_its_local_file_handed_to_the_jobs(tmp_path, monkeypatch):
    """A tag with a copy in open_clip's Hugging Face cache resolves to that file on the submitting host; the jobs get
    the file (with_weights), load it without a download and keep the tag's weights id (same run keys); with
    ``--allow-download`` a tag without copy is let through to the jobs."""
    import json

    from dpclab.backbones import WEIGHTS_FILES_ENV, _resolve_pretrained, cached_weights
    from dpclab.lab.jobs import Job
    from dpclab.lab.preflight import PreflightError, resolve_weights
    from dpclab.lab.trainjobs import train_run, with_weights

    hf = tmp_path / "hf"
    monkeypatch.setenv("HF_HUB_CACHE", str(hf))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv(WEIGHTS_FILES_ENV, raising=False)
    assert cached_weights("ViT-B-16", "openai") is None
    with pytest.raises(PreflightError):
        resolve_weights([("ViT-B-16", "openai")], remote=True)
    files, lines = resolve_weights([("ViT-B-16", "openai")], remote=True, allow_download=True)
    assert files == {} and "the jobs download it" in lines[0]
    repo = hf / "models--timm--vit_base_patch16_clip_224.openai"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("abc123")
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    weights = repo / "snapshots" / "abc123" / "open_clip_model.safetensors"
    weights.write_bytes(b"not loaded here")
    files, lines = resolve_weights([("ViT-B-16", "openai"), ("dpclab-tiny", "embedded")], remote=True)
    assert files == {"ViT-B-16/openai": str(weights)} and "handed to the jobs" in lines[0]
    (job,) = with_weights([Job("k", train_run, ("cfg", False, None))], files)
    assert job.args == ("cfg", False, None, files)
    got = _resolve_pretrained("ViT-B-16", "openai")
    assert (got.source, got.weights_id, got.quick_gelu) == (str(weights), "openai", True)
    weights.unlink()  # a job on a node: the file it was handed wins over its own (empty) cache
    monkeypatch.setenv(WEIGHTS_FILES_ENV, json.dumps({"ViT-B-16/openai": str(tmp_path / "gone.bin")}))
    with pytest.raises(FileNotFoundError, match="not readable here"):
        _resolve_pretrained("ViT-B-16", "openai")


def test_slurm_device_cuda_is_the_jobs_device_on_this_cpu_host(json_root, tmp_path, monkeypatch, capsys, job_env):
    """``-p device cuda --slurm`` on a host without a GPU: accepted; the start-up lines give the jobs' device and
    request (partition, GPUs, CPUs, loader workers from cpus=8) and this host; each job (submitit's local executor
    here, no GPU) writes its own start-up lines to its log and fails, in one line, on the device it really got."""
    from dpclab.lab.grid import main

    monkeypatch.chdir(tmp_path)
    code = main(_grid_args(json_root, "--only", "01", "--model", "ViT-B-16", "--pretrained", "random", "-p", "device",
                           "cuda", "--slurm", "cluster=local", "cpus=8", "partition=gpu", "timeout=5",
                           "--slurm-folder", str(tmp_path / "slurm")))
    out = capsys.readouterr().out
    assert "device: cuda on the jobs' nodes (not checked on this host" in out
    assert "jobs: SLURM job arrays on gpu, each 1 GPU(s), 8 CPUs" in out and "this host: " in out
    assert "image loader workers: 7 per process" in out  # min(8, cpus - 1) for 224-px inputs, from cpus=8
    assert code == 1 and out.count("torch sees no CUDA GPU") >= 2, out
    logs = [f.read_text() for f in (tmp_path / "slurm").glob("*_log.out")]
    assert len(logs) == 2 and all("job local " in log and " on host " in log for log in logs), logs


def test_a_refused_second_wave_keeps_wave_one_and_a_rerun_submits_only_what_is_missing(
        json_root, tmp_path, monkeypatch, capsys, job_env):
    """The second wave's submission is refused (QOS) on every try: wave 1's records stay (state file, lines), the
    refused job fails in one line, exit 1. Run again: wave 1 is taken from the grid state, only the missing job is
    submitted."""
    import json

    import job_fns
    import submitit

    import dpclab.lab.grid as grid
    from dpclab.lab import jobs as jobs_mod
    from dpclab.lab.jobs import Job

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(jobs_mod, "SUBMIT_RETRIES", (0.0, 0.0))
    monkeypatch.setattr(grid, "grid_jobs", lambda plan, src, threads: [
        Job("a", job_fns.add, (1, 2), label="run a"), Job("b", job_fns.add, (2, 3), label="run b"),
        Job("c", job_fns.add, (3, 4), needs=("a",), label="run c")])
    real = submitit.LocalExecutor._internal_process_submissions
    submitted: list[int] = []
    refuse = {"from": 2}

    def submissions(self, delayed):
        submitted.append(len(delayed))
        if len(submitted) >= refuse["from"]:
            raise RuntimeError("sbatch: error: QOSMaxSubmitJobPerUserLimit")
        return real(self, delayed)

    monkeypatch.setattr(submitit.LocalExecutor, "_internal_process_submissions", submissions)
    # the driver is under test, not the pre-flight (06's PromptKD plans a ViT-L/14 teacher, whose weights are not here)
    argv = _grid_args(json_root, "--pretrained", "random", "--device", "cpu", "--slurm", "cluster=local", "timeout=5",
                      "--slurm-folder", str(tmp_path / "slurm"), "--no-preflight")
    assert grid.main(argv) == 1
    out = capsys.readouterr().out
    assert submitted == [2, 1, 1, 1]  # wave 1 (a, b); wave 2 (c): refused, tried again twice, given up
    assert out.count("trying again in 0 s") == 2 and "giving up on them" in out
    assert "failed  run c" in out and "not submitted: RuntimeError: sbatch: error: QOSMaxSubmitJobPerUserLimit" in out
    state = json.loads((tmp_path / "runs" / "grid-state.json").read_text())["jobs"]
    assert {k: v["status"] for k, v in state.items()} == {"a": "ok", "b": "ok", "c": "failed"}
    assert state["a"]["result"]["sum"] == 3 and state["a"]["job_id"]
    submitted.clear()
    refuse["from"] = 99
    assert grid.main(argv) == 0
    out = capsys.readouterr().out
    assert submitted == [1]  # c only
    assert out.count("finished earlier (grid state)") == 2 and "3 jobs: 3 ok, 0 failed, 0 skipped" in out
    state = json.loads((tmp_path / "runs" / "grid-state.json").read_text())["jobs"]
    assert state["c"]["status"] == "ok" and state["c"]["result"]["sum"] == 7


def test_a_rerun_reattaches_to_slurm_jobs_still_running(fake_slurm, tmp_path):
    """A driver died (logout) with job 4242_1 queued: run again on the same state it re-attaches to it (never
    submits it twice), takes its result when SLURM has run it, and reuses the job finished before."""
    import job_fns
    from submitit.core.utils import cloudpickle_dump

    from dpclab.lab.jobs import GridState, Job, run_jobs, slurm_executor

    folder = tmp_path / "slurm"
    folder.mkdir()
    state = GridState(tmp_path / "runs" / "grid-state.json")
    jobs = [Job("a", job_fns.add, (1, 2), label="run a"), Job("b", job_fns.add, (2, 3), label="run b")]
    state.jobs = {"a": {"label": "run a", "status": "ok", "result": {"sum": 3}, "worker": "slurm 4241_0"},
                  "b": {"label": "run b", "status": "submitted", "job_id": "4242_1", "folder": str(folder)}}
    state.save()
    # the job finishes on SLURM while no driver runs
    cloudpickle_dump(("success", {"ok": True, "result": {"sum": 5}, "worker": "slurm 4242_1", "seconds": 2.0,
                                  "requeued": 0}), folder / "4242_1_0_result.pkl")
    lines: list[str] = []
    ex = slurm_executor(folder, cluster="slurm", cpus=2)
    records = run_jobs(jobs, ex, log=lines.append, poll_s=0.05, state=GridState(state.path))
    assert [r.status for r in records] == ["ok", "ok"] and records[1].result == {"sum": 5}
    assert "re-attached to SLURM job 4242_1: run b" in lines and not fake_slurm.exists()
    assert GridState(state.path).jobs["b"]["status"] == "ok"
