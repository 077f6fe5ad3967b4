"""Run a list of jobs to the end, here or on a cluster: the executor behind ``python -m dpclab grid``.

A :class:`Job` is one call (a module-level function and its arguments, so it can be pickled) with the jobs it
``needs`` (DPC's step 2 needs the run that trains its step 1). :func:`run_jobs` starts each job as soon as the jobs
it needs have finished, and:

* prints one line per job as it finishes (its label with its options, the worker, the seconds, ok / failed and
  what it did: trained, reused, resumed from epoch k, requeued);
* goes on after a failure: the failed job is reported, the jobs that need it are skipped (and listed), every other
  job still runs; the records say which is which, and :func:`summary` gives the closing lines, so the caller can
  exit non-zero at the end with the list;
* runs them on one of three executors:

  - ``None``: in this process, one after another;
  - :func:`local_executor`: a process pool, ``workers`` CPU processes or one process per GPU
    (``CUDA_VISIBLE_DEVICES`` set per worker), the machine's allocated CPUs shared among them for image loading;
  - :func:`slurm_executor`: submitit (``pip install -e ".[cluster]"``); the jobs that are ready together go to
    SLURM as one job array, with the CPUs, memory, time limit and partition given on the command line. A job
    that reaches its time limit is requeued (submitit's checkpointing: :class:`Attempt` is checkpointable) and a
    training run then resumes from its last epoch checkpoint (``dpclab.train.fit``).

A driver that lives for days on a login node survives: a refused submission is retried with backoff
(:data:`SUBMIT_RETRIES`), then recorded as failed while the rest goes on; with a :class:`GridState` file every
submission and end is written as it happens, and the same driver run again re-attaches to the SLURM jobs still
running, reuses the finished ones and submits only the rest. Pools never fork once CUDA may be used
(:func:`pool_start_method`).

Training runs become jobs in :mod:`dpclab.lab.trainjobs` (one :func:`~dpclab.lab.trainjobs.train_run` per
:class:`~dpclab.runconfig.RunConfig`); this module knows jobs only. The dependency waves (:func:`waves`), the start
order (:func:`needed_first`) and :func:`makespan` (the wall time of the same schedule on N workers, for the cost
estimate) read the same ``needs``.
"""

from __future__ import annotations

import contextlib
import heapq
import multiprocessing as mp
import os
import sys
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Sequence

from dpclab.cpus import CPUS_ENV, allocated_cpus

#: environment variable naming a pool worker in the per-job lines ("gpu 0", "cpu 1")
WORKER_ENV = "DPCLAB_WORKER"


@dataclass(frozen=True)
class Job:
    """One call of ``fn(*args)`` (both picklable), after the jobs whose keys are in ``needs``."""

    key: str
    fn: Callable[..., dict]
    args: tuple = ()
    needs: tuple[str, ...] = ()
    #: what the per-job line calls it (default: the key)
    label: str = ""

    @property
    def title(self) -> str:
        return self.label or self.key


@dataclass
class JobRecord:
    """How a job ended. ``status``: ok | failed | skipped (a job it needs did not finish)."""

    key: str
    label: str
    status: str
    seconds: float = 0.0
    worker: str = ""
    #: what the job's function returned (ok only)
    result: dict | None = None
    #: failed: the exception in one line; skipped: the job it needed that failed
    error: str = ""
    #: failed: the traceback, for the log file
    detail: str = ""
    #: times the job was requeued after reaching its time limit (SLURM)
    requeued: int = 0

    @property
    def ok(self) -> bool:
        return self.status == "ok"


# ------------------------------------------------------------------------------------------------ the plan
def check_jobs(jobs: Sequence[Job]) -> None:
    """Unique keys, and every ``needs`` names a job of the list."""
    keys = [j.key for j in jobs]
    dup = sorted({k for k in keys if keys.count(k) > 1})
    if dup:
        raise ValueError(f"Job keys must be unique; repeated: {dup[:5]}.")
    known = set(keys)
    for j in jobs:
        missing = [k for k in j.needs if k not in known]
        if missing:
            raise ValueError(f"Job {j.key!r} needs {missing}, which are not in the job list.")


