"""Files written so that a reader never sees half of one: atomic writes, sha256 of a file, an inter-process lock;
and read back checked.

Every write goes to a temporary file beside the target (same folder, so the final :func:`os.replace` is atomic on
POSIX and Windows) and is then renamed over it: a reader sees the old content or the new one, never a torn file,
and an interrupted write leaves the old file in place. Written files get the mode a plain ``open(path, "w")``
would give them (0644 under the usual umask), whatever writes them.

Every file the kit writes and reads back later (a run's ``result.json``, ``model.pt`` and ``checkpoint.pt``, the
feature and few-shot caches, ``results.csv``, the report's timings) is read through :func:`read_json`,
:func:`torch_load` or :func:`read_csv_table`: a file cut short or corrupted (a full disk, a killed editor, a bad copy)
raises :class:`DamagedFileError` naming it, never a parser's message without a path. What the caller then does is
its own decision: a cache entry or a run file is moved aside with :func:`move_aside` (``<name>.damaged-<time>``,
never deleted) and rebuilt, with a :class:`DamagedFileWarning` naming both (:func:`set_aside`).
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
import warnings
import zipfile
from pathlib import Path

import pandas as pd
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
    ensure_folder(path.parent, f"folder of {path.name},")
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
    ensure_folder(path.parent, f"folder of {path.name},")
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


class DamagedFileError(ValueError):
    """A file the kit wrote cannot be read back (cut short, corrupted, not what it should hold); names the file."""

    def __init__(self, path: str | os.PathLike, reason: str):
        self.path, self.reason = Path(path), reason
        #: the damaged file's (inode, size, mtime) when it was found damaged: :func:`set_aside` moves only that file
        self.stamp = _stamp(self.path)
        super().__init__(f"{path} is damaged ({reason}).")


def _stamp(path: Path) -> tuple | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_ino, st.st_size, st.st_mtime_ns


class DamagedFileWarning(UserWarning):
    """A damaged file was moved aside (:func:`set_aside`) and what it held is rebuilt."""


def _damaged(path, err: BaseException | str) -> DamagedFileError:
    text = err if isinstance(err, str) else " ".join(f"{type(err).__name__}: {err}".split())
    return DamagedFileError(path, text[:200])


def read_json(path: str | os.PathLike, keys: tuple[str, ...] = ()):
    """The JSON a file holds. A missing file raises FileNotFoundError; one that cannot be parsed (cut short, not
    UTF-8) or, with ``keys``, is not an object with those keys, raises :class:`DamagedFileError`."""
    path = Path(path)
    try:
        obj = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        raise
    except NotADirectoryError as err:
        raise _missing(path, err) from err
    except (OSError, ValueError) as err:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _damaged(path, err) from err
    if keys and not (isinstance(obj, dict) and all(k in obj for k in keys)):
        raise _damaged(path, f"not a JSON object with {', '.join(keys)}")
    return obj


def archive_damage(path: str | os.PathLike, crc: bool = True) -> str | None:
    """Why the torch zip archive at ``path`` is damaged (cut short: no central directory; a record whose bytes no
    longer match their CRC-32, which ``torch.load`` itself does not check), or None when it is intact or is not a
    zip archive (a legacy pickle file). ``crc=False`` checks the central directory only (reads the file's end)."""
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except NotADirectoryError as err:
        raise _missing(Path(path), err) from err
    try:
        if head[:2] != b"PK":
            return None if head else "empty file"
        with zipfile.ZipFile(path) as archive:
            bad = archive.testzip() if crc else None
    except FileNotFoundError:
        raise
    except (OSError, zipfile.BadZipFile, EOFError, ValueError) as err:
        return f"cut short or not a torch archive: {' '.join(str(err).split())[:120]}"
    return f"the bytes of {bad} do not match their checksum" if bad else None


def torch_load(path: str | os.PathLike, map_location="cpu", keys: tuple[str, ...] = ()):
    """``torch.load(path, map_location, weights_only=True)`` of a file the kit wrote, checked: its archive is
    intact (:func:`archive_damage`, checksums included) and, with ``keys``, it holds a dict with those keys. A
    missing file raises FileNotFoundError; a damaged one :class:`DamagedFileError`."""
    path = Path(path)
    why = archive_damage(path)
    if why:
        raise DamagedFileError(path, why)
    try:
        obj = torch.load(path, map_location=map_location, weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as err:  # noqa: BLE001 - unpickling fails in many ways (EOFError, UnpicklingError, ...)
        raise _damaged(path, err) from err
    if keys and not (isinstance(obj, dict) and all(k in obj for k in keys)):
        raise _damaged(path, f"not a dict with {', '.join(keys)}")
    return obj


def read_csv_table(path: str | os.PathLike, columns: tuple[str, ...] = ()):
    """A CSV table (pandas) the kit wrote; FileNotFoundError when missing, :class:`DamagedFileError` when it cannot
    be parsed or lacks one of ``columns``."""
    path = Path(path)
    try:
        df = pd.read_csv(path)
    except FileNotFoundError:
        raise
    except NotADirectoryError as err:
        raise _missing(path, err) from err
    except (OSError, ValueError, pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise _damaged(path, err) from err
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise _damaged(path, f"no column {', '.join(missing)}")
    return df


def move_aside(path: str | os.PathLike) -> Path | None:
    """Rename ``path`` to ``<name>.damaged-<UTC time>`` beside it (never deleted; a number is added when that name
    is taken); returns the new path, or None when the file is already gone (another process moved it)."""
    path = Path(path)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target, n = path.with_name(f"{path.name}.damaged-{stamp}"), 1
    while target.exists():
        n += 1
        target = path.with_name(f"{path.name}.damaged-{stamp}-{n}")
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return None
    return target


def set_aside(err: DamagedFileError, then: str) -> Path | None:
    """Move the damaged file of ``err`` aside (:func:`move_aside`) and warn (:class:`DamagedFileWarning`) naming it,
    where it went, and ``then`` (what happens instead, e.g. "recomputed"); returns where it went. When another
    process has already replaced it (a parallel run rebuilt it), nothing is moved and nothing said (None)."""
    if err.stamp is not None and _stamp(err.path) not in (err.stamp, None):
        return None
    moved = move_aside(err.path)
    where = f"moved aside to {moved.name}" if moved else "already moved aside"
    warnings.warn(f"{err.path} is damaged ({err.reason}); {where}; {then}.", DamagedFileWarning, stacklevel=2)
    return moved


def check_folder(path: str | os.PathLike, what: str = "") -> Path:
    """``path`` when it is a folder or can be made one (nothing is created); else a one-line ValueError naming the
    part of it that is a file (``what``: which folder it is, e.g. "runs folder")."""
    path = Path(path)
    for part in [path, *path.parents]:
        if part.exists():
            if not part.is_dir():
                raise ValueError(f"{f'The {what} ' if what else ''}{path} cannot be a folder: {part} is a file. "
                                 f"Choose another path, or move that file away.")
            break
    return path


def ensure_folder(path: str | os.PathLike, what: str = "") -> Path:
    """Create the folder ``path`` (and its parents); a one-line ValueError naming the part of it that is a file
    when it cannot be a folder (:func:`check_folder`)."""
    path = check_folder(path, what)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):  # a file appeared meanwhile
        check_folder(path, what)
        raise
    return path


def _missing(path: Path, err: OSError) -> FileNotFoundError:
    """A file under a path that is not a folder is missing (FileNotFoundError), not damaged."""
    return FileNotFoundError(errno.ENOENT, f"No such file (a folder on its path is a file): {err}", str(path))


__all__ = ["atomic_write_bytes", "atomic_write_text", "atomic_write_json", "atomic_torch_save", "sha256_file",
           "file_lock", "lock_file", "DamagedFileError", "DamagedFileWarning", "read_json", "torch_load",
           "archive_damage", "read_csv_table", "move_aside", "set_aside", "check_folder", "ensure_folder"]
