"""An inter-process file lock, so notebooks run in parallel never train the same run or tear the results table."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, runs stay sequential-safe only
    fcntl = None


@contextlib.contextmanager
def file_lock(path: str | os.PathLike):
    """Hold an exclusive lock on ``path`` (created if needed) for the duration of the block; blocks until free."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        if fcntl is not None:
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
