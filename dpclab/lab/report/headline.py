"""The reproducibility report's headline: what each plug-in changes over its own base method, here and in its
paper, and whether they agree, judged against the noise: paired 95 % intervals with two or more seeds, the shipped
benchmark's paired spread with one (:func:`verdicts`). Notebook 06 shows it first and marks the output, and the
report's ``index.html`` copies it from the executed notebook (:func:`find_headline`).

The spread ships as package data (:data:`SPREAD_FILE`), regenerated from ``docs/benchmark`` with
``python -c "from dpclab.lab.report.headline import write_benchmark_spread as w; w('docs/benchmark')"``."""

from __future__ import annotations

import base64
import html
import json
import logging
import math
import statistics
from pathlib import Path

import pandas as pd

from dpclab.evaluate import harmonic_mean
from dpclab.io import DamagedFileError, atomic_write_text, read_json
from dpclab.lab.paper_numbers import PLUGIN_PAPER, baseline_of, dept_average, dpc_average
from dpclab.lab.targets import paired_interval

#: output metadata key that marks the headline among a notebook's outputs
HEADLINE_KEY = "dpclab_headline"
#: the shipped benchmark's paired spread per dataset (:func:`benchmark_spread` of ``docs/benchmark``; a test checks
#: they match), read by the one-seed verdicts: package data, so an installed wheel has it too
SPREAD_FILE = Path(__file__).with_name("benchmark_spread.json")
#: a one-seed Δ is called beyond noise when ``|Δ| > SPREAD_SDS × sd``, ``sd`` the sample std of one seed's paired
#: difference (plug-in minus its base run of the same seed) in the shipped benchmark: about 95 % of the seeds' paired
#: differences fall within ±2 sd of their mean
SPREAD_SDS = 2.0
#: the verdicts' words
AGREES, DIFFERS, NOISE, ONE_SEED, NO_PAPER = ("agrees", "differs", "within noise", "one seed: direction only",
                                              "no paper number")


def _sign(delta: float, tol: float = 0.05) -> str:
    return "↑" if delta > tol else ("↓" if delta < -tol else "=")


# ------------------------------------------------------------------------------------------ the benchmark's spread
def _doc_date(md: Path) -> str:
    """The ``- date: ...`` line of a benchmark's Markdown report (``benchmark.write_report``'s header), or ""."""
    if md.is_file():
        for line in md.read_text(encoding="utf-8").splitlines():
            if line.startswith("- date:"):
                return line.partition(":")[2].strip()
    return ""


def benchmark_spread(bench_dir: str | Path) -> dict:
    """The paired spread of each dataset in the benchmark tables ``bench_dir/*_gains.csv``
    (:func:`dpclab.lab.targets.paired_gains`: a DPC row minus the CoOp run of the same seed, base accuracy): per
    dataset, from the file with the most seeds for it, the largest sample std over its rows of the per-seed
    differences, with the file, the date of its report (``<name>.md``), the seeds and the rows. This is what
    :data:`SPREAD_FILE` holds (``write_benchmark_spread``)."""

    bench_dir = Path(bench_dir)
    out: dict[str, dict] = {}
    for path in sorted(bench_dir.glob("*_gains.csv")):
        gains = pd.read_csv(path)
        name = path.name[:-len("_gains.csv")]
        for dataset, part in gains.groupby("dataset", sort=True):
            if dataset == "average":
                continue
            diffs = {r.method: json.loads(r.diffs) for r in part.itertuples()}
            seeds = min(len(d) for d in diffs.values())
            if seeds < 2 or (dataset in out and out[dataset]["seeds"] >= seeds):
                continue
            out[dataset] = {"sd": round(max(statistics.stdev(d) for d in diffs.values()), 4), "seeds": seeds,
                            "rows": sorted(f"{m} - {b}" for m, b in zip(part["method"], part["baseline"])),
                            "metric": "base", "source": f"docs/benchmark/{path.name}",
                            "date": _doc_date(bench_dir / f"{name}.md")}
    return dict(sorted(out.items()))


