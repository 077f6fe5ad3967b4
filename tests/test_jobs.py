"""dpclab.lab.jobs: every job ends with a line, a failure does not stop the others, the schedule, the CPU shares, the
feature-cache lock, and the SLURM path through submitit's local executor (job arrays, a failure, a time limit that
requeues a job which then resumes; a real training run requeued mid-training)."""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
import time
from pathlib import Path

import pytest

import job_fns
from dpclab.lab.jobs import Job, local_executor, makespan, run_jobs, slurm_executor, summary, waves

TESTS = Path(__file__).resolve().parent


def _chain() -> list[Job]:
    """ok, a failure, two jobs behind the failure (skipped), one more ok job listed after them."""
    return [Job("a", job_fns.add, (1, 2), label="a (1+2)"), Job("bad", job_fns.fail, ("no such dataset",)),
            Job("after-bad", job_fns.add, (0, 0), needs=("bad",)),
            Job("after-after", job_fns.add, (0, 0), needs=("after-bad",)),
            Job("c", job_fns.add, (3, 4), needs=("a",))]


def test_a_failure_is_reported_and_the_rest_go_on():
    lines: list[str] = []
    records = run_jobs(_chain(), None, log=lines.append)
    status = {r.key: r.status for r in records}
    assert status == {"a": "ok", "bad": "failed", "after-bad": "skipped", "after-after": "skipped", "c": "ok"}
    by = {r.key: r for r in records}
    assert by["c"].result["sum"] == 7 and by["bad"].error == "ValueError: no such dataset"
    assert "Traceback" in by["bad"].detail and by["bad"].worker == f"pid {os.getpid()}"
    assert len(lines) == 5 and lines[0].startswith("[1/5] ok      a (1+2)  worker pid ")
    assert any(line.startswith("[2/5] failed  bad  worker") and "ValueError: no such dataset" in line
               for line in lines)
    assert "skipped after-bad  (needs bad, which failed)" in "\n".join(lines)
    assert "after-after  (needs after-bad, which was skipped)" in "\n".join(lines)
    text = summary(records)
    assert text[0] == "5 jobs: 2 ok, 1 failed, 2 skipped"
    assert text[1] == "  failed:  bad: ValueError: no such dataset" and len(text) == 4


def test_plan_checks_waves_and_makespan():
    jobs = [Job("a", job_fns.add), Job("b", job_fns.add), Job("c", job_fns.add, needs=("a",)),
            Job("d", job_fns.add, needs=("c", "b"))]
    assert [[j.key for j in w] for w in waves(jobs)] == [["a", "b"], ["c"], ["d"]]
    secs = {"a": 10, "b": 4, "c": 5, "d": 1}
    assert makespan(jobs, secs, 1) == 20
    assert makespan(jobs, secs, 2) == 16  # a || b, then c after a (10-15), d after c (15-16)
    assert makespan(jobs, secs, 8) == 16
    with pytest.raises(ValueError, match="needs \\['x'\\]"):
        run_jobs([Job("a", job_fns.add, needs=("x",))])
    with pytest.raises(ValueError, match="cycle"):
        waves([Job("a", job_fns.add, needs=("b",)), Job("b", job_fns.add, needs=("a",))])
    with pytest.raises(ValueError, match="unique"):
        waves([Job("a", job_fns.add), Job("a", job_fns.add)])


def test_local_pool_lines_come_as_jobs_finish_and_a_dead_worker_is_survived():
    """Lines come as jobs end (the fast one is not held back by the slow one). A job whose worker process dies takes
    its pool down: the jobs lost with it are run again one at a time on a fresh pool, so only the culprit fails."""
    lines: list[str] = []
    jobs = [Job("slow", job_fns.sleep_then, (1.5, "slow")), Job("fast", job_fns.sleep_then, (0.0, "fast")),
            Job("crash", job_fns.crash, needs=("fast",)), Job("after-crash", job_fns.add, (1, 1), needs=("crash",)),
            Job("after-slow", job_fns.add, (2, 2), needs=("slow",))]
    with local_executor(2, start_method="fork" if "fork" in mp.get_all_start_methods() else None) as pool:
        records = run_jobs(jobs, pool, log=lines.append, poll_s=0.05)
    by = {r.key: r for r in records}
    assert lines[0].startswith("[1/5] ok      fast  worker cpu ")
    assert [by[k].status for k in ("slow", "fast", "crash", "after-crash", "after-slow")] == \
        ["ok", "ok", "failed", "skipped", "ok"], lines
    assert "BrokenProcessPool" in by["crash"].error and "again when it ran alone" in by["crash"].error
    assert by["after-slow"].result["sum"] == 4 and len(lines) == 5


