"""Files written so that a reader never sees half of one: atomic writes, sha256 of a file, an inter-process lock.

Every write goes to a temporary file beside the target (same folder, so the final :func:`os.replace` is atomic on
POSIX and Windows) and is then renamed over it: a reader sees the old content or the new one, never a torn file,
and an interrupted write leaves the old file in place. Written files get the mode a plain ``open(path, "w")``
would give them (0644 under the usual umask), whatever writes them.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import json
import os
import socket
import tempfile
import threading
import time
import uuid
from pathlib import Path

import torch

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no locking, runs stay sequential-safe only
    fcntl = None


def _read_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: the process's umask, read once: written files get ``0o666 & ~umask`` (0644 under the usual umask 022)
_FILE_MODE = 0o666 & ~_read_umask()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (parent folders created); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.chmod(tmp, _FILE_MODE)  # mkstemp creates 0600
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj, **dumps_kwargs) -> Path:
    """Write ``json.dumps(obj, **dumps_kwargs)`` to ``path`` atomically; returns the path."""
    return atomic_write_text(path, json.dumps(obj, **dumps_kwargs))


def atomic_torch_save(obj, path: str | os.PathLike) -> Path:
    """``torch.save(obj, path)`` atomically; returns the path.

    The object is serialised to memory first: ``torch.save`` names the archive's records after the file it writes
    to, so saving to a randomly named temporary file would make two identical objects differ in their bytes (and
    sha256). Through a buffer, the same object always gives the same bytes."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return atomic_write_bytes(path, buffer.getvalue())


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (read in 1 MiB blocks)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


#: errno values of a ``flock`` the file system does not offer (Lustre without ``-o flock``: ENOSYS; some NFS and
#: BeeGFS mounts: EOPNOTSUPP / ENOLCK): the lock falls back to an exclusive-create lock file
FLOCK_UNAVAILABLE = {errno.ENOSYS, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.ENOLCK}
#: the fall-back lock file's heartbeat (its mtime is renewed this often while held), and the age after which a lock
#: file whose holder stopped beating (killed, node lost) is taken over
LOCK_HEARTBEAT_S = 10.0
LOCK_STALE_S = 120.0


@contextlib.contextmanager
def file_lock(path: str | os.PathLike, heartbeat_s: float = LOCK_HEARTBEAT_S, stale_s: float = LOCK_STALE_S):
    """Hold an exclusive lock on ``path`` (created if needed) for the duration of the block; blocks until free.

    Parallel notebooks and grid jobs use it so they never train the same run, write the same dataset or tear the
    results table. ``fcntl.flock`` where the file system offers it; where it does not (ENOSYS, EOPNOTSUPP, ENOLCK:
    Lustre, some NFS and BeeGFS mounts), an exclusive-create lock file ``<path>.held`` (:func:`lock_file`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as handle:
        held = False
        if fcntl is not None:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
                held = True
            except OSError as err:
                if err.errno not in FLOCK_UNAVAILABLE:
                    raise
        if held:
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
            return
    if fcntl is None:  # pragma: no cover - Windows: no locking, runs stay sequential-safe only
        yield
        return
    with lock_file(path.with_name(path.name + ".held"), heartbeat_s, stale_s):
        yield


@contextlib.contextmanager
def lock_file(path: str | os.PathLike, heartbeat_s: float = LOCK_HEARTBEAT_S, stale_s: float = LOCK_STALE_S,
              poll_s: float | None = None):
    """An exclusive lock that needs no ``flock``: ``path`` created with O_CREAT|O_EXCL (atomic on local file systems,
    NFSv3+ and Lustre) holding a token (host, pid, random), its mtime renewed every ``heartbeat_s`` by a thread while
    held, removed on release. A lock file not renewed for ``stale_s`` (its holder was killed or lost its node) is
    taken over: renamed aside under a unique name (one taker wins), checked to be the stale one, then removed."""

    path = Path(path)
    token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}\n"
    poll_s = poll_s if poll_s is not None else min(1.0, heartbeat_s / 4)
    while True:
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            _break_stale(path, stale_s)
            time.sleep(poll_s)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(token)
        break
    stop = threading.Event()

    def beat() -> None:
        while not stop.wait(heartbeat_s):
            with contextlib.suppress(OSError):
                os.utime(path)

    thread = threading.Thread(target=beat, name=f"lock heartbeat {path.name}", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()
        with contextlib.suppress(OSError):
            if path.read_text() == token:  # still ours (not taken over after a stall longer than stale_s)
                path.unlink()


def _break_stale(path: Path, stale_s: float) -> None:
    """Remove the lock file ``path`` if its heartbeat stopped more than ``stale_s`` ago; safe when several waiters
    try at once (each renames it to its own name first; only the one that got the stale file removes it)."""

    try:
        before = path.read_text()
        if time.time() - path.stat().st_mtime < stale_s:
            return
        aside = path.with_name(f"{path.name}.stale.{uuid.uuid4().hex}")
        os.rename(path, aside)
    except OSError:  # released or taken meanwhile
        return
    if aside.read_text() == before and time.time() - aside.stat().st_mtime >= stale_s:
        aside.unlink()  # the stale lock: gone
    else:  # another waiter replaced it between our read and our rename: put the live lock back
        with contextlib.suppress(OSError):
            os.link(aside, path)
        with contextlib.suppress(OSError):
            aside.unlink()


__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "sha256_file",
           "file_lock", "lock_file"]
