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

Training runs become jobs in :mod:`dpclab.lab.trainjobs` (one :func:`~dpclab.lab.trainjobs.train_run` per
:class:`~dpclab.pipeline.RunConfig`); this module knows jobs only. The dependency waves (:func:`waves`), the start
order (:func:`needed_first`) and :func:`makespan` (the wall time of the same schedule on N workers, for the cost
estimate) read the same ``needs``.
"""

from __future__ import annotations

import heapq
import multiprocessing as mp
import os
import time
import traceback
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
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


class LocalPool(ProcessPoolExecutor):
    """A process pool that knows how it was made (:func:`run_jobs` starts a fresh one if a worker dies)."""

    def __init__(self, workers: int, gpus: Sequence[int] | None = None, start_method: str | None = None):
        self.options = (workers, list(gpus) if gpus else None, start_method)
        ctx = mp.get_context(start_method or ("spawn" if gpus else None))
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


def local_executor(workers: int, gpus: Sequence[int] | None = None, start_method: str | None = None) -> LocalPool:
    """``workers`` processes; with ``gpus``, one worker per GPU, each seeing only its own. GPU workers are spawned
    (CUDA cannot be forked); CPU workers use the platform's default. Each worker's image loaders get an equal share
    of the allocated CPUs (``DPCLAB_CPUS``)."""
    return LocalPool(workers, gpus, start_method)


#: short names accepted by :func:`slurm_executor` (``grid --slurm cpus=8 mem_gb=32 timeout=720 partition=gpu``)
SLURM_ALIASES = {"cpus": "cpus_per_task", "mem": "mem_gb", "timeout": "timeout_min", "partition": "slurm_partition",
                 "gpus": "gpus_per_node", "parallel": "slurm_array_parallelism", "account": "slurm_account",
                 "qos": "slurm_qos"}
#: what a job asks for unless told otherwise: one GPU, and CPUs to decode images for it
SLURM_DEFAULTS = {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 32, "timeout_min": 720, "nodes": 1,
                  "tasks_per_node": 1}


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
    params = dict(SLURM_DEFAULTS)
    for key, value in parameters.items():
        params[SLURM_ALIASES.get(key, key)] = value
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
    return f"{head}  worker {rec.worker}  {rec.seconds:.1f} s  {what}{requeued}".rstrip()


def print_now(line: str) -> None:
    """``print`` that reaches a log file at once (``grid > grid.log`` on a login node is block-buffered)."""
    print(line, flush=True)


def run_jobs(jobs: Iterable[Job], executor=None, log: Callable[[str], None] | None = print_now,
             poll_s: float = 2.0) -> list[JobRecord]:
    """Run every job whose needs finished, on ``executor`` (``None``: here; a :func:`local_executor` or any
    ``concurrent.futures`` executor; a :func:`slurm_executor`), one ``log`` line per job as it ends. Never raises
    for a failed job: returns one :class:`JobRecord` per job, in the given order (see :func:`summary`)."""
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
            running.update(zip(backend.start(ready), ready))
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
           "slurm_executor", "LocalPool", "Attempt", "job_line"]