def waves(jobs: Sequence[Job]) -> list[list[Job]]:
    """The jobs in dependency levels: [jobs that need nothing, jobs that need only the first level, ...]."""
    check_jobs(jobs)
    level: dict[str, int] = {}
    remaining = list(jobs)
    while remaining:
        ready = [j for j in remaining if all(k in level for k in j.needs)]
        if not ready:
            raise ValueError(f"The jobs' needs form a cycle: {[j.key for j in remaining][:5]}.")
        for j in ready:
            level[j.key] = 1 + max((level[k] for k in j.needs), default=-1)
        remaining = [j for j in remaining if j.key not in level]
    out: list[list[Job]] = [[] for _ in range(1 + max(level.values(), default=-1))]
    for j in jobs:
        out[level[j.key]].append(j)
    return out


def makespan(jobs: Sequence[Job], seconds: dict[str, float], workers: int) -> float:
    """Wall time of :func:`run_jobs`'s schedule on ``workers`` identical workers, each job taking ``seconds[key]``:
    jobs start in list order as soon as a worker is free and the jobs they need have finished."""
    check_jobs(jobs)
    if workers < 1:
        raise ValueError(f"workers must be >= 1, not {workers}")
    free = [0.0] * workers  # when each worker is next free (a heap)
    end: dict[str, float] = {}
    for wave in waves(jobs):
        for j in sorted(wave, key=lambda j: max((end[k] for k in j.needs), default=0.0)):
            ready = max((end[k] for k in j.needs), default=0.0)
            start = max(heapq.heappop(free), ready)
            end[j.key] = start + float(seconds[j.key])
            heapq.heappush(free, end[j.key])
    return max(end.values(), default=0.0)


# ------------------------------------------------------------------------------------------------ one attempt
def worker_name() -> str:
    """Who runs this: the pool worker's name, the SLURM job (array task) id, or the process id."""
    if os.environ.get(WORKER_ENV):
        return os.environ[WORKER_ENV]
    if os.environ.get("SUBMITIT_EXECUTOR"):
        try:
            import submitit

            return f"{os.environ['SUBMITIT_EXECUTOR']} {submitit.JobEnvironment().job_id}"
        except Exception:  # noqa: BLE001 - not inside a submitit job after all
            pass
    return f"pid {os.getpid()}"


class Attempt:
    """``fn(*args)`` as a job runs it: the outcome as a dict (a failure is data, not an exception in the pool).

    Checkpointable for submitit: when SLURM signals the time limit, :meth:`checkpoint` resubmits the same call
    (counting the requeues); a training run then resumes from its epoch checkpoint."""

    def __init__(self, fn: Callable[..., dict], args: tuple = (), requeued: int = 0):
        self.fn, self.args, self.requeued = fn, tuple(args), requeued

    def __call__(self) -> dict:
        t0 = time.perf_counter()
        out = {"worker": worker_name(), "requeued": self.requeued}
        try:
            out.update(ok=True, result=self.fn(*self.args))
        except Exception as err:  # noqa: BLE001 - reported per job; the other jobs go on
            out.update(ok=False, error=one_line(err), detail=traceback.format_exc())
        out["seconds"] = time.perf_counter() - t0
        return out

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(Attempt(self.fn, self.args, self.requeued + 1))


def one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return f"{type(err).__name__}: {text[:300]}" if text else type(err).__name__


# ------------------------------------------------------------------------------------------------ executors
def _init_worker(names, cpus: int) -> None:
    """Pool initializer: this worker's name and GPU (before CUDA is initialised in it) and its share of the CPUs."""
    name = names.get()
    os.environ[WORKER_ENV] = name
    os.environ[CPUS_ENV] = str(cpus)
    if name.startswith("gpu "):
        os.environ["CUDA_VISIBLE_DEVICES"] = name[4:]