def test_loader_workers_come_from_the_allocated_cpus(monkeypatch):
    from dpclab.data.features import allocated_cpus, default_num_workers

    monkeypatch.delenv("DPCLAB_CPUS", raising=False)
    monkeypatch.delenv("SLURM_CPUS_PER_TASK", raising=False)
    if hasattr(os, "sched_getaffinity"):
        assert allocated_cpus() == len(os.sched_getaffinity(0))
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "1")  # one SLURM CPU on a big node: no loader workers
    assert allocated_cpus() == 1 and default_num_workers(224) == 0
    monkeypatch.setenv("DPCLAB_CPUS", "4")  # a pool worker's share
    assert allocated_cpus() == 4 and default_num_workers(224) == 3
    monkeypatch.delenv("DPCLAB_CPUS")
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    with local_executor(2, start_method="fork" if "fork" in mp.get_all_start_methods() else None) as pool:
        (rec,) = run_jobs([Job("share", job_fns.loader_share)], pool, log=None, poll_s=0.05)
    share = max(1, allocated_cpus() // 2)
    assert rec.result == {"cpus": share, "loader_workers": default_num_workers(224, share), "env": str(share)}


# ------------------------------------------------------------------------------------ feature-cache lock
class CountingEncoder:
    """Writes a line per batch it encodes (slowly, so that two processes overlap)."""

    def __init__(self, log: str):
        self.log = log

    def encode_image(self, x):
        import torch

        with open(self.log, "a") as f:
            f.write(f"{os.getpid()}\n")
        time.sleep(1.0)
        return torch.ones(len(x), 4)


def _encode_once(root: str, cache: str, log: str, out: str, barrier) -> None:
    import torch

    from dpclab.data.coop import load_dataset
    from dpclab.data.features import build_transforms, cached_features

    items = load_dataset(root, "eurosat").train[:8]
    tf = build_transforms(32, (0.5,) * 3, (0.25,) * 3)["train"]
    barrier.wait()
    feats = cached_features(CountingEncoder(log), "bb", items, tf, "train", "cpu", cache, view=3, seed=1)
    torch.save(feats, out)


def test_two_processes_encode_a_cache_entry_once(json_root, tmp_path):
    import torch

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    barrier = ctx.Barrier(2)
    log = tmp_path / "encoded.txt"
    procs = [ctx.Process(target=_encode_once, args=(str(json_root), str(tmp_path / "cache"), str(log),
                                                     str(tmp_path / f"out{i}.pt"), barrier)) for i in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0]
    assert len(log.read_text().split()) == 1  # one batch of 8, encoded by one of the two processes
    a, b = (torch.load(tmp_path / f"out{i}.pt") for i in range(2))
    assert torch.equal(a, b)


# ------------------------------------------------------------------------------------ SLURM via submitit (local)
@pytest.fixture
def submitit_env(monkeypatch):
    import submitit  # noqa: F401 - in the dev extra: this test is never skipped
    # the local executor's job processes import job_fns (and dpclab) by name
    paths = [str(TESTS), str(TESTS.parent), os.environ.get("PYTHONPATH", "")]
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in paths if p))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")


def _train_cfg(root: Path, tmp: Path):
    from dpclab.runconfig import RunConfig

    return RunConfig.of(method="coop", dataset="eurosat", data_root=str(root), model="dpclab-tiny",
                     pretrained="embedded", shots=2, seed=1, device="cpu", cache_dir=str(tmp / "cache"),
                     runs_dir=str(tmp / "runs"), results=None, train={"epochs": 2}, progress=False)


