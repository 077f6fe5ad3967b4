"""The report's console: per-notebook wall times (this machine's and the typical ones shipped with the package),
the time left (:func:`estimate_remaining`), and :class:`ReportConsole` (a start line, one status line per finished
notebook, each with the time left, and a running line)."""

from __future__ import annotations

import heapq
import json
import logging
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Sequence, TextIO

from dpclab.backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED
from dpclab.io import DamagedFileError, atomic_write_text, read_json, set_aside

log = logging.getLogger(__name__)

TIMINGS_FILE = "timings.json"  # per-notebook wall times of the last run, per parameter set (in the output folder)
#: typical per-notebook wall times (s) of ``python -m dpclab report``, measured and shipped with the package: the
#: first run's estimate, per backend and quick/full; this machine's own times replace them after a run
TYPICAL_FILE = Path(__file__).with_name("typical_times.json")
#: the notebook parameters that change how much work a report is (the typical times hold for their defaults)
WORKLOAD_KEYS = ("backend", "model", "pretrained", "data_root", "dataset", "shots", "seeds", "epochs", "precision")


def parameters_key(parameters: dict) -> str:
    """The key under which a parameter set's timings are stored: its sorted JSON."""
    return json.dumps(parameters, sort_keys=True, default=str)


def _read_timings(path: Path) -> dict:
    """The timings table at ``path`` ({} when there is none); a damaged one (cut short, not the table) is moved
    aside with a warning naming it (:func:`dpclab.io.set_aside`): the estimates start over."""
    try:
        table = read_json(path)
        if not (isinstance(table, dict) and all(isinstance(e, dict) and isinstance(e.get("seconds"), dict) and
                                                all(isinstance(v, (int, float)) for v in e["seconds"].values())
                                                for e in table.values())):
            raise DamagedFileError(path, "not a table of per-notebook seconds")
    except FileNotFoundError:
        return {}
    except DamagedFileError as err:
        set_aside(err, "the time estimates start over")
        return {}
    return table


def load_timings(out_dir: str | Path, parameters: dict) -> dict[str, float]:
    """Per-notebook wall times (s) of the last run with these exact ``parameters``; {} when there is none."""
    entry = _read_timings(Path(out_dir) / TIMINGS_FILE).get(parameters_key(parameters), {})
    return {name: float(sec) for name, sec in entry.get("seconds", {}).items()}


def save_timings(out_dir: str | Path, parameters: dict, seconds: dict[str, float]) -> Path:
    """Record the wall times (name -> s) of what ran (others keep their last time), atomically."""
    path = Path(out_dir) / TIMINGS_FILE
    table = _read_timings(path)
    key = parameters_key(parameters)
    merged = {**table.get(key, {}).get("seconds", {}), **{name: round(s, 1) for name, s in seconds.items()}}
    table[key] = {"parameters": parameters, "seconds": dict(sorted(merged.items())),
                  "updated": time.strftime("%Y-%m-%d %H:%M:%S")}
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return path


def typical_times(parameters: dict, path: str | Path = TYPICAL_FILE) -> tuple[dict[str, float], str]:
    """The shipped typical per-notebook times for these parameters and where they come from, or ({}, why not).

    They hold for the default workload (embedded model, default dataset, shots, seeds and epochs), per backend and
    quick/full; other workloads get none."""
    try:
        table = read_json(path)
        entries = [e for b in ("embedded", "open_clip") for e in table.get(b, {}).values()]
        if not all(isinstance(e.get("seconds"), dict) and "label" in e for e in entries):
            raise DamagedFileError(path, "an entry without its seconds or label")
    except FileNotFoundError:
        return {}, "no typical times shipped"
    except (DamagedFileError, AttributeError) as err:  # shipped with the package: named, never moved
        log.warning("%s is damaged (%s); reinstall dpclab to restore it", path, getattr(err, "reason", err))
        return {}, f"the shipped typical times {Path(path).name} are damaged"
    changed = [k for k in WORKLOAD_KEYS if k in parameters and parameters[k] not in
               table.get("defaults", {}).get(k, [None])]
    if changed:
        return {}, f"typical times are for the default {', '.join(changed)}"
    backend = "embedded" if parameters.get("pretrained", EMBEDDED_PRETRAINED) == EMBEDDED_PRETRAINED and \
        parameters.get("model", EMBEDDED_MODEL) == EMBEDDED_MODEL else "open_clip"
    mode = "quick" if parameters.get("quick") else "full"
    entry = table.get(backend, {}).get(mode)
    if not entry:
        return {}, f"no typical times for the {backend} backend ({mode})"
    return {k: float(v) for k, v in entry["seconds"].items()}, f"typical times of {entry['label']}; yours after this run"


def expected_times(out_dir: str | Path, parameters: dict) -> tuple[dict[str, float], str]:
    """The times the estimate uses and their source: this machine's last run with these parameters (what it did
    not run, e.g. the training phase, from the typical times), else the shipped typical times
    (:func:`typical_times`), else ({}, why)."""
    own = load_timings(out_dir, parameters)
    typical, source = typical_times(parameters)
    if own:
        return {**typical, **own}, "by this machine's last run"
    return typical, source


