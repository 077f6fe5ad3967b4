"""Published numbers (ViT-B/16, base-to-new, 16 shots, mean of 3 seeds) to set our results in context.

Copied from the papers (DPC, CVPR 2025; DePT, CVPR 2024); the protocol behind them is docs/protocol.md. These are *the
papers' numbers on real CLIP and the 11 CoOp datasets*; the notebooks always show them next to, never instead of,
numbers computed here, and label which backend computed ours. ``approx=True`` marks values read off a plot.
"""

from __future__ import annotations

import pandas as pd


DPC = "DPC (CVPR 2025), avg of 11 datasets"
DEPT = "DePT (CVPR 2024), avg of 11 datasets"

#: (method, base, new, HM) - DPC Table 1, average over the 11 datasets
DPC_AVERAGE = [
    ("coop", 81.98, 68.84, 74.84), ("coop+dpc", 85.15, 68.84, 76.13),
    ("maple", 83.52, 73.31, 78.08), ("maple+dpc", 85.93, 73.31, 79.12),
    ("promptsrc", 83.45, 74.78, 78.87), ("promptsrc+dpc", 86.10, 74.78, 80.04),
    ("promptkd", 86.86, 80.55, 83.59), ("promptkd+dpc", 87.55, 80.55, 83.91),
]
#: (dataset, CoOp base, CoOp new, CoOp+DPC base) - DPC keeps new accuracy unchanged (omega_n = 0)
DPC_COOP_PER_DATASET = [
    ("imagenet", 76.41, 68.85, 77.72), ("caltech101", 97.55, 94.65, 98.58), ("oxford_pets", 95.06, 97.60, 95.80),
    ("stanford_cars", 75.69, 70.14, 81.13), ("oxford_flowers", 96.96, 68.37, 98.86), ("food101", 90.49, 91.47, 91.15),
    ("fgvc_aircraft", 37.33, 24.24, 45.56), ("sun397", 80.99, 74.10, 82.81), ("dtd", 80.09, 49.88, 84.61),
    ("eurosat", 87.60, 51.62, 93.40), ("ucf101", 83.66, 66.31, 87.02),
]
#: (configuration, base, new, HM) - DPC ablation on CoOp, average of 11 datasets
DPC_ABLATION = [
    ("CoOp (step 1 only)", 81.98, 68.84, 74.84),
    ("two-step training only", 82.69, 68.39, 74.86),
    ("+ DHNO", 84.28, 64.12, 72.83),
    ("+ DHNO + weighting", 85.15, 65.88, 74.29),
    ("weighting + decoupling, no DHNO", 82.23, 68.84, 74.94),
    ("full DPC (DHNO + weighting + decoupling)", 85.15, 68.84, 76.13),
]
#: (omega, accuracy, approx) - DPC omega sweeps on CoOp: base accuracy against omega_b, new against omega_n
DPC_OMEGA_B_BASE = [(0.0, 81.98, False), (0.1, 84.7, True), (0.2, 85.15, False), (0.5, 84.85, True),
                    (1.0, 84.28, False)]
DPC_OMEGA_N_NEW = [(0.0, 68.84, False), (0.1, 67.35, True), (0.2, 65.88, False)]
#: (method, base, new, HM) - DePT Table 1, average over the 11 datasets
DEPT_AVERAGE = [
    ("coop", 81.50, 69.77, 75.18), ("coop+dept", 83.66, 71.82, 77.29),
    ("cocoop", 81.18, 72.18, 76.42), ("cocoop+dept", 83.80, 72.89, 77.97),
    ("kgcoop", 80.93, 73.88, 77.25), ("kgcoop+dept", 83.62, 75.04, 79.10),
    ("maple", 83.54, 73.76, 78.35), ("maple+dept", 84.85, 74.82, 79.52),
]


def _frame(rows, columns, source: str) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=columns)
    df["source"] = source
    return df


def dpc_average() -> pd.DataFrame:
    return _frame(DPC_AVERAGE, ["method", "base", "new", "hm"], DPC)


def dept_average() -> pd.DataFrame:
    return _frame(DEPT_AVERAGE, ["method", "base", "new", "hm"], DEPT)


def dpc_ablation() -> pd.DataFrame:
    return _frame(DPC_ABLATION, ["configuration", "base", "new", "hm"], DPC + ", CoOp")


def dpc_coop_per_dataset() -> pd.DataFrame:
    df = _frame(DPC_COOP_PER_DATASET, ["dataset", "coop_base", "coop_new", "dpc_base"], "DPC (CVPR 2025), CoOp")
    return df


