"""Job functions for tests/test_jobs.py. A module of its own (light imports, no test collection): submitit's local
executor runs each job in a fresh Python process that imports it by name (the test puts this folder on PYTHONPATH)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path


def add(a: int, b: int) -> dict:
    return {"sum": a + b, "pid": os.getpid()}


def fail(message: str) -> dict:
    raise ValueError(message)


def sleep_then(seconds: float, value) -> dict:
    time.sleep(seconds)
    return {"value": value}


def crash() -> dict:
    os._exit(3)  # a worker process that dies (out of memory, segfault): no exception to report


def loader_share() -> dict:
    from dpclab.data.features import allocated_cpus, default_num_workers

    return {"cpus": allocated_cpus(), "loader_workers": default_num_workers(224),
            "env": os.environ.get("DPCLAB_CPUS")}


def resumable_steps(state: str, steps: int) -> dict:
    """A job with its own checkpoint (``state``: the steps done). Its first attempt does 2 steps, then waits for the
    time limit (the job is killed there and requeued); a later attempt resumes from the steps done and finishes."""
    path = Path(state)
    done = json.loads(path.read_text())["done"] if path.is_file() else 0
    first = done == 0
    start = done
    while done < steps:
        done += 1
        path.write_text(json.dumps({"done": done}))
        if first and done == 2:
            time.sleep(120)  # the time limit ends this attempt
    return {"resumed_from": start, "done": done}


def train_until_signalled(cfg, marker: str) -> dict:
    """A real training run whose first attempt receives the time-limit signal (SIGUSR2, what SLURM sends before
    the limit) at the start of its second epoch; requeued, it resumes from its epoch checkpoint."""
    import signal

    from dpclab.lab.trainjobs import train_run
    from dpclab.pipeline import run

    if not os.path.exists(marker):
        Path(marker).write_text("first attempt")

        def hook(epoch, method):
            if epoch == 1:
                os.kill(os.getpid(), getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2")))
                time.sleep(60)  # the handler requeues and exits
            return {}

        run(cfg, on_epoch=hook)
        raise AssertionError("the first attempt should have been requeued at epoch 1")
    return train_run(cfg)


class SignalledDataset:
    """A map-style dataset whose loader worker receives SLURM's time-limit signal (SIGUSR2) while loading."""

    def __len__(self) -> int:
        return 4

    def __getitem__(self, i: int):
        import signal

        if i == 1:
            os.kill(os.getpid(), signal.SIGUSR2)
            time.sleep(0.2)
        return i


def environment(*names: str) -> dict:
    time.sleep(0.3)
    return {n: os.environ.get(n) for n in names}
