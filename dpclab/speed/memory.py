"""Peak memory of a block of code: the process's resident memory (sampled by a thread) and, on CUDA, the peak
allocation (``torch.cuda.max_memory_allocated``)."""

from __future__ import annotations

import os
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch


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