def write_benchmark_spread(bench_dir: str | Path, path: str | Path = SPREAD_FILE) -> Path:
    """Write :func:`benchmark_spread` of ``bench_dir`` (``docs/benchmark``) to ``path`` (:data:`SPREAD_FILE`)."""

    atomic_write_text(Path(path), json.dumps(benchmark_spread(bench_dir), indent=1, ensure_ascii=False) + "\n")
    return Path(path)


def load_spread(path: str | Path = SPREAD_FILE) -> dict:
    """The shipped :data:`SPREAD_FILE` (``{}`` when it is missing: every one-seed verdict is then direction only; a
    damaged one is named in a log warning, never moved: it ships with the package)."""
    try:
        spread = read_json(path)
        if not isinstance(spread, dict):
            raise DamagedFileError(path, "not a JSON object")
        return spread
    except FileNotFoundError:
        return {}
    except DamagedFileError as err:
        logging.getLogger(__name__).warning("%s is damaged (%s); one-seed verdicts are direction only; reinstall "
                                            "dpclab to restore it", err.path, err.reason)
        return {}


def spread_threshold(datasets, spread: dict) -> float | None:
    """The one-seed threshold on the average over ``datasets``: ``SPREAD_SDS × sd`` of one dataset, and for several
    the sd of their mean (independent datasets: sqrt(Σ sd²) / k); None when one of them is not in the benchmark."""
    sds = [spread[d]["sd"] for d in datasets if d in spread]
    if not sds or len(sds) < len(list(datasets)):
        return None
    return SPREAD_SDS * math.sqrt(sum(s * s for s in sds)) / len(sds)


# ------------------------------------------------------------------------------------------------------ the verdicts
def _per_seed(runs: pd.DataFrame, label: str) -> pd.DataFrame:
    """``label``'s base / new per seed, averaged over the datasets (seeds that every dataset of it has), and the HM
    of that seed's averages."""

    r = runs[runs["method"] == label]
    complete = r.groupby("seed")["dataset"].nunique()
    r = r[r["seed"].isin(complete[complete == r["dataset"].nunique()].index)]
    per = r.groupby("seed")[["base", "new"]].mean()
    per["hm"] = [harmonic_mean(b, n) for b, n in zip(per["base"], per["new"])]
    return per


def _verdict(d: float, low: float, high: float, n: int, paper: float | None, threshold: float | None) -> str:
    if n >= 2:
        exact = low == high == d  # the same difference on every seed (DPC's new classes: exactly 0, by design)
        if not (low > 0 or high < 0 or exact):
            return NOISE
    elif threshold is None or abs(d) <= threshold:
        return ONE_SEED
    if paper is None:
        return NO_PAPER
    return AGREES if _sign(d) == _sign(paper) else DIFFERS