def test_submitit_arrays_a_failure_and_a_training_run_requeued_mid_training(submitit_env, json_root, tmp_path):
    """Through submitit's local executor (what SLURM runs, on this machine): the ready jobs go as one array, a failed
    job is listed and its dependant skipped while the rest finish; a real training run gets the time-limit signal
    in its second epoch, is requeued, and resumes from its epoch checkpoint."""
    from dpclab.pipeline import run

    ex = slurm_executor(tmp_path / "slurm", cluster="local", timeout=10, cpus=1, mem_gb=2)
    cfg = _train_cfg(json_root, tmp_path)
    jobs = _chain()[:3] + [Job("train", job_fns.train_until_signalled, (cfg, str(tmp_path / "marker")),
                               label="06 eurosat coop seed 1")]
    lines: list[str] = []
    records = run_jobs(jobs, ex, log=lines.append, poll_s=0.2)
    by = {r.key: r for r in records}
    assert [by[k].status for k in ("a", "bad", "after-bad", "train")] == ["ok", "failed", "skipped", "ok"], lines
    assert by["bad"].error == "ValueError: no such dataset" and by["a"].worker.startswith("local ")
    train = by["train"]
    assert train.requeued == 1 and train.result["note"] == "resumed from epoch 1", lines
    assert "(requeued 1x)" in lines[-1] and "resumed from epoch 1" in lines[-1]
    # the device the job really ran on, in its line and result; its own start-up lines in its log
    assert train.result["device"] == "cpu" and " on cpu " in lines[-1]
    log = (tmp_path / "slurm" / f"{train.worker.split()[-1]}_0_log.out").read_text()
    assert "asked for device cpu" in log and "device: CPU (" in log and "image loader workers: " in log
    # the resumed run equals an uninterrupted one
    whole = run(cfg.replace(runs_dir=str(tmp_path / "whole"), cache_dir=str(tmp_path / "cache2")))
    assert train.result["metrics"] == whole.metrics


def test_submitit_time_limit_requeues_and_the_job_resumes(submitit_env, tmp_path):
    """A job that reaches its (real, 12-second) time limit: submitit's signal, checkpoint, requeue; the second attempt
    resumes from the job's own state and finishes. Non-checkpointed work would be lost, so the count says it
    resumed."""
    ex = slurm_executor(tmp_path / "slurm", cluster="local", timeout_min=0.2, signal_delay_s=4)
    state = tmp_path / "state.json"
    (rec,) = run_jobs([Job("steps", job_fns.resumable_steps, (str(state), 5))], ex, log=None, poll_s=0.2)
    assert rec.ok, (rec.error, rec.detail)
    assert rec.requeued >= 1 and rec.result == {"resumed_from": 2, "done": 5}


def test_slurm_gets_one_array_with_the_resources_asked_for(tmp_path, monkeypatch):
    """The SLURM executor (stand-in ``sbatch``/``srun`` on PATH; sbatch records what it is given): three ready runs are one
    ``sbatch`` of a 3-task array with the CPUs, memory, time limit, partition and the time-limit signal (requeue)
    from the command line's ``key=value`` options."""
    import submitit  # noqa: F401

    from dpclab.lab.cli import parse_options
    from dpclab.lab.jobs import _Backend

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls.txt"
    sbatch = bin_dir / "sbatch"
    sbatch.write_text(f"#!/bin/sh\ncat \"$1\" >> {calls}\necho '----' >> {calls}\necho 'Submitted batch job 4242'\n")
    sbatch.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit looks for it to know it is on a cluster
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    opts = parse_options(["cpus=6", "mem_gb=24", "timeout=90", "partition=gpu", "parallel=2"], "--slurm")
    ex = slurm_executor(tmp_path / "slurm", cluster="slurm", **opts)
    handles = _Backend(ex).start([Job(k, job_fns.add, (1, 1)) for k in "abc"])
    assert [h.job_id for h in handles] == ["4242_0", "4242_1", "4242_2"]
    text = calls.read_text()
    assert text.count("----") == 1  # one sbatch for the three runs
    for line in ("#SBATCH --array=0-2%2", "#SBATCH --cpus-per-task=6", "#SBATCH --mem=24GB", "#SBATCH --time=90",
                 "#SBATCH --partition=gpu", "#SBATCH --gpus-per-node=1", "#SBATCH --signal=USR2@"):
        assert line in text, (line, text)


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGUSR2"), reason="no SIGUSR2 on this platform")
def test_loader_workers_outlive_the_time_limit_signal():
    """SLURM signals every process of the job step; the loader workers ignore it (the main process requeues)."""
    from torch.utils.data import DataLoader

    from dpclab.data.features import loader_options

    loader = DataLoader(job_fns.SignalledDataset(), batch_size=2, **loader_options(1, "cpu"))
    assert [b.tolist() for b in loader] == [[0, 1], [2, 3]]


