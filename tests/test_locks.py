"""dpclab.io.file_lock where the file system has no ``flock`` (Lustre without ``-o flock``: ENOSYS; some NFS/BeeGFS
mounts: EOPNOTSUPP): the exclusive-create lock file with a heartbeat and stale-lock recovery."""

from __future__ import annotations

import errno
import os
import threading
import time
from types import SimpleNamespace

import pytest

import dpclab.io as dio


def _no_flock(monkeypatch, code=errno.ENOSYS):
    calls = []

    def flock(handle, op):
        calls.append(op)
        raise OSError(code, os.strerror(code))

    monkeypatch.setattr(dio, "fcntl", SimpleNamespace(flock=flock, LOCK_EX=2, LOCK_UN=8))
    return calls


def _hold(path, log, name, seconds, **kw):
    with dio.file_lock(path, **kw):
        log.append(f"{name} in")
        time.sleep(seconds)
        log.append(f"{name} out")


@pytest.mark.parametrize("code", [errno.ENOSYS, errno.EOPNOTSUPP])
def test_without_flock_the_lock_file_still_excludes_and_its_heartbeat_keeps_it(tmp_path, monkeypatch, code):
    """Two holders never overlap; the first holds longer than the stale age, yet its heartbeat keeps the lock
    file fresh, so the waiter does not take it over. Released: no lock file is left behind."""
    calls = _no_flock(monkeypatch, code)
    lock = tmp_path / "run.lock"
    log: list[str] = []
    kw = dict(heartbeat_s=0.05, stale_s=0.4)
    first = threading.Thread(target=_hold, args=(lock, log, "a", 1.0), kwargs=kw)
    first.start()
    while not log:
        time.sleep(0.01)
    assert (tmp_path / "run.lock.held").is_file()
    second = threading.Thread(target=_hold, args=(lock, log, "b", 0.0), kwargs=kw)
    second.start()
    first.join()
    second.join()
    assert log == ["a in", "a out", "b in", "b out"]
    assert calls  # flock was tried first
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.lock"]


def test_a_stale_lock_file_is_taken_over(tmp_path, monkeypatch):
    """A holder killed with its lock (no heartbeat since): the next one takes the lock after ``stale_s``; a fresh
    lock file of a live holder is waited for."""
    _no_flock(monkeypatch)
    lock = tmp_path / "feat.lock"
    held = tmp_path / "feat.lock.held"
    held.write_text("node7 4242 dead\n")
    os.utime(held, (time.time() - 600, time.time() - 600))
    t0 = time.perf_counter()
    with dio.file_lock(lock, heartbeat_s=0.05, stale_s=60):
        assert held.read_text() != "node7 4242 dead\n"
    assert time.perf_counter() - t0 < 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["feat.lock"]
    held.write_text("node7 4243 alive\n")  # fresh: waited for, not broken
    got = []
    waiter = threading.Thread(target=_hold, args=(lock, got, "w", 0.0), kwargs=dict(heartbeat_s=0.05, stale_s=60))
    waiter.start()
    time.sleep(0.5)
    assert got == [] and held.read_text() == "node7 4243 alive\n"
    held.unlink()  # its holder releases
    waiter.join(5)
    assert got == ["w in", "w out"]


def test_other_flock_errors_are_raised(tmp_path, monkeypatch):
    _no_flock(monkeypatch, errno.EBADF)
    with pytest.raises(OSError, match="Bad file descriptor"):
        with dio.file_lock(tmp_path / "x.lock"):
            pass