def plainly_cpu(device: str = "cpu") -> bool:
    """The jobs run on the CPU and nothing else: ``cpu``, or ``auto`` where torch sees no CUDA GPU."""
    if str(device) == "cpu":
        return True
    if str(device) != "auto":
        return False
    import torch

    return not torch.cuda.is_available()


def cuda_initialised() -> bool:
    """CUDA is initialised in this process (a fork of it could not use CUDA again)."""
    torch = sys.modules.get("torch")  # never imported: never initialised
    return bool(torch is not None and torch.cuda.is_initialized())


def pool_start_method(device: str = "cpu", gpus: Sequence[int] | None = None,
                      requested: str | None = None) -> str | None:
    """How a pool starts its workers: ``spawn`` whenever CUDA may be used -- GPU workers, a device that is not plainly
    the CPU (``cuda``, or ``auto`` on a machine with a GPU), or CUDA already initialised here (``startup_lines``
    named the GPU) -- since a forked child cannot re-initialise CUDA; else the platform's default (``None``; fork on
    Linux, cheap). ``requested`` (a test's choice) is kept unless it is ``fork`` where CUDA may be used (an error)."""
    cuda = bool(gpus) or cuda_initialised() or not plainly_cpu(device)
    if requested == "fork" and cuda:
        raise ValueError("a pool cannot fork once CUDA may be used (CUDA cannot be re-initialised in a forked child): "
                         "use start_method='spawn' or 'forkserver'.")
    return requested or ("spawn" if cuda else None)


class LocalPool(ProcessPoolExecutor):
    """A process pool that knows how it was made (:func:`run_jobs` starts a fresh one if a worker dies)."""

    def __init__(self, workers: int, gpus: Sequence[int] | None = None, start_method: str | None = None,
                 device: str = "cpu"):
        self.options = (workers, list(gpus) if gpus else None, start_method, device)
        ctx = mp.get_context(pool_start_method(device, gpus, start_method))
        self.start_method = ctx.get_start_method()
        names = [f"gpu {g}" for g in gpus] if gpus else [f"cpu {i}" for i in range(workers)]
        queue = ctx.Queue()
        for n in names:
            queue.put(n)
        self.cpus_each = max(1, allocated_cpus() // len(names))
        super().__init__(max_workers=len(names), mp_context=ctx, initializer=_init_worker,
                         initargs=(queue, self.cpus_each))

    def fresh(self) -> "LocalPool":
        self.shutdown(wait=False, cancel_futures=True)
        return LocalPool(*self.options)


def local_executor(workers: int, gpus: Sequence[int] | None = None, start_method: str | None = None,
                   device: str = "cpu") -> LocalPool:
    """``workers`` processes; with ``gpus``, one worker per GPU, each seeing only its own. Workers are spawned
    whenever CUDA may be used (:func:`pool_start_method`: GPUs, ``device`` not plainly the CPU, CUDA initialised here);
    plain CPU workers use the platform's default. Each worker's image loaders get an equal share of the allocated
    CPUs (``DPCLAB_CPUS``)."""
    return LocalPool(workers, gpus, start_method, device)


#: short names accepted by :func:`slurm_executor` (``grid --slurm cpus=8 mem_gb=32 timeout=720 partition=gpu``)
SLURM_ALIASES = {"cpus": "cpus_per_task", "mem": "mem_gb", "timeout": "timeout_min", "partition": "slurm_partition",
                 "gpus": "gpus_per_node", "parallel": "slurm_array_parallelism", "account": "slurm_account",
                 "qos": "slurm_qos"}
#: what a job asks for unless told otherwise: one GPU, and CPUs to decode images for it
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 720, "nodes": 1,
                  "tasks_per_node": 1}


