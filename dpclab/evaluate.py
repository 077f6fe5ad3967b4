"""Accuracy, base/new/HM, the results table (appended atomically), its per-seed summary and the mean ± std format."""

from __future__ import annotations

import csv
import io
import math
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

import pandas as pd
import torch
from torch import nn

from dpclab.io import DamagedFileError, atomic_write_text, file_lock, read_csv_table, set_aside
from dpclab.data.items import Task

if TYPE_CHECKING:  # the examples evaluated: named in annotations only
    from dpclab.data.examples import Examples


def harmonic_mean(base: float, new: float) -> float:
    return 0.0 if base + new == 0 else 2 * base * new / (base + new)


@torch.no_grad()
def predict_logits(method: nn.Module, examples: Examples, task: Task, batch_size: int = 256) -> torch.Tensor:
    """Logits [N, C] of ``method`` for every example, in order."""
    method.eval()
    device = next(method.clip.parameters()).device
    return torch.cat([method(x.to(device), task).logits.float().cpu() for x, _ in
                      examples.ordered_batches(batch_size)])


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * (logits.argmax(-1) == labels).float().mean().item()


RESULT_COLUMNS = ["dataset", "method", "model", "pretrained", "shots", "train_classes", "seed", "base", "new", "hm",
                  "epochs", "run_dir", "backend", "time"]


#: the columns every results table has, from its first version on
REQUIRED_COLUMNS = ("dataset", "method", "seed", "base", "new")
#: why a table whose last line has no newline is damaged
CUT_ROW = "its last row is cut short"


def _checked_table(path: Path) -> pd.DataFrame:
    """The rows of the CSV table ``path`` (results, transfer); :class:`~dpclab.io.DamagedFileError` when it cannot be
    parsed, a line has another number of fields than its header (pasted in, garbled), or its last line is cut short
    (every table the kit writes ends with a newline)."""
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        raise DamagedFileError(path, CUT_ROW)
    try:
        lines = csv.reader(data.decode("utf-8").splitlines())
    except UnicodeDecodeError as err:
        raise DamagedFileError(path, f"not UTF-8 text: {err}") from err
    header = next(lines, [])
    for number, fields in enumerate(lines, 2):
        if fields and len(fields) != len(header):
            raise DamagedFileError(path, f"line {number} has {len(fields)} fields, its header {len(header)}")
    return read_csv_table(path)


def _intact_rows(path: Path) -> pd.DataFrame:
    """The whole rows of a damaged table: the lines after its header with as many fields as the header and a number
    as their seed (a line cut short, garbled or pasted in is left out); none without a header."""
    try:
        lines = path.read_bytes().decode("utf-8", errors="replace").splitlines()
    except FileNotFoundError:
        lines = []
    reader = csv.reader(lines[:-1] if lines and not path.read_bytes().endswith(b"\n") else lines)
    header = next(reader, [])
    if not header or not all(h.isprintable() and h for h in header) or "seed" not in header:
        return pd.DataFrame(columns=RESULT_COLUMNS)
    out = io.StringIO()
    csv.writer(out).writerows([header, *(r for r in reader if len(r) == len(header))])
    rows = pd.read_csv(io.StringIO(out.getvalue()))
    return rows[pd.to_numeric(rows["seed"], errors="coerce").notna()].reset_index(drop=True)


def _repair_table(path: Path, err: DamagedFileError) -> pd.DataFrame:
    """Keep the intact rows of a damaged results table (:func:`_intact_rows`): the damaged file is moved aside
    (named in a warning) and a table of its whole rows written in its place. Call under the table's lock."""
    rows = _intact_rows(path)
    set_aside(err, f"{len(rows)} intact row(s) kept in a new table")
    atomic_write_text(path, rows.to_csv(index=False))
    return rows


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """A results table; rows of tables written before the ``train_classes`` column (base-to-new runs only: oracle
    and transfer runs were not recorded then) read as ``train_classes="base"``. A damaged table (cut short, not
    CSV) is repaired first: moved aside, its intact rows kept (:func:`_repair_table`)."""
    path = Path(path)
    try:
        df = _checked_table(path)
    except DamagedFileError:
        with file_lock(path.with_name(f".{path.name}.lock")):
            try:
                df = _checked_table(path)  # another process may have repaired it meanwhile
            except DamagedFileError as err:
                df = _repair_table(path, err)
    missing = [c for c in REQUIRED_COLUMNS if c not in df]
    if missing and len(df.columns):
        raise ValueError(f"{path} is not a results table (no column {', '.join(missing)}); pass the table "
                         f"python -m dpclab train writes (runs/results.csv).")
    if "train_classes" not in df:
        df.insert(min(5, len(df.columns)), "train_classes", "base")
    df["train_classes"] = df["train_classes"].fillna("base")
    return df


