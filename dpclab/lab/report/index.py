"""``reports/index.html``: the report's front page. The headline (notebook 06's plug-ins beside the papers', each
verdict judged against its noise: :func:`dpclab.lab.report.headline.verdicts`), the real wall time, one row per
notebook (titled, linked, status, time, the failing cell and warnings), the figures as thumbnails with their alt
text, and the provenance (:mod:`dpclab.lab.report.provenance`)."""

from __future__ import annotations

import html
import json
import os
import time
from pathlib import Path
from typing import Sequence

from PIL import Image

from dpclab.lab.report.console import clock
from dpclab.lab.report.headline import find_headline

#: the machine-readable provenance record next to index.html (:mod:`dpclab.lab.report.provenance` writes it)
PROVENANCE_FILE = "provenance.json"
THUMB_DIR = "thumbs"
THUMB_WIDTH = 320

_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#1f2328}
td,th{padding:4px 10px;border-bottom:1px solid #ddd;vertical-align:top;text-align:left}
.ok{color:#1a7f37;font-weight:bold}.failed{color:#cf222e;font-weight:bold}.num{text-align:right}
.figs{display:flex;flex-wrap:wrap;gap:14px}.figs figure{width:330px;margin:0;border:1px solid #d0d7de;
border-radius:6px;padding:6px}.figs img{width:100%;max-height:260px;object-fit:contain}.figs figcaption{font-size:85%;color:#57606a}
.dpclab-headline-table td,.dpclab-headline-table th{font-family:monospace;font-size:85%;white-space:nowrap}
.dpclab-headline{overflow-x:auto}.dpclab-headline p{color:#57606a}.note{color:#57606a}"""


def notebook_title(nb, name: str) -> str:
    """A notebook's title: its first Markdown heading (``# 03 · ω: ...``), else its file stem."""
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("#"):
                    return line.lstrip("#").strip() or name
    return name


def figure_alt(path: Path) -> str:
    """A figure's alt text: the PNG's ``Description`` (``plots.save_figure`` writes it), else its name."""
    try:
        with Image.open(path) as im:
            return str(im.info.get("Description") or path.stem)
    except OSError:
        return path.stem


def thumbnail(path: Path, out_dir: Path, width: int = THUMB_WIDTH) -> Path:
    """A ``width``-pixel-wide copy of a figure under ``<out_dir>/thumbs/``."""
    thumb = out_dir / THUMB_DIR / path.name
    thumb.parent.mkdir(parents=True, exist_ok=True)
    with Image.open(path) as im:
        im = im.convert("RGB")
        im.thumbnail((width, width * 4))
        im.save(thumb, format="PNG", optimize=True)
    return thumb


def report_figures(figures_dir: Path, since: float | None = None) -> list[Path]:
    """The figures in ``figures_dir`` (written at or after ``since``, a time.time(), when given), by name."""
    if not figures_dir.is_dir():
        return []
    return sorted(p for p in figures_dir.glob("*.png") if since is None or p.stat().st_mtime >= since - 1)


def _headline(results) -> str:
    import nbformat

    for r in results:
        if r.executed.is_file():
            found = find_headline(nbformat.read(str(r.executed), as_version=4))
            if found:
                link = f'<a href="{html.escape(r.html.name)}">{html.escape(r.name)}</a>' if r.html else r.name
                return f"<h2>Headline</h2>{found}<p class='note'>From {link}; the full tables are there.</p>"
    return ("<h2>Headline</h2><p class='note'>No headline: the reproducibility report (notebook 06) did not run "
            "or did not finish in this report.</p>")


def _notebook_rows(results) -> str:
    import nbformat

    rows = []
    for r in results:
        title = r.name
        if r.executed.is_file():
            try:
                title = notebook_title(nbformat.read(str(r.executed), as_version=4), r.name)
            except Exception:  # noqa: BLE001 - an unreadable notebook keeps its file name
                pass
        label = html.escape(title)
        link = f'<a href="{html.escape(r.html.name)}">{label}</a>' if r.html else label
        rows.append(f"<tr><td>{link}<br><code>{html.escape(r.name)}</code></td><td class='{r.status}'>{r.status}"
                    f"</td><td class='num'>{r.seconds:.1f} s</td><td>{html.escape(r.error)}"
                    + "".join(f"<div>warning: {html.escape(w)}</div>" for w in r.warnings) + "</td></tr>")
    return "".join(rows)


def write_index(results: Sequence, out_dir: Path, parameters: dict, figures_dir: str | Path = "figures",
                wall_seconds: float | None = None, provenance: dict | None = None,
                since: float | None = None, training: dict | None = None) -> Path:
    """Write ``<out_dir>/index.html`` for the notebooks' ``results`` (:class:`~dpclab.lab.report.run.NotebookResult`).

    ``wall_seconds`` is the report's real wall time (notebooks run side by side: it is not their sum);
    ``since``: show only figures written since then (this report's); ``training``: the training phase's record
    (:func:`~dpclab.lab.report.command.train_plan`), when the runs were trained before the notebooks."""
    out_dir = Path(out_dir)
    summed = sum(r.seconds for r in results)
    wall = summed if wall_seconds is None else wall_seconds
    figs = []
    for p in report_figures(Path(figures_dir), since):
        alt = figure_alt(p)
        thumb = thumbnail(p, out_dir)
        figs.append(f'<figure><a href="{html.escape(os.path.relpath(p, out_dir))}"><img src="'
                    f'{html.escape(os.path.relpath(thumb, out_dir))}" alt="{html.escape(alt)}"></a>'
                    f"<figcaption><b>{html.escape(p.stem)}</b>: {html.escape(alt)}</figcaption></figure>")
    prov = ""
    if provenance is not None:
        prov = ("<h2>Provenance</h2><table>" + "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in provenance_rows(provenance))
            + f"</table><p class='note'>Machine-readable: <a href='{PROVENANCE_FILE}'>{PROVENANCE_FILE}</a>.</p>")
    params = ", ".join(f"{k}={v!r}" for k, v in parameters.items())
    timing = (f"Wall time <b>{clock(wall)}</b> ({wall:.1f} s; the notebooks' own times add up to {summed:.1f} s, "
              f"several run side by side).")
    if training and training.get("jobs"):
        timing += (f" Of that, {training['seconds']:.1f} s trained the notebooks' {training['jobs']} runs first "
                   f"({training.get('summary', '')}); the notebooks reused them.")
    ok = sum(r.ok for r in results)
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>dpclab report</title><style>{_STYLE}</style></head>
<body><h1>dpclab report</h1>
<p>{ok}/{len(results)} notebooks ran without error. {timing}
Generated {time.strftime('%Y-%m-%d %H:%M:%S')}.<br>
Parameters: <code>{html.escape(params)}</code></p>
{_headline(results)}
<h2>Notebooks</h2>
<table><tr><th>notebook</th><th>status</th><th>wall time</th><th>error / warnings</th></tr>
{_notebook_rows(results)}
</table>
<h2>Figures</h2>
<div class="figs">{''.join(figs) or '<p>none</p>'}</div>
{prov}
</body></html>
"""
    index = out_dir / "index.html"
    index.write_text(page, encoding="utf-8")
    return index


def provenance_rows(record: dict) -> list[tuple[str, str]]:
    """The record as (label, text) rows for the index page."""
    code = record["dpclab"]
    commit = "no git checkout" if code["commit"] is None else \
        f"{code['commit'][:12]}{' (dirty: uncommitted changes)' if code['dirty'] else ' (clean)'}"
    v = record["versions"]
    w = record["weights"]
    rows = [("dpclab", f"{code['version']}, commit {commit}"), ("command", record["command"]),
            ("parameters", json.dumps(record["parameters"], default=str)),
            ("versions", f"Python {v['python']}, torch {v['torch']}, open_clip {v['open_clip']}, "
                         f"CUDA {v['cuda'] or 'none'} ({'available' if v['cuda_available'] else 'not used'})"),
            ("device", f"{record['device']}; precision {record['precision']}"),
            ("weights", f"{w['model']} / {w['pretrained']}: " + (f"sha256 {w['sha256']} ({w['file']})" if w['sha256']
                                                                 else w.get("note", "unknown"))),
            ("seeds", f"{record['seeds']}, {record['shots']} shots" + (" (quick mode)" if record["quick"] else ""))]
    for name, d in record["datasets"].items():
        if "error" in d:
            rows.append((f"dataset {name}", d["error"]))
            continue
        split = f"split file sha256 {d['split_sha256']}" if d["split_sha256"] else \
            f"listing fingerprint {d['listing_fingerprint']}"
        counts = ", ".join(f"{k} {n}" for k, n in d["images"].items())
        rows.append((f"dataset {name}", f"{d['classes']} classes; images {counts}; {split}"))
    return rows


__all__ = ["write_index", "figure_alt", "thumbnail", "report_figures", "provenance_rows", "PROVENANCE_FILE"]