def test_slurm_without_a_cluster_says_so(tmp_path, monkeypatch):
    import shutil

    if shutil.which("srun"):
        pytest.skip("this machine is a SLURM node")
    with pytest.raises(RuntimeError, match="needs a SLURM cluster.*--workers N or --gpus"):
        slurm_executor(tmp_path / "slurm", cpus=2)


def test_gpu_workers_each_see_their_own_gpu_and_a_cpu_share():
    """``--gpus 5 7``: two spawned workers, named by their GPU, each seeing only it (CUDA_VISIBLE_DEVICES set before
    anything touches CUDA), each with half the allocated CPUs for its loaders."""
    from dpclab.data.features import allocated_cpus

    jobs = [Job(str(i), job_fns.environment, ("CUDA_VISIBLE_DEVICES", "DPCLAB_CPUS")) for i in range(4)]
    with local_executor(1, gpus=[5, 7]) as pool:
        records = run_jobs(jobs, pool, log=None, poll_s=0.05)
    assert all(r.ok for r in records)
    assert {r.worker for r in records} <= {"gpu 5", "gpu 7"}
    for r in records:
        assert r.worker == f"gpu {r.result['CUDA_VISIBLE_DEVICES']}"
        assert r.result["DPCLAB_CPUS"] == str(max(1, allocated_cpus() // 2))


# ------------------------------------------------------------------------------------ no fork after CUDA
def test_no_pool_forks_once_cuda_may_be_used(monkeypatch, tmp_path):
    """CUDA initialised here (simulated: ``startup_lines`` named the GPU), or a device that is not plainly the CPU:
    every pool spawns its workers -- ``grid --workers N``, ``report --jobs N`` (report/command.py) and a bare
    ``local_executor``; a pool asked to fork is refused. Plain CPU work keeps the platform default."""
    import torch

    from dpclab.lab import grid as grid_module
    from dpclab.lab import jobs
    from dpclab.lab.report import command as report_train

    monkeypatch.chdir(tmp_path)
    default = mp.get_context().get_start_method()
    with local_executor(2, device="cpu") as pool:
        assert pool.start_method == default
    with local_executor(2, device="cuda") as pool:  # the jobs' device: spawn even before CUDA is touched here
        assert pool.start_method == "spawn"
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    with pytest.raises(ValueError, match="cannot fork once CUDA may be used"):
        local_executor(2, start_method="fork")
    started = []

    class Recording(jobs.LocalPool):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            started.append(self.start_method)

    monkeypatch.setattr(jobs, "LocalPool", Recording)
    for module in (report_train, grid_module):  # where the drivers read them (imported at their tops)
        monkeypatch.setattr(module, "run_jobs", lambda job_list, executor, **kw: [])  # the pools only, no training
        monkeypatch.setattr(module, "ensure_world", lambda *a, **k: None)
    for device in ("cpu", "auto"):
        report_train.train_plan({"quick": True, "device": device}, ["06_paper_numbers"], workers=2, log=lambda s: None)
    assert grid_module.main(["--quick", "--only", "06", "--workers", "2", "-p", "device", "cpu", "--no-preflight"]) == 0
    assert started == ["spawn"] * 3, started
    assert "fork" not in started


def test_one_driver_per_grid_state(tmp_path):
    """A second driver on the same runs folder would submit the running jobs again: refused in one line."""
    from dpclab.lab.jobs import GridState

    state = GridState(tmp_path / "runs" / "grid-state.json")
    with state.driving():
        with pytest.raises(RuntimeError, match=f"another grid driver is running on {tmp_path / 'runs'} \\(host "):
            with GridState(state.path).driving():
                pass
    with GridState(state.path).driving():  # released with its driver
        pass
