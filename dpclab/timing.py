"""Timing helpers the measuring tools share (``speed``, ``estimate``, ``gpu-check``): wall time with the device
synchronised, and training probes that run the real :func:`dpclab.train.fit` for a few batches."""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Callable

import torch


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA kernels run asynchronously); a no-op elsewhere."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_time(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    """The median of ``repeats`` timed calls (on a shared machine the runs see the same load: not the minimum)."""
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


class Repeat:
    """``rows[idx]`` of a few stored rows, cycled: inputs for any number of examples without the memory."""

    def __init__(self, rows: torch.Tensor):
        self.rows = rows

    def __getitem__(self, idx):
        return self.rows[torch.as_tensor(idx) % len(self.rows)]


def probe_examples(max_batches: int) -> Callable[..., object]:
    """A factory of :class:`~dpclab.train.Examples` whose epochs stop after ``max_batches`` batches: a timing probe
    through the real ``fit`` (same keywords as ``Examples``)."""
    from .train import Examples

    @dataclass
    class ProbeExamples(Examples):
        max_batches: int = 1

        def index_batches(self, batch_size, generator):
            return super().index_batches(batch_size, generator)[:self.max_batches]

    return lambda **kw: ProbeExamples(max_batches=max_batches, **kw)


def device_name(device: torch.device) -> str:
    """The device by name: the GPU's (``torch.cuda.get_device_name``) or the CPU's, with the torch threads."""
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)} ({device})"
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} torch threads)"


__all__ = ["sync", "median_time", "Repeat", "probe_examples", "device_name"]