def estimate_remaining(running: dict[str, float], pending: Sequence[str], last: dict[str, float],
                       jobs: int = 1, serial: Sequence[str] = ()) -> float | None:
    """Seconds until the run ends, by the expected times ``last``: each running notebook (name -> seconds so far)
    needs its expected time minus its elapsed time (at least 0); pending ones go, in order, to whichever of the
    ``jobs`` workers frees first. Pending names in ``serial`` (a phase before the notebooks, e.g. the report's
    training over all workers) take their whole time before any other. None when a name has no expected time."""
    if any(name not in last for name in [*running, *pending]):
        return None
    workers = [max(last[name] - elapsed, 0.0) for name, elapsed in running.items()]
    if any(name in serial for name in running):
        workers = [max(workers)] * jobs  # a phase on every worker: all free when it ends
    ahead = sum(last[name] for name in pending if name in serial)
    workers += [0.0] * max(jobs - len(workers), 0)
    workers = [w + ahead for w in workers] if ahead else workers
    heapq.heapify(workers)
    for name in pending:
        if name not in serial:
            heapq.heappush(workers, heapq.heappop(workers) + last[name])
    return max(workers, default=0.0)


def clock(seconds: float) -> str:
    """``95`` -> ``1:35``; ``3725`` -> ``1:02:05``."""
    seconds = int(round(seconds))
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def status_line(result, last: float | None = None, left: str = "") -> str:
    """One line per finished notebook (plus one indented line per warning it raised); ``left``: the time left."""
    was = f"  (expected {last:.1f} s)" if last is not None else ""
    lines = [f"{result.name:32s} {result.status:7s} {result.seconds:7.1f} s{was}" + (f"  · {left}" if left else "")
             + (f"  {result.error}" if result.error else "")]
    lines += [f"    warning: {w}" for w in result.warnings]
    return "\n".join(lines)


class ReportConsole:
    """The report's console output: a start line, a status line per finished notebook and a running line.

    ``last`` holds the expected time per name (:func:`expected_times`; ``source`` says whose). The start line gives
    the expected duration, every status and running line the time left (:func:`estimate_remaining`). On a
    terminal the running line is redrawn in place every ``tick`` seconds; elsewhere (logs, CI) it is printed as a
    plain line every ``heartbeat`` seconds. ``serial`` names phases that use every worker (the report's training).

    >>> with ReportConsole(names, *expected_times("reports", params), jobs=2) as console:
    ...     run_report(..., on_start=console.started, on_result=console.finished)
    """

    def __init__(self, names: Sequence[str], last: dict[str, float], source: str = "by the last run",
                 jobs: int = 1, stream: TextIO | None = None, tick: float = 1.0, heartbeat: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, serial: Sequence[str] = ()):

        self.pending = list(names)
        self.last, self.source, self.jobs, self.clock = dict(last), source, max(1, jobs), clock
        self.serial = tuple(serial)
        self.stream = sys.stdout if stream is None else stream
        self.live = self.stream.isatty()
        self.interval = tick if self.live else heartbeat
        self.t0 = clock()
        self.running: dict[str, float] = {}  # name -> start time
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._drawn = False

    def start_line(self) -> str:
        """E.g. ``report: 7 notebooks, 2 at a time; expected 8:55 (typical times: ...)``."""
        total = estimate_remaining({}, self.pending, self.last, self.jobs, self.serial)
        names = [n for n in self.pending if n not in self.serial]
        head = f"report: {len(names)} notebook{'s' * (len(names) != 1)}, {min(self.jobs, len(names))} at a time"
        if total is None:
            missing = [n for n in self.pending if n not in self.last]
            why = self.source if not self.last else f"no time for {', '.join(missing)}"
            return f"{head}; no estimate ({why})"
        return f"{head}; expected {clock(total)} ({self.source})"

    def left(self) -> str:
        """The time left, e.g. ``~4:20 left``."""
        now = self.clock()
        elapsed = {name: now - t for name, t in self.running.items()}
        left = estimate_remaining(elapsed, self.pending, self.last, self.jobs, self.serial)
        if left is None:
            return "no estimate yet"
        if left < 0.5 and elapsed:
            return "taking longer than expected"
        return f"~{clock(left)} left"

    def line(self) -> str:
        """The running line, e.g. ``running 06_reproducibility_report 3:10/~9:40 · 12:05 elapsed, ~4:20 left``."""
        now = self.clock()
        parts = [f"{name} {clock(now - t)}" + (f"/~{clock(self.last[name])}" if name in self.last else "")
                 + (" (longer than expected)" if now - t > self.last.get(name, float("inf")) * 1.1 else "")
                 for name, t in self.running.items()]
        tail = f"{clock(now - self.t0)} elapsed, {self.left()}"
        return ("running " + ", ".join(parts) if parts else "waiting") + " · " + tail

    def _write(self, text: str) -> None:
        with self._lock:
            if self._drawn:
                self.stream.write("\r\x1b[K")
                self._drawn = False
            if text:
                self.stream.write(text + "\n")
            if self.live and self.running:
                self.stream.write(self.line())
                self._drawn = True
            self.stream.flush()

    def note(self, text: str) -> None:
        """Print a line of another step (e.g. one per trained run) between the status lines."""
        self._write(text)

    def started(self, name: str) -> None:
        self.running[name] = self.clock()
        if name in self.pending:
            self.pending.remove(name)
        self._write("")

    def finished(self, result) -> None:
        self.running.pop(result.name, None)
        if result.name in self.pending:
            self.pending.remove(result.name)
        left = self.left() if self.running or self.pending else ""
        self._write(status_line(result, self.last.get(result.name), left))

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            if self.running:
                self._write("" if self.live else self.line())

    def __enter__(self) -> "ReportConsole":
        self._write(self.start_line())
        self._thread = threading.Thread(target=self._loop, name="report-console", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        self.running.clear()
        self._write("")


__all__ = ["load_timings", "save_timings", "typical_times", "expected_times", "estimate_remaining", "status_line",
           "ReportConsole", "clock", "TIMINGS_FILE", "TYPICAL_FILE"]