def append_result(path: str | os.PathLike, row: dict) -> None:
    """Append one row to a CSV results table atomically: readers see the old or the new file, never a torn one."""
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):  # concurrent writers (parallel notebooks) lose no row
        _append_row(path, row)


def ensure_result(path: str | os.PathLike, row: dict, key: str = "run_dir") -> bool:
    """Append ``row`` unless the table already has a row with its ``key`` (a run's directory): a finished run whose
    row was lost (the process killed between its result.json and its row, a damaged table repaired) gets it back
    when it is reused. True when the row was appended."""
    path = Path(path)
    with file_lock(path.with_name(f".{path.name}.lock")):
        if path.is_file():
            try:
                old = _checked_table(path)
            except DamagedFileError as err:
                old = _repair_table(path, err)
            if key in old and str(row[key]) in set(old[key].astype(str)):
                return False
        _append_row(path, row)
    return True


def _append_row(path: Path, row: dict) -> None:
    old = pd.DataFrame(columns=RESULT_COLUMNS)
    if path.is_file():
        try:
            old = _checked_table(path)
        except DamagedFileError as err:
            old = _repair_table(path, err)
    new = pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old) else pd.DataFrame([row])
    atomic_write_text(path, new.to_csv(index=False))


def summarize(table: pd.DataFrame | str | os.PathLike, by: Iterable[str] = ("dataset", "method"),
              metrics: Sequence[str] = ("base", "new")) -> pd.DataFrame:
    """The per-seed summary: for each group of ``by``, the mean and sample std (ddof=1, NaN for one seed) over
    seeds of every column in ``metrics`` (``<metric>`` and ``<metric>_std``), the number of runs, and ``hm``, the
    harmonic mean of the *mean* base and new accuracies (see docs/protocol.md#metrics). A table with a
    ``train_classes`` column is also grouped by it, so oracle (all-class) runs never mix with base-to-new runs."""
    df = read_results(table) if not isinstance(table, pd.DataFrame) else table
    by = list(by)
    if "train_classes" in df and "train_classes" not in by:
        df, by = df.assign(train_classes=df["train_classes"].fillna("base")), by + ["train_classes"]
    aggs = {}
    for m in metrics:
        aggs[m], aggs[f"{m}_std"] = (m, "mean"), (m, "std")
    out = df.groupby(by, sort=False).agg(**aggs, runs=(metrics[0], "size")).reset_index()
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base"], out["new"])]
    return out


def average_over_datasets(summary: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Across datasets: average base and new first, then HM (docs/protocol.md#metrics)."""
    out = summary.groupby(by, sort=False).agg(base=("base", "mean"), new=("new", "mean")).reset_index()
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base"], out["new"])]
    return out


def format_mean_std(mean: float | None, std: float | None = None) -> str:
    """``"82.10 ± 1.20"``; just ``"82.10"`` without a spread (std None or NaN: one seed); ``"–"`` without a mean."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "–"
    if std is None or (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.2f}"
    return f"{mean:.2f} ± {std:.2f}"


def mean_std(values: Iterable[float]) -> str:
    """Per-seed ``values`` as :func:`format_mean_std` of their mean and sample std (None and NaN are skipped)."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return format_mean_std(None)
    return format_mean_std(statistics.mean(vals), statistics.stdev(vals) if len(vals) > 1 else None)


def seed_table(results: dict) -> pd.DataFrame:
    """``{method: [metrics per seed]}`` -> one row per method: base/new as mean ± std over seeds, and the HM of
    the mean base and new accuracies (the protocol's HM, docs/protocol.md#metrics)."""
    s = summarize(pd.DataFrame([{"method": name, **m} for name, runs in results.items() for m in runs]), ("method",))
    return pd.DataFrame({"method": s["method"], "seeds": s["runs"],
                         "base": [format_mean_std(m, sd) for m, sd in zip(s["base"], s["base_std"])],
                         "new": [format_mean_std(m, sd) for m, sd in zip(s["new"], s["new_std"])],
                         "HM (of means)": [round(h, 2) for h in s["hm"]]})


def history_frame(history: Iterable[dict]) -> pd.DataFrame:
    """A run's per-epoch history (as :func:`dpclab.train.fit` stores it) as a DataFrame, with ``hm`` when the
    history has base and new accuracy."""
    df = pd.DataFrame(list(history))
    if {"base", "new"} <= set(df.columns):
        df["hm"] = [harmonic_mean(b, n) for b, n in zip(df["base"], df["new"])]
    return df


def top_predictions(logits: torch.Tensor, classnames: list[str] | tuple[str, ...], k: int = 3) -> list[str]:
    """``"name (p%)"`` strings of the ``k`` most probable classes for each row of ``logits``."""
    probs = logits.float().softmax(-1)
    p, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [", ".join(f"{classnames[j]} ({100 * q:.0f}%)" for q, j in zip(pr.tolist(), ix.tolist()))
            for pr, ix in zip(p, idx)]
