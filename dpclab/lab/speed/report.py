"""The speed benchmark's rows and how they are written: CSV, and markdown tables (CoOp epochs, dataset shapes)."""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from dpclab.io import atomic_write_text


@dataclass(frozen=True)
class Row:
    section: str
    model: str
    metric: str
    value: float
    unit: str
    note: str = ""



def shapes_markdown(rows: Sequence[Row]) -> str:
    """One line per (model, method, shape): step times, epoch speed-ups, profile, peak memory."""
    def val(model, sec, metric):
        r = next((r for r in rows if r.model == model and r.section == sec and r.metric == metric), None)
        return r.value if r is not None else float("nan")

    lines = ["| shape | model, method | reference ms/step | dpclab ms/step | **speed-up fresh view** | speed-up cached "
             "view | dpclab step: image / text fwd / optimiser / rest (ms) | peak ref / dpclab (MiB) |",
             "|---|---|---|---|---|---|---|---|"]
    for sec, model in dict.fromkeys((r.section, r.model) for r in rows if r.section.startswith("shape:")):
        mem = "cuda" if any(r.metric.startswith("peak_cuda") for r in rows if r.model == model) else "rss"
        prof = " / ".join(f"{1000 * val(model, sec, 'profile_' + k):.1f}"
                          for k in ("image_forward", "text_forward", "optimizer", "rest"))
        note = next(r.note for r in rows if r.model == model and r.section == sec and r.metric == "dpclab_step")
        cached = val(model, sec, "speedup_cached_view")
        cached = "n/a (pixels)" if math.isnan(cached) else f"{cached:.1f}x"
        lines.append(f"| {note} | {model} | {1000 * val(model, sec, 'reference_step'):.1f} | "
                     f"{1000 * val(model, sec, 'dpclab_step'):.1f} | **{val(model, sec, 'speedup_fresh_view'):.1f}x** | "
                     f"{cached} | {prof} | "
                     f"{val(model, sec, f'peak_{mem}_reference'):.0f} / {val(model, sec, f'peak_{mem}_dpclab_train'):.0f} |")
    return "\n".join(lines) + "\n"


# -------------------------------------------------------------------------------------------------- output
def write_csv(rows: Sequence[Row], path: Path) -> None:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["section", "model", "metric", "value", "unit", "note"])
    for r in rows:
        w.writerow([r.section, r.model, r.metric, f"{r.value:.6g}", r.unit, r.note])
    atomic_write_text(path, buf.getvalue())


def markdown(rows: Sequence[Row], header: str) -> str:
    """A short table per model (speed-ups first), then the other sections."""
    def get(model, metric):
        return next((r for r in rows if r.model == model and r.metric == metric), None)

    lines = [header, "", "| model | workload | reference s/epoch | dpclab s/epoch (cached view) | + encode a view | "
             "**speed-up, cached view** | **speed-up, fresh view** | loss |diff| | peak RSS ref / dpclab (MiB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for model in dict.fromkeys(r.model for r in rows if r.section == "coop"):
        v = {k: get(model, k) for k in ("reference_epoch", "dpclab_epoch_cached", "dpclab_encode_view",
                                         "speedup_cached_view", "speedup_fresh_view", "faithfulness_loss_abs_diff",
                                         "peak_rss_reference", "peak_rss_dpclab_train")}
        lines.append(f"| {model} | {v['reference_epoch'].note} | {v['reference_epoch'].value:.3f} | "
                     f"{v['dpclab_epoch_cached'].value:.3f} | {v['dpclab_encode_view'].value:.3f} | "
                     f"**{v['speedup_cached_view'].value:.1f}x** | **{v['speedup_fresh_view'].value:.1f}x** | "
                     f"{v['faithfulness_loss_abs_diff'].value:.1e} | {v['peak_rss_reference'].value:.0f} / "
                     f"{v['peak_rss_dpclab_train'].value:.0f} |")
    other = [r for r in rows if r.section != "coop"]
    if other:
        lines += ["", "| section | model | metric | value | note |", "|---|---|---|---|---|"]
        lines += [f"| {r.section} | {r.model} | {r.metric} | {r.value:.4g} {r.unit} | {r.note} |" for r in other]
    return "\n".join(lines) + "\n"

