"""The reproducibility report's headline: what each plug-in changes over its own base method, here and in its
paper, and whether the directions agree. Notebook 06 shows it first and marks the output, and the report's
``index.html`` copies it from the executed notebook (:func:`find_headline`)."""

from __future__ import annotations

import base64
import html
from pathlib import Path

import pandas as pd

from dpclab.lab.paper_numbers import PLUGIN_PAPER, baseline_of, dept_average, dpc_average

#: output metadata key that marks the headline among a notebook's outputs
HEADLINE_KEY = "dpclab_headline"


def _sign(delta: float, tol: float = 0.05) -> str:
    return "↑" if delta > tol else ("↓" if delta < -tol else "=")


def directions(average: pd.DataFrame, backend: str) -> pd.DataFrame:
    """One row per plug-in of ``average`` (columns method, base, new, hm: the average-over-datasets rows of
    :func:`dpclab.lab.benchmark.summary_table`): its change in base, new and HM over its own base method here and in
    its paper (:mod:`dpclab.lab.paper_numbers`), each with an arrow, and whether the HM direction agrees."""
    ours = average.set_index("method")
    papers = {"DPC": dpc_average().set_index("method"), "DePT": dept_average().set_index("method")}
    rows = []
    for m in ours.index:
        plugin = m.partition("+")[2]
        if not plugin or baseline_of(m) not in ours.index:
            continue
        b = baseline_of(m)
        row = {"method": m, "vs": b}
        paper = papers.get(PLUGIN_PAPER.get(plugin, ""), pd.DataFrame())
        paper_base = m.partition("+")[0]
        for metric, label in (("base", "base"), ("new", "new"), ("hm", "HM")):
            d = float(ours.loc[m, metric] - ours.loc[b, metric])
            row[f"Δ{label} here ({backend})"] = f"{_sign(d)} {d:+.2f}"
            if m in paper.index and paper_base in paper.index:
                p = float(paper.loc[m, metric] - paper.loc[paper_base, metric])
                row[f"Δ{label} paper"] = f"{_sign(p)} {p:+.2f}"
            else:
                row[f"Δ{label} paper"] = "–"
        dh = float(ours.loc[m, "hm"] - ours.loc[b, "hm"])
        if m in paper.index and paper_base in paper.index:
            ph = float(paper.loc[m, "hm"] - paper.loc[paper_base, "hm"])
            row["HM direction"] = "agrees" if _sign(dh) == _sign(ph) else "differs"
        else:
            row["HM direction"] = "no paper number"
        rows.append(row)
    return pd.DataFrame(rows).set_index("method") if rows else pd.DataFrame(columns=["method"]).set_index("method")


def headline_html(table: pd.DataFrame, caption: str) -> str:
    """The headline as an HTML fragment: a caption and the table."""
    return (f'<div class="dpclab-headline"><p>{html.escape(caption)}</p>'
            + table.reset_index().to_html(classes="dpclab-headline-table", border=0, escape=True, index=False)
            + "</div>")


def show_headline(table: pd.DataFrame, caption: str) -> None:
    """Display the headline in a notebook, marked so that ``index.html`` can copy it."""
    from IPython.display import HTML, display

    display(HTML(headline_html(table, caption)), metadata={HEADLINE_KEY: True})


def find_headline(nb) -> str | None:
    """The HTML of the headline output of an executed notebook, or None."""
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.get("metadata", {}).get(HEADLINE_KEY) and "text/html" in out.get("data", {}):
                text = out["data"]["text/html"]
                return "".join(text) if isinstance(text, list) else text
    return None


def csv_link(path: str | Path, text: str | None = None) -> str:
    """A Markdown link that downloads the CSV file ``path`` from the page itself (its bytes as a data: URI), so it
    works in JupyterLab and in the HTML report wherever they are opened."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<a download="{html.escape(path.name)}" href="data:text/csv;base64,{data}">{html.escape(text or path.name)}</a>'


__all__ = ["directions", "headline_html", "show_headline", "find_headline", "csv_link", "HEADLINE_KEY"]