def verdicts(runs: pd.DataFrame, backend: str, spread: dict | None = None) -> pd.DataFrame:
    """Three rows per plug-in row of ``runs`` (one row per dataset x method label x seed: ``Setup.grid`` /
    :func:`dpclab.lab.benchmark.run_matrix`), indexed (method, vs, seeds, Δ): its change in base, new and HM over its
    own base row ``vs`` (:func:`dpclab.lab.paper_numbers.baseline_of`), averaged over the datasets, here and in its
    paper, and a verdict that knows its noise.

    Here, Δ is the mean over seeds of the paired differences (the plug-in's run minus its base run of the same seed;
    HM: of each seed's HM); with two or more seeds its paired 95 % t interval
    (:func:`dpclab.lab.targets.paired_interval`) follows, and the verdict is "agrees" / "differs" (with the paper's
    direction) only when the interval excludes 0 or the difference is the same on every seed (DPC's new classes:
    exactly 0, as in its paper), else "within noise". With one seed it is "one seed: direction only" unless ``|Δ|``
    exceeds the paired spread of the shipped benchmark on these datasets (:func:`spread_threshold` of ``spread``,
    default :func:`load_spread`)."""
    spread = load_spread() if spread is None else spread
    threshold = spread_threshold(sorted(runs["dataset"].unique()), spread)
    papers = {"DPC": dpc_average().set_index("method"), "DePT": dept_average().set_index("method")}
    labels = list(dict.fromkeys(runs["method"].astype(str)))
    rows = []
    for m in labels:
        plugin = m.partition("+")[2]
        b = baseline_of(m) if plugin else None
        if not plugin or b not in labels:
            continue
        ours, base = _per_seed(runs, m), _per_seed(runs, b)
        seeds = sorted(set(ours.index) & set(base.index))
        if not seeds:
            continue
        paper = papers.get(PLUGIN_PAPER.get(plugin.partition("[")[0], ""), pd.DataFrame())
        paper_base = m.partition("+")[0]
        for metric, label in (("base", "base"), ("new", "new"), ("hm", "HM")):
            diffs = [float(ours.loc[s, metric] - base.loc[s, metric]) for s in seeds]
            d, low, high = paired_interval(diffs)
            ci = "" if len(seeds) < 2 else f" [{low:+.2f}, {high:+.2f}]"
            p = None
            if m in paper.index and paper_base in paper.index:
                p = float(paper.loc[m, metric] - paper.loc[paper_base, metric])
            rows.append({"method": m, "vs": b, "seeds": len(seeds), "Δ": label,
                         f"here ({backend})": f"{_sign(d)} {d:+.2f}{ci}",
                         "paper": "–" if p is None else f"{_sign(p)} {p:+.2f}",
                         "verdict": _verdict(d, low, high, len(seeds), p, threshold)})
    index = ["method", "vs", "seeds", "Δ"]
    return pd.DataFrame(rows, columns=[*index, f"here ({backend})", "paper", "verdict"]).set_index(index)


def verdict_note(runs: pd.DataFrame, spread: dict | None = None) -> str:
    """What the verdicts of :func:`verdicts` on ``runs`` rest on, in one paragraph: the seeds, the interval or the
    benchmark spread (which dataset, file and date), or why a one-seed Δ is direction only."""
    spread = load_spread() if spread is None else spread
    datasets = sorted(runs["dataset"].unique())
    n = int(runs["seed"].nunique())
    if n >= 2:
        return (f"{n} seeds: each Δ here is the mean of the paired per-seed differences (a plug-in's run minus its "
                f"base run of the same seed) with its paired 95 % t interval; \"{AGREES}\" / \"{DIFFERS}\" (with "
                f"the paper's direction) only where the interval excludes 0 or the difference is the same on every "
                f"seed, else \"{NOISE}\".")
    threshold = spread_threshold(datasets, spread)
    if threshold is None:
        missing = [d for d in datasets if d not in spread]
        return (f"One seed: no interval, and the shipped benchmark measured no paired spread on {', '.join(missing)}"
                f", so every Δ is \"{ONE_SEED}\". Run two or more seeds (-p seeds \"1 2 3\") for verdicts.")
    where = "; ".join(f"{d}: sd {spread[d]['sd']:.2f} of one seed's {spread[d]['metric']} difference, the largest of "
                      f"its {len(spread[d]['rows'])} DPC rows against CoOp over {spread[d]['seeds']} seeds, "
                      f"{spread[d]['source']}, run {spread[d]['date']}" for d in datasets)
    return (f"One seed: no interval. A Δ is \"{AGREES}\" / \"{DIFFERS}\" only where |Δ| > {threshold:.2f}, "
            f"{SPREAD_SDS:g} sd of a paired difference measured in the shipped benchmark ({where}); else "
            f"\"{ONE_SEED}\". Run two or more seeds (-p seeds \"1 2 3\") for paired intervals.")


def headline_html(table: pd.DataFrame, caption: str) -> str:
    """The headline as an HTML fragment: a caption and the table (a plug-in's rows share its index cells)."""
    return (f'<div class="dpclab-headline"><p>{html.escape(caption)}</p>'
            + table.to_html(classes="dpclab-headline-table", border=0, escape=True, index=True, sparsify=True)
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


__all__ = ["verdicts", "verdict_note", "benchmark_spread", "write_benchmark_spread", "load_spread",
           "spread_threshold", "SPREAD_FILE", "SPREAD_SDS",
           "headline_html", "show_headline", "find_headline", "csv_link", "HEADLINE_KEY"]