def dpc_omega_sweeps() -> pd.DataFrame:
    rows = [("omega_b", w, "base", a, ap) for w, a, ap in DPC_OMEGA_B_BASE]
    rows += [("omega_n", w, "new", a, ap) for w, a, ap in DPC_OMEGA_N_NEW]
    return _frame(rows, ["knob", "omega", "metric", "accuracy", "approx"], DPC + ", CoOp")


def paper_rows(methods) -> pd.DataFrame:
    """The published average rows (both papers) for the given method names, e.g. ``["coop", "coop+dpc"]``."""
    df = pd.concat([dpc_average(), dept_average()], ignore_index=True)
    return df[df["method"].isin(list(methods))].reset_index(drop=True)


#: which paper publishes each plug-in's numbers
PLUGIN_PAPER = {"dpc": "DPC", "dept": "DePT"}


def comparison(ours: pd.DataFrame, backend: str) -> pd.DataFrame:
    """Numbers computed here beside the published ones, one row per method of ``ours`` (columns method, base, new,
    hm: e.g. the average-over-datasets rows of :func:`dpclab.lab.benchmark.summary_table`); ``backend`` labels where
    ours come from. Columns: ours base/new/HM; each paper's base/new/HM where it reports the method; for a plug-in,
    its HM gain over its base method, ours and the paper's (the paper of that plug-in)."""
    ours = ours.set_index("method")
    papers = {"DPC": dpc_average().set_index("method"), "DePT": dept_average().set_index("method")}
    rows = []
    for m in ours.index:
        base_m, plugin = baseline_of(m), m.partition("+")[2]
        row = {"method": m, f"ours base ({backend})": ours.loc[m, "base"], "ours new": ours.loc[m, "new"],
               "ours HM": ours.loc[m, "hm"]}
        for src, p in papers.items():
            if m in p.index:
                row[f"{src} paper base"], row[f"{src} paper new"], row[f"{src} paper HM"] = p.loc[m, ["base", "new",
                                                                                                      "hm"]]
        if plugin:
            base_hm = ours.loc[base_m, "hm"] if base_m in ours.index else float("nan")
            row["ours ΔHM vs base"] = ours.loc[m, "hm"] - base_hm
            p = papers.get(PLUGIN_PAPER.get(plugin, ""), pd.DataFrame())
            paper_base = m.partition("+")[0]
            if m in p.index and paper_base in p.index:
                row["paper ΔHM vs base"] = p.loc[m, "hm"] - p.loc[paper_base, "hm"]
        rows.append(row)
    return pd.DataFrame(rows).set_index("method")




#: label of CoOp+DePT's own CoOp baseline in the reproducibility report (16 random tokens, 10 epochs)
DEPT_COOP_BASELINE = "coop (DePT setting)"
#: labels of KgCoOp+DePT's and MaPLe+DePT's own baselines: KgCoOp and MaPLe as DePT's configs train them
DEPT_KGCOOP_BASELINE = "kgcoop (DePT setting)"
DEPT_MAPLE_BASELINE = "maple (DePT setting)"

#: DePT's baselines (Koorye/DePT configs.py l.79-99 ``kgcoop``, l.101-121 ``maple``): 10 epochs, batch 4, lr 0.0035,
#: KgCoOp at W = 2 (configs/trainers/KgCoOp/vit_b16_ep10_ctxv1_bs4_lr35.yaml l.3, l.17-18, l.38;
#: configs/trainers/ExtrasLinearProbeMaPLe/vit_b16_c2_ep10_batch4_2ctx.yaml l.3, l.17-18)
DEPT_TRAIN = {"epochs": 10, "batch_size": 4, "lr": 0.0035}

#: RunConfig overrides that run a method as its paper's released code does (docs/fidelity.md), by method name; a key
#: "+<plug-in>" applies to that plug-in on every base. DPC runs as JREion/DPC does (``mode="released"``). Each DePT row
#: takes the prompt setting of the released configs (Koorye/DePT): CoOp+DePT sets no context there, so CoOp's defaults
#: apply, 16 randomly initialised tokens; KgCoOp/CoCoOp/MaPLe+DePT set what dpclab's defaults are. Precision (fp16
#: there) is the run's own knob.
RELEASED_SETTINGS: dict[str, dict] = {
    "+dpc": {"method_cfg": {"mode": "released"}},
    "coop+dept": {"base_method_cfg": {"n_ctx": 16, "ctx_init": None}},
    "cocoop+dept": {}, "kgcoop+dept": {}, "maple+dept": {},
    # CoOp+DePT's own CoOp baseline: CoOp's train.py defaults (16 random tokens), 10 epochs, batch 4, lr 0.0035 as DePT
    DEPT_COOP_BASELINE: {"method_cfg": {"n_ctx": 16, "ctx_init": None}, "train": dict(DEPT_TRAIN)},
    # KgCoOp+DePT's and MaPLe+DePT's own baselines, as DePT's configs.py trains them
    DEPT_KGCOOP_BASELINE: {"method_cfg": {"weight": 2.0}, "train": dict(DEPT_TRAIN)},
    DEPT_MAPLE_BASELINE: {"train": dict(DEPT_TRAIN)},
}