def slurm_request(**parameters) -> dict:
    """What each SLURM job asks for: :data:`SLURM_DEFAULTS` updated by ``parameters`` (short names in
    :data:`SLURM_ALIASES` resolved to submitit's)."""
    params = dict(SLURM_DEFAULTS)
    for key, value in parameters.items():
        params[SLURM_ALIASES.get(key, key)] = value
    return params


def slurm_executor(folder: str | os.PathLike, cluster: str | None = None, max_requeue: int = 3, **parameters):
    """A submitit executor: SLURM (``cluster=None`` finds it), or ``cluster="local"`` (subprocesses on this
    machine, with the same time limit, signal and requeue) / ``"debug"`` (in this process) for tests.

    ``parameters`` go to ``update_parameters`` on top of :data:`SLURM_DEFAULTS` (short names in
    :data:`SLURM_ALIASES`), e.g. ``cpus_per_task=8, mem_gb=32, timeout_min=600, slurm_partition="gpu"``.
    ``max_requeue``: how often a job that reaches its time limit is requeued."""
    try:
        import submitit
    except ImportError as err:
        raise RuntimeError('The SLURM executor needs submitit: pip install -e ".[cluster]" (or pip install '
                           'submitit).') from err
    params = slurm_request(**parameters)
    if cluster in ("local", "debug"):  # this machine: no GPUs asked for, nothing only SLURM understands
        params = {k: v for k, v in params.items() if not k.startswith("slurm_") and k != "gpus_per_node"}
        if cluster == "debug":
            return submitit.DebugExecutor(folder=str(folder))
        # the local executor itself (AutoExecutor would insist on whole minutes): same signal and requeue as SLURM
        ex = submitit.LocalExecutor(folder=str(folder), max_num_timeout=max_requeue)
    else:
        if cluster is None and submitit.AutoExecutor.which() != "slurm":
            raise RuntimeError("--slurm needs a SLURM cluster (no srun on this machine); here use --workers N or "
                               "--gpus 0 1 ...")
        params["timeout_min"] = max(1, int(round(float(params["timeout_min"]))))
        ex = submitit.AutoExecutor(folder=str(folder), cluster=cluster, slurm_max_num_timeout=max_requeue)
    ex.update_parameters(**params)
    return ex


class _Backend:
    """Start jobs, wait for some to end. ``start`` returns one handle per job; ``finished`` the ended ones with
    their :class:`Attempt` outcome dicts."""

    def __init__(self, executor):
        self.executor = executor
        self.submitit = hasattr(executor, "batch") and hasattr(executor, "update_parameters")

    def start(self, jobs: list[Job]) -> list:
        if self.executor is None:
            return [Attempt(j.fn, j.args) for j in jobs]
        if self.submitit:
            with self.executor.batch():  # one job array
                return [self.executor.submit(Attempt(j.fn, j.args)) for j in jobs]
        return [self.executor.submit(Attempt(j.fn, j.args)) for j in jobs]

    def finished(self, handles: list, poll_s: float) -> list[tuple[object, dict]]:
        if self.executor is None:
            return [(handles[0], handles[0]())]
        if self.submitit:
            while True:
                done = [h for h in handles if h.done()]
                if done:
                    return [(h, self._submitit_outcome(h)) for h in done]
                time.sleep(poll_s)
        done, _ = wait(handles, return_when=FIRST_COMPLETED)
        out = []
        for h in done:
            try:
                out.append((h, h.result()))
            except Exception as err:  # noqa: BLE001 - a worker died (out of memory?) or the job did not pickle
                lost = isinstance(err, BrokenProcessPool) and isinstance(self.executor, LocalPool)  # renewable
                out.append((h, {"ok": False, "error": one_line(err), "detail": traceback.format_exc(),
                                "worker": "?", "seconds": 0.0, "lost": lost}))
                if lost and self.executor._broken:
                    self.executor = self.executor.fresh()
        return out

    @property
    def slurm(self) -> bool:
        """Jobs that outlive this process and can be found again by id (SLURM; not the local or debug executors)."""
        ex = getattr(self.executor, "_executor", self.executor)
        return self.submitit and type(ex).__name__ == "SlurmExecutor"

    def attach(self, job_id: str, folder: str):
        """The handle of a job submitted earlier (by a driver that has since died): SLURM keeps running it."""
        ex = getattr(self.executor, "_executor", self.executor)
        return ex.job_class(folder=folder, job_id=job_id)

    @staticmethod
    def _submitit_outcome(handle) -> dict:
        worker = f"slurm {handle.job_id}"
        try:
            out = handle.result()
        except Exception as err:  # noqa: BLE001 - timed out too often, killed, cancelled, node failure
            return {"ok": False, "error": one_line(err), "detail": str(err), "worker": worker, "seconds": 0.0}
        return {**out, "worker": out.get("worker") or worker}


