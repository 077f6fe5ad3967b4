"""Accuracy, base/new/HM, the results table (appended atomically) and its multi-seed summary."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Iterable

import pandas as pd
import torch
from torch import nn

from .locking import file_lock
from .methods.base import Task
from .train import Examples


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


def read_results(path: str | os.PathLike) -> pd.DataFrame:
    """A results table; rows of tables written before the ``train_classes`` column (base-to-new runs only: oracle
    and transfer runs were not recorded then) read as ``train_classes="base"``."""
    df = pd.read_csv(path)
    if "train_classes" not in df:
        df.insert(min(5, len(df.columns)), "train_classes", "base")
    df["train_classes"] = df["train_classes"].fillna("base")
    return df


def append_result(path: str | os.PathLike, row: dict) -> None:
    """Append one row to a CSV results table atomically: readers see the old or the new file, never a torn one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(path.with_name(f".{path.name}.lock")):  # concurrent writers (parallel notebooks) lose no row
        _append_row(path, row)


def _append_row(path: Path, row: dict) -> None:
    old = pd.read_csv(path) if path.is_file() else pd.DataFrame(columns=RESULT_COLUMNS)
    new = pd.concat([old, pd.DataFrame([row])], ignore_index=True) if len(old) else pd.DataFrame([row])
    buf = io.StringIO()
    new.to_csv(buf, index=False)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def summarize(table: pd.DataFrame | str | os.PathLike, by: Iterable[str] = ("dataset", "method")) -> pd.DataFrame:
    """Mean ± std over seeds of base and new, and HM of the *means* (the protocol of SPEC §1). A table with a
    ``train_classes`` column is also grouped by it, so oracle (all-class) runs never mix with base-to-new runs."""
    df = read_results(table) if not isinstance(table, pd.DataFrame) else table
    by = list(by)
    if "train_classes" in df and "train_classes" not in by:
        df, by = df.assign(train_classes=df["train_classes"].fillna("base")), by + ["train_classes"]
    g = df.groupby(by, sort=False)
    out = g.agg(base=("base", "mean"), base_std=("base", "std"), new=("new", "mean"), new_std=("new", "std"),
                runs=("base", "size")).reset_index()
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base"], out["new"])]
    return out


def average_over_datasets(summary: pd.DataFrame, by: str = "method") -> pd.DataFrame:
    """Across datasets: average base and new first, then HM (SPEC §1)."""
    out = summary.groupby(by, sort=False).agg(base=("base", "mean"), new=("new", "mean")).reset_index()
    out["hm"] = [harmonic_mean(b, n) for b, n in zip(out["base"], out["new"])]
    return out
