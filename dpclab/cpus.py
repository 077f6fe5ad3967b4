"""The CPUs this process may use (:func:`allocated_cpus`): image loaders size their workers by it
(:func:`dpclab.data.features.default_num_workers`) and the lab's job pools share it among their workers. A light leaf
module (standard library only): job processes import it before anything heavy."""

from __future__ import annotations

import os

#: environment variable: the CPUs this process's image loaders may use (set per worker by ``dpclab.lab.jobs``' pools,
#: which share the allocated CPUs among their workers)
CPUS_ENV = "DPCLAB_CPUS"


def allocated_cpus() -> int:
    """The CPUs this process may use: ``DPCLAB_CPUS`` when a job pool gave it a share, else its affinity mask (what
    SLURM's cgroup or ``taskset`` allow; the node's count only where there is no mask), capped by
    ``SLURM_CPUS_PER_TASK`` inside a SLURM job. Never ``os.cpu_count()`` alone: on a cluster node that is the
    node's CPUs, not the job's."""
    share = os.environ.get(CPUS_ENV, "")
    if share.isdigit() and int(share) > 0:
        return int(share)
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows: no affinity masks
        cpus = os.cpu_count() or 1
    slurm = os.environ.get("SLURM_CPUS_PER_TASK", "")
    if slurm.isdigit() and int(slurm) > 0:
        cpus = min(cpus, int(slurm))
    return max(1, cpus)


__all__ = ["CPUS_ENV", "allocated_cpus"]