# ------------------------------------------------------------------------------------------------ the loop
def job_line(n: int, total: int, rec: JobRecord) -> str:
    """``[ 3/42] ok      06 eurosat coop+dpc seed 1  worker gpu 0  12.3 s  trained``"""
    head = f"[{n:>{len(str(total))}}/{total}] {rec.status:7s} {rec.label}"
    if rec.status == "skipped":
        return f"{head}  ({rec.error})"
    what = rec.error if rec.status == "failed" else (rec.result or {}).get("note", "")
    requeued = f" (requeued {rec.requeued}x)" if rec.requeued else ""
    device = (rec.result or {}).get("device")
    on = f" on {device}" if device else ""
    return f"{head}  worker {rec.worker}{on}  {rec.seconds:.1f} s  {what}{requeued}".rstrip()


def print_now(line: str) -> None:
    """``print`` that reaches a log file at once (``grid > grid.log`` on a login node is block-buffered)."""
    print(line, flush=True)


#: waits (seconds) before the tries after a refused submission (QOS limits, a busy controller): 4 tries in ~6 min
SUBMIT_RETRIES = (15.0, 60.0, 300.0)


class GridState:
    """The driver's state in a JSON file (``grid`` keeps it under the runs folder): per job key, its label and status
    -- ``submitted`` (with the SLURM job id and log folder), ``ok`` (with the job's result), ``failed`` (with the
    error) -- written atomically at every submission and every end. A driver started again on the same file reuses
    the finished jobs, re-attaches to those still queued or running on SLURM, and runs only the rest."""

    def __init__(self, path: str | os.PathLike):

        from dpclab.io import DamagedFileError, read_json, set_aside

        self.path = Path(path)
        self.jobs: dict[str, dict] = {}
        try:
            self.jobs = read_json(self.path, ("jobs",))["jobs"]
        except FileNotFoundError:
            pass
        except DamagedFileError as err:  # finished runs are still reused from their run folders
            set_aside(err, "the grid starts over (its finished runs are reused from their run folders)")

    @contextlib.contextmanager
    def driving(self):
        """Held by the one driver of this state for its life: a second driver on the same runs folder (which would
        submit the same jobs again) is refused in one line. Where ``flock`` is unavailable nothing is held."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".driver"), "a+") as handle:
            try:
                import fcntl

                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                raise RuntimeError(f"another grid driver is running on {self.path.parent} ({handle.read().strip()}); "
                                   f"follow it (its log), or stop it before starting this one.") from None
            except (ImportError, OSError):  # no flock here (Windows, some cluster file systems): not guarded
                pass
            handle.seek(0)
            handle.truncate()
            handle.write(f"host {__import__('socket').gethostname()} pid {os.getpid()}")
            handle.flush()
            yield self

    def save(self) -> None:
        from dpclab.io import atomic_write_json

        atomic_write_json(self.path, {"jobs": self.jobs}, indent=1, default=str)

    def submitted(self, job: Job, job_id: str, folder: str) -> None:
        self.jobs[job.key] = {"label": job.title, "status": "submitted", "job_id": job_id,
                              "array": job_id.split("_")[0], "folder": folder, "time": time.time()}

    def ended(self, rec: JobRecord) -> None:
        entry = {"label": rec.label, "status": rec.status, "worker": rec.worker, "seconds": rec.seconds,
                 "requeued": rec.requeued, "time": time.time()}
        entry.update(result=rec.result) if rec.ok else entry.update(error=rec.error)
        self.jobs[rec.key] = {**self.jobs.get(rec.key, {}), **entry}

    def finished(self, job: Job) -> JobRecord | None:
        """The record of ``job`` finished ok by an earlier driver (its run directory still there), or None."""
        e = self.jobs.get(job.key)
        if not e or e.get("status") != "ok":
            return None
        run_dir = (e.get("result") or {}).get("run_dir")
        if run_dir and not os.path.isdir(run_dir):
            return None
        result = {**(e.get("result") or {}), "note": "finished earlier (grid state)"}
        return JobRecord(job.key, job.title, "ok", e.get("seconds", 0.0), e.get("worker", ""), result,
                         requeued=e.get("requeued", 0))

    def running(self, job: Job) -> tuple[str, str] | None:
        """(job id, log folder) of ``job`` submitted by an earlier driver and not seen to end, or None."""
        e = self.jobs.get(job.key)
        return (e["job_id"], e["folder"]) if e and e.get("status") == "submitted" else None


def run_jobs(jobs: Iterable[Job], executor=None, log: Callable[[str], None] | None = print_now,
             poll_s: float = 2.0, state: GridState | None = None,
             retries: Sequence[float] | None = None) -> list[JobRecord]:
    """Run every job whose needs finished, on ``executor`` (``None``: here; a :func:`local_executor` or any
    ``concurrent.futures`` executor; a :func:`slurm_executor`), one ``log`` line per job as it ends. Never raises
    for a failed job: returns one :class:`JobRecord` per job, in the given order (see :func:`summary`).

    A refused submission (SLURM: QOS limits, a busy controller) is tried again after each wait of ``retries``
    (default :data:`SUBMIT_RETRIES`), each refusal logged; refused for good, its jobs fail (their dependants are
    skipped) and every other job goes on. With ``state`` (:class:`GridState`), jobs an earlier driver finished are
    not run again, SLURM jobs it submitted are re-attached (never submitted twice), and every submission and end is
    written to it as it happens."""
    jobs = list(jobs)
    check_jobs(jobs)
    waves(jobs)  # no cycles
    log = log or (lambda *_: None)
    backend = _Backend(executor)
    titles = {j.key: j.title for j in jobs}
    records: dict[str, JobRecord] = {}
    pending, running = list(jobs), {}
    # jobs lost with a pool whose worker died: each is run again once, alone, so only the one that kills its
    # worker fails (a dying worker takes every job of its pool down with it)
    isolate: list[Job] = []
    retried: set[str] = set()

    def finish(rec: JobRecord) -> None:
        records[rec.key] = rec
        log(job_line(len(records), len(jobs), rec))
        if state is not None and rec.status != "skipped":
            state.ended(rec)
            state.save()

    def submit(ready: list[Job]) -> None:
        waits = list(SUBMIT_RETRIES if retries is None else retries) if backend.submitit else []
        while True:
            try:
                handles = backend.start(ready)
                break
            except Exception as err:  # noqa: BLE001 - sbatch refused (QOS, limits, controller down): retry, then fail
                what = f"submission of {len(ready)} job(s) refused ({one_line(err)})"
                if not waits:
                    log(f"{what}; giving up on them (the other jobs go on; run the same command again later to "
                        f"submit only what is missing)")
                    for j in ready:
                        finish(JobRecord(j.key, j.title, "failed", error=f"not submitted: {one_line(err)}"))
                    return
                wait_s = waits.pop(0)
                log(f"{what}; trying again in {wait_s:.0f} s ({len(waits) + 1} more tries)")
                time.sleep(wait_s)
        running.update(zip(handles, ready))
        if state is not None and backend.submitit:
            for h, j in zip(handles, ready):
                state.submitted(j, str(h.job_id), str(h.paths.folder))
            state.save()

    if state is not None:  # what an earlier driver of this state finished or left running
        for j in list(pending):
            rec = state.finished(j)
            earlier = state.running(j) if backend.slurm else None
            if rec is not None:
                finish(rec)
            elif earlier is not None:
                running[backend.attach(*earlier)] = j
                log(f"re-attached to SLURM job {earlier[0]}: {j.title}")
            else:
                continue
            pending.remove(j)

    while pending or running or isolate:
        ready, waiting = [], []
        for j in pending:
            bad = [k for k in j.needs if k in records and not records[k].ok]
            if bad:
                finish(JobRecord(j.key, j.title, "skipped", error=f"needs {titles[bad[0]]}, which "
                                 f"{'failed' if records[bad[0]].status == 'failed' else 'was skipped'}"))
            elif all(k in records for k in j.needs):
                ready.append(j)
            else:
                waiting.append(j)
        pending = waiting
        if isolate:
            pending += ready
            ready = [isolate.pop(0)] if not running else []
            retried.update(j.key for j in ready)
        if ready:
            submit(ready)
        if not running:
            continue  # skipped jobs may have unblocked (skipped) others
        for handle, out in backend.finished(list(running), poll_s):
            j = running.pop(handle)
            if out.get("lost") and j.key not in retried:
                isolate.append(j)
                continue
            if out.get("lost"):
                out["error"] += " (a worker process died while it ran, again when it ran alone)"
            finish(JobRecord(j.key, j.title, "ok" if out.get("ok") else "failed", out.get("seconds", 0.0),
                             out.get("worker", ""), out.get("result"), out.get("error", ""), out.get("detail", ""),
                             out.get("requeued", 0)))
    if isinstance(backend.executor, LocalPool) and backend.executor is not executor:
        backend.executor.shutdown()  # the replacement of a broken pool
    return [records[j.key] for j in jobs]


def summary(records: Sequence[JobRecord]) -> list[str]:
    """The closing lines: the counts, then every failed job with its error and every skipped job."""
    counts = {s: sum(r.status == s for r in records) for s in ("ok", "failed", "skipped")}
    lines = [f"{len(records)} jobs: {counts['ok']} ok, {counts['failed']} failed, {counts['skipped']} skipped"]
    lines += [f"  failed:  {r.label}: {r.error}" for r in records if r.status == "failed"]
    lines += [f"  skipped: {r.label} ({r.error})" for r in records if r.status == "skipped"]
    return lines


# ------------------------------------------------------------------------------------------------ start order
def needed_first(jobs: Sequence[Job]) -> list[Job]:
    """``jobs`` with those that other jobs need (transitively, most dependants first) ahead of the rest, each group in
    its given order: a pool starts the heads of the long chains (CoOp before its DPC runs) while independent runs fill
    the other workers."""
    dependants: dict[str, int] = {j.key: 0 for j in jobs}
    by_key = {j.key: j for j in jobs}

    def credit(key: str, seen: set) -> None:
        for k in by_key[key].needs:
            if k in by_key and k not in seen:
                seen.add(k)
                dependants[k] += 1
                credit(k, seen)

    for j in jobs:
        credit(j.key, set())
    order = {j.key: i for i, j in enumerate(jobs)}
    return sorted(jobs, key=lambda j: (-dependants[j.key], order[j.key]))


__all__ = ["Job", "JobRecord", "run_jobs", "needed_first", "summary", "waves", "makespan", "local_executor",
           "slurm_executor", "LocalPool", "Attempt", "GridState", "SUBMIT_RETRIES", "slurm_request", "job_line",
           "pool_start_method", "plainly_cpu"]
