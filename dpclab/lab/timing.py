"""Measuring helpers the tools share (``speed``, ``estimate``, ``gpu-check``): wall time with the device synchronised,
training probes that run the real :func:`dpclab.train.fit` for a few batches, peak memory, the device's name."""

from __future__ import annotations

import os
import platform
import statistics
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from dpclab.train import Examples


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

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    return f"CPU {cpu} ({torch.get_num_threads()} torch threads)"


def rss_bytes() -> int:
    try:
        import psutil

        return psutil.Process().memory_info().rss
    except ImportError:  # Linux fallback
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@dataclass
class Peak:
    rss_mib: float = 0.0
    rss_start_mib: float = 0.0
    cuda_mib: float = float("nan")


@contextmanager
def peak_memory(device: torch.device, interval: float = 0.005) -> Iterator[Peak]:
    """Peak resident memory of this process during the block (sampled by a thread) and peak CUDA allocation."""
    peak = Peak(rss_start_mib=rss_bytes() / 2**20)
    peak.rss_mib = peak.rss_start_mib
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak.rss_mib = max(peak.rss_mib, rss_bytes() / 2**20)
            stop.wait(interval)

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        yield peak
    finally:
        stop.set()
        t.join()
        peak.rss_mib = max(peak.rss_mib, rss_bytes() / 2**20)
        if device.type == "cuda":
            peak.cuda_mib = torch.cuda.max_memory_allocated(device) / 2**20


__all__ = ["sync", "median_time", "Repeat", "probe_examples", "device_name", "rss_bytes", "Peak", "peak_memory"]