#: method config of a method (and of a plug-in's base: ``base_method_cfg``) in its released setting on real CLIP only
#: (a larger model the embedded backend does not have). PromptKD's released teacher is a ViT-L/14 PromptSRC
#: (zhengli97/PromptKD configs/trainers/PromptSRC/vit_l14_c2_ep20_batch8_4+4ctx.yaml l.4 batch 8, l.18 lr 0.005,
#: l.30 ViT-L/14); offline the teacher stays the run's own backbone (docs/protocol.md#promptkd)
REAL_CLIP_SETTINGS: dict[str, dict] = {
    "promptkd": {"teacher_model": "ViT-L-14-quickgelu", "teacher_pretrained": "openai",
                 "teacher_train": {"batch_size": 8, "lr": 0.005}},
}

#: rows compared with a baseline of their own instead of their plain base: row -> (baseline label, its method)
RELEASED_BASELINES: dict[str, tuple[str, str]] = {"coop+dept": (DEPT_COOP_BASELINE, "coop"),
                                                  "kgcoop+dept": (DEPT_KGCOOP_BASELINE, "kgcoop"),
                                                  "maple+dept": (DEPT_MAPLE_BASELINE, "maple")}


def _released(method: str, real_clip: bool = False) -> dict | None:
    entry = RELEASED_SETTINGS.get(method)
    if entry is None and "+" in method:
        entry = RELEASED_SETTINGS.get("+" + method.partition("+")[2])
    out = None if entry is None else {k: dict(v) for k, v in entry.items()}
    base, _, plugin = method.partition("+")
    real = REAL_CLIP_SETTINGS.get(base) if real_clip else None
    if real:
        key = "base_method_cfg" if plugin else "method_cfg"
        out = out or {}
        out[key] = {**real, **out.get(key, {})}
    return out


def released_setting(method: str) -> dict:
    """:data:`RELEASED_SETTINGS` of ``method`` (its own entry, else its plug-in's; a copy), for
    ``RunConfig(**common, **released_setting(m))``. A row label such as :data:`DEPT_COOP_BASELINE` works too."""
    found = _released(method)
    if found is None:
        raise ValueError(f"There is no released setting for {method!r}; known: {sorted(RELEASED_SETTINGS)} "
                         f"({DEPT_COOP_BASELINE!r}, {DEPT_KGCOOP_BASELINE!r}, {DEPT_MAPLE_BASELINE!r} are DePT's "
                         f"10-epoch baselines).")
    return found


def reproduction_runs(methods, real_clip: bool = False) -> dict[str, tuple[str, dict]]:
    """How the reproducibility report runs each method to reproduce the papers: ``{label: (method, RunConfig
    overrides)}``: each method with its :func:`released_setting` (none: the defaults; ``real_clip``: with
    :data:`REAL_CLIP_SETTINGS` too, PromptKD's ViT-L/14 teacher), and after a row of :data:`RELEASED_BASELINES` its
    own baseline (docs/fidelity.md)."""
    runs: dict[str, tuple[str, dict]] = {}
    for m in methods:
        runs[m] = (m, _released(m, real_clip) or {})
        if m in RELEASED_BASELINES:
            label, method = RELEASED_BASELINES[m]
            runs[label] = (method, released_setting(label))
    return runs


#: the bases each plug-in's paper reports (the reproducibility report runs these pairs)
PAPER_BASES = {"dpc": ("coop", "maple", "promptsrc", "promptkd"), "dept": ("coop", "cocoop", "kgcoop", "maple")}


def baseline_of(label: str) -> str:
    """The row a plug-in's row is compared with in the reproducibility report."""
    return RELEASED_BASELINES[label][0] if label in RELEASED_BASELINES else label.partition("+")[0]


__all__ = ["dpc_average", "dept_average", "dpc_ablation", "dpc_coop_per_dataset", "dpc_omega_sweeps", "paper_rows",
           "comparison", "reproduction_runs", "baseline_of", "DEPT_COOP_BASELINE", "PAPER_BASES",
           "RELEASED_SETTINGS", "RELEASED_BASELINES", "released_setting", "DEPT_KGCOOP_BASELINE", "DEPT_MAPLE_BASELINE",
           "DEPT_TRAIN", "REAL_CLIP_SETTINGS"]
