"""What the notebooks share: turning the ``parameters`` cell into runs, and a few display helpers.

Every notebook starts with the same parameters cell (papermill overrides it with ``-p key value``)::

    backend = "auto"        # "embedded" (tiny CLIP + generated world) | "open_clip" (real CLIP) | "auto"
    model = "dpclab-tiny"   # open_clip model name, e.g. "ViT-B-16"
    pretrained = "embedded" # open_clip tag ("openai"), checkpoint path, "embedded"
    data_root = None        # folder holding the datasets (CoOp layout); None = data/world (embedded)
    dataset = None          # None = the embedded default / "eurosat" on real CLIP; "a,b" for several
    shots = 16
    seeds = "1 2 3"         # a list, or a string "1 2 3" / "[1, 2, 3]" (what `-p seeds ...` gives)
    epochs = None           # None = each method's protocol default (scaled down in quick mode)
    device = "auto"
    quick = False           # a fast smoke run: few epochs, one seed, coarse grids
    interactive = True      # widgets and progress bars; the report runs with False

and then calls :func:`setup` with them. The returned :class:`Setup` builds :class:`~dpclab.pipeline.RunConfig`
objects and runs them through :func:`dpclab.pipeline.run`: the notebooks hold no experiment logic of their own.
"""

from __future__ import annotations

import ast
import logging
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from .backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED
from .evaluate import format_mean_std, mean_std, summarize  # noqa: F401 - mean_std: the notebooks call nb.mean_std

log = logging.getLogger(__name__)

#: the keys every notebook's ``parameters`` cell defines (tests/test_notebooks.py checks them)
PARAMETER_KEYS = ("backend", "model", "pretrained", "data_root", "dataset", "shots", "seeds", "epochs", "device",
                  "quick", "interactive")
#: the embedded world is written here when missing
EMBEDDED_DATA_ROOT = "data/world"
#: the dataset used on real CLIP when none is given
REAL_DEFAULT_DATASET = "eurosat"
#: the world dataset used on the embedded backend when none is given (one with a clear base-new trade-off)
EMBEDDED_DEFAULT_DATASET = "world_tint"
#: quick mode trains each method for ``max(QUICK_MIN_EPOCHS, default // QUICK_EPOCH_DIVISOR)`` epochs at most
QUICK_EPOCH_DIVISOR = 10
QUICK_MIN_EPOCHS = 2


def parse_seeds(seeds) -> list[int]:
    """``[1, 2]``, ``"1 2"``, ``"1,2"``, ``"[1, 2]"`` or ``3`` -> a list of ints (papermill ``-p`` passes strings)."""
    if isinstance(seeds, int) and not isinstance(seeds, bool):
        return [seeds]
    if isinstance(seeds, str):
        text = seeds.strip()
        if text.startswith(("[", "(")):
            seeds = ast.literal_eval(text)
        else:
            seeds = [s for s in text.replace(",", " ").split() if s]
    try:
        out = [int(s) for s in seeds]
    except (TypeError, ValueError) as err:
        raise ValueError(f"seeds must be integers, e.g. seeds='1 2 3' or [1, 2, 3]; got {seeds!r}") from err
    if not out:
        raise ValueError("seeds is empty; give at least one seed, e.g. seeds='1'.")
    return out


def parse_datasets(dataset) -> list[str]:
    """``"a"``, ``"a,b"``, ``"a b"`` or a list -> list of dataset names."""
    if isinstance(dataset, str):
        return [d for d in dataset.replace(",", " ").split() if d]
    return [str(d) for d in dataset]


def project_root(start: str | os.PathLike | None = None) -> Path:
    """The repository root when run from it or from ``notebooks/`` (Jupyter starts kernels in the notebook's folder)."""
    here = Path(start or os.getcwd()).resolve()
    for cand in (here, here.parent):
        if (cand / "notebooks").is_dir() and (cand / "dpclab").is_dir():
            return cand
    return here


def _resolve_backend(backend: str, pretrained: str) -> str:
    if backend in (None, "", "auto"):
        return "embedded" if str(pretrained) == EMBEDDED_PRETRAINED else "open_clip"
    if backend not in ("embedded", "open_clip"):
        raise ValueError(f"backend must be 'embedded', 'open_clip' or 'auto', not {backend!r}.")
    return backend


def ensure_world(data_root: str | os.PathLike, datasets: Sequence[str]) -> None:
    """Write the embedded world's datasets that are missing under ``data_root`` (deterministic, a few seconds);
    :func:`dpclab.data.world.ensure_world` (locked, stamped with the generator version)."""
    from .data.world import ensure_world as write_missing_world

    write_missing_world(data_root, datasets)


@dataclass
class Setup:
    """The resolved parameters of a notebook, and the runs they describe."""

    backend: str
    model: str
    pretrained: str
    data_root: str
    datasets: list[str]
    shots: int
    seeds: list[int]
    epochs: int | None
    device: str
    quick: bool
    interactive: bool
    runs_dir: str = "runs"
    cache_dir: str = "data/cache"
    figures_dir: str = "figures"
    _experiments: dict = field(default_factory=dict, repr=False)

    @property
    def dataset(self) -> str:
        """The first (main) dataset."""
        return self.datasets[0]

    @property
    def progress(self) -> bool:
        return self.interactive

    @property
    def label(self) -> str:
        """How results are labelled: which backend produced them."""
        if self.backend == "embedded":
            return f"embedded backend ({self.model}, generated world)"
        return f"open_clip backend ({self.model} / {self.pretrained})"

    def backbone(self):
        from .pipeline import cached_backbone

        return cached_backbone(self.model, str(self.pretrained), self.device)

    def epochs_for(self, default: int) -> int:
        """The epochs actually trained for a method whose protocol default is ``default``."""
        if self.epochs is not None:
            return int(self.epochs)
        if self.quick:
            return min(default, max(QUICK_MIN_EPOCHS, default // QUICK_EPOCH_DIVISOR))
        return default

    def train_overrides(self, method: str) -> tuple[dict, dict]:
        """(train, base_train) overrides for ``method``: epochs from the ``epochs``/``quick`` parameters."""
        from .methods import PLUGINS, get_method, parse_method

        if self.epochs is None and not self.quick:
            return {}, {}  # the protocol defaults: the same run directories as `python -m dpclab train`
        base_name, plugin = parse_method(method)
        base_default = get_method(base_name).train.get("epochs", 200)
        if plugin is None:
            return {"epochs": self.epochs_for(base_default)}, {}
        spec = PLUGINS[plugin]
        plug_default = {**spec.train, **spec.train_by_base.get(base_name, {})}.get("epochs", 10)
        base_train = {"epochs": self.epochs_for(base_default)} if spec.two_step else {}
        return {"epochs": self.epochs_for(plug_default)}, base_train

    def config(self, method: str, seed: int | None = None, dataset: str | None = None, **overrides):
        """A :class:`~dpclab.pipeline.RunConfig` for ``method`` with this notebook's parameters.

        ``overrides`` are RunConfig fields; ``train``/``base_train`` dicts are merged over the epoch settings.
        """
        from .methods import get_method
        from .pipeline import RunConfig

        train, base_train = self.train_overrides(method)
        if not get_method(method).trainable:
            train = {}
        fields = dict(method=method, dataset=dataset or self.dataset, data_root=self.data_root, model=self.model,
                      pretrained=str(self.pretrained), shots=self.shots, seed=self.seeds[0] if seed is None else seed,
                      device=self.device, cache_dir=self.cache_dir, runs_dir=self.runs_dir,
                      results=str(Path(self.runs_dir) / "results.csv"), progress=self.progress)
        fields["train"] = {**train, **overrides.pop("train", {})}
        fields["base_train"] = {**base_train, **overrides.pop("base_train", {})}
        return RunConfig(**{**fields, **overrides})

    def effective_epochs(self, method: str) -> dict:
        """The epochs ``method`` really trains with these parameters: ``{"epochs": n}`` plus ``"step1_epochs"``
        for two-step plug-ins (DPC)."""
        from dataclasses import replace

        from .methods import PLUGINS, parse_method
        from .pipeline import train_config

        cfg = self.config(method)
        out = {"epochs": train_config(cfg).epochs}
        base, plugin = parse_method(method)
        if plugin is not None and PLUGINS[plugin].two_step:
            out["step1_epochs"] = train_config(replace(cfg, method=base, train=cfg.base_train)).epochs
        return out

    def experiment(self, seed: int | None = None, dataset: str | None = None, train_classes: str = "base"):
        """The (memoised) :class:`~dpclab.pipeline.Experiment` of one dataset and few-shot seed."""
        from .pipeline import Experiment

        cfg = self.config("zeroshot", seed, dataset, train_classes=train_classes)
        key = (cfg.dataset, cfg.seed, train_classes)
        if key not in self._experiments:
            self._experiments[key] = Experiment.prepare(cfg, self.backbone())
        return self._experiments[key]

    def run(self, method: str, seed: int | None = None, dataset: str | None = None,
            on_epoch: Callable | None = None, **overrides):
        """Train (or reuse a finished run) and evaluate ``method``: :func:`dpclab.pipeline.run`."""
        from .pipeline import run

        cfg = self.config(method, seed, dataset, **overrides)
        exp = self.experiment(cfg.seed, cfg.dataset, cfg.train_classes)
        return run(cfg, experiment=exp, on_epoch=on_epoch)

    def run_with_curve(self, method: str, seed: int | None = None, dataset: str | None = None, **overrides):
        """Like :meth:`run`, evaluating base and new accuracy after every epoch (kept in ``result.history``).

        A finished run that was trained without these per-epoch evaluations is retrained once (deterministic,
        so its final numbers do not change)."""
        cfg = self.config(method, seed, dataset, **overrides)
        exp = self.experiment(cfg.seed, cfg.dataset, cfg.train_classes)
        res = self.run(method, seed, dataset, on_epoch=lambda epoch, m: exp.evaluate(m), **overrides)
        if res.history and "base" not in res.history[-1]:
            res = self.run(method, seed, dataset, on_epoch=lambda epoch, m: exp.evaluate(m),
                           **{**overrides, "if_exists": "overwrite"})
        return res

    def figure_path(self, name: str) -> Path:
        """``figures/<name>.png`` (the folder is created)."""
        path = Path(self.figures_dir) / f"{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def save(self, fig, name: str) -> Path:
        """Save a matplotlib figure under ``figures/`` and return its path."""
        path = self.figure_path(name)
        fig.savefig(path, dpi=120, bbox_inches="tight")
        return path


def setup(backend: str = "auto", model: str = EMBEDDED_MODEL, pretrained: str = EMBEDDED_PRETRAINED,
          data_root: str | None = None, dataset=None, shots: int = 16, seeds="1 2 3", epochs: int | None = None,
          device: str = "auto", quick: bool = False, interactive: bool = True, chdir: bool = True,
          quick_seeds: int = 1, threads: int | None = None) -> Setup:
    """Validate a notebook's parameters and resolve the defaults of its backend.

    * ``backend="auto"`` is ``embedded`` for ``pretrained="embedded"``, else ``open_clip``.
    * Embedded: ``data_root`` defaults to ``data/world`` and missing world datasets are written there.
      Real CLIP: ``data_root`` is required (the folder with ``eurosat/``, ``dtd/``... in the CoOp layout).
    * ``quick`` keeps the first ``quick_seeds`` seeds and scales epochs down (see :meth:`Setup.epochs_for`).
    * ``threads``: torch CPU threads. The embedded model's matrices are too small for threads to pay off, and on a
      busy machine several threads spin-wait on each other (measured: 40x slower with 2 threads than with 1 on a
      loaded 2-core box), so the tiny embedded model on CPU uses 1 unless told otherwise.
    * With ``chdir``, a kernel started in ``notebooks/`` moves to the repository root so ``runs/``, ``data/``
      and ``figures/`` are the same folders the CLI uses.
    """
    if chdir:
        root = project_root()
        if root != Path.cwd().resolve():
            os.chdir(root)
    backend = _resolve_backend(backend, pretrained)
    if threads is None and model == EMBEDDED_MODEL and str(device) in ("auto", "cpu"):
        threads = 1
    if threads:
        import torch

        torch.set_num_threads(int(threads))
    if backend == "embedded" and (model != EMBEDDED_MODEL or str(pretrained) != EMBEDDED_PRETRAINED):
        raise ValueError(f"backend='embedded' runs model={EMBEDDED_MODEL!r}, pretrained='embedded'; got "
                         f"model={model!r}, pretrained={pretrained!r}. For real CLIP use backend='open_clip' "
                         f"(or 'auto').")
    if dataset in (None, ""):
        dataset = EMBEDDED_DEFAULT_DATASET if backend == "embedded" else REAL_DEFAULT_DATASET
    datasets = parse_datasets(dataset)
    if data_root in (None, ""):
        if backend != "embedded":
            raise ValueError("data_root is required on real CLIP: pass the folder holding the CoOp-layout datasets, "
                             "e.g. papermill -p data_root ~/data (it should contain eurosat/, dtd/, ...).")
        data_root = EMBEDDED_DATA_ROOT
    data_root = str(Path(data_root).expanduser())
    if backend == "embedded":
        ensure_world(data_root, datasets)
    seeds = parse_seeds(seeds)
    if quick:
        seeds = seeds[:max(1, quick_seeds)]
    if shots is None or int(shots) < 1:
        raise ValueError(f"shots must be a positive integer (16 in the papers), got {shots!r}.")
    if epochs is not None and int(epochs) < 0:
        raise ValueError(f"epochs must be >= 0 or None (method default), got {epochs!r}.")
    return Setup(backend=backend, model=model, pretrained=str(pretrained), data_root=data_root, datasets=datasets,
                 shots=int(shots), seeds=seeds, epochs=None if epochs is None else int(epochs), device=device,
                 quick=bool(quick), interactive=bool(interactive))


# --------------------------------------------------------------------------------------------- display helpers
def class_table(exp) -> "pd.DataFrame":
    """One row per class: its label, whether it is a base or a new class, and its hand-crafted prompt."""
    import pandas as pd

    rows = []
    for split in ("base", "new"):
        task = exp.tasks[split]
        for i, name in enumerate(task.classnames):
            rows.append({"split": split, "label in split": i, "class": name, "prompt": task.template.format(name)})
    return pd.DataFrame(rows)


def image_grid(items: Sequence, classnames: Sequence[str], per_class: int = 4, max_classes: int = 12,
               title: str | None = None, size: float = 0.9, pad: int = 2):
    """A figure showing ``per_class`` images (``Datum`` items) for each of the first ``max_classes`` classes, one
    row per class, labelled with the class name. The images are tiled into one array (one ``imshow``: fast)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from .data.features import load_image

    by_class: dict[int, list] = {}
    for d in items:
        if d.label < max_classes and len(by_class.setdefault(d.label, [])) < per_class:
            by_class[d.label].append(d)
    labels = sorted(by_class)
    if not labels:
        raise ValueError("image_grid got no items to show.")
    first = np.asarray(load_image(by_class[labels[0]][0].impath).convert("RGB"))
    h, w = first.shape[:2]
    tile = np.full((len(labels) * (h + pad) - pad, per_class * (w + pad) - pad, 3), 255, dtype=np.uint8)
    for r, y in enumerate(labels):
        for c, d in enumerate(by_class[y]):
            img = load_image(d.impath).convert("RGB")
            if img.size != (w, h):
                img = img.resize((w, h))
            tile[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = np.asarray(img)
    fig, ax = plt.subplots(figsize=(per_class * size + 1.8, len(labels) * size + 0.4))
    ax.imshow(tile, interpolation="nearest")
    ax.set_yticks([r * (h + pad) + h / 2 for r in range(len(labels))], [classnames[y] for y in labels], fontsize=8)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if title:
        ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return fig


def prediction_grid(items: Sequence, classnames: Sequence[str], logits, n: int = 8, cols: int = 4,
                    title: str | None = None, size: float = 1.6):
    """``n`` images spread evenly over ``items`` (so over the classes) with their true class and the top
    prediction from ``logits`` [len(items), C] (green when right, red when wrong)."""
    import matplotlib.pyplot as plt

    from .data.features import load_image

    n = min(n, len(items))
    picks = [round(i * (len(items) - 1) / max(n - 1, 1)) for i in range(n)]
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(cols * size, rows * (size + 0.45)), squeeze=False)
    pred = logits.argmax(-1).tolist()
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        d, p = items[picks[i]], pred[picks[i]]
        ax.imshow(load_image(d.impath).convert("RGB"), interpolation="nearest")
        ok = p == d.label
        ax.set_title(f"true: {classnames[d.label]}\npred: {classnames[p]}", fontsize=7,
                     color="#1a7f37" if ok else "#cf222e")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def hard_negative_grid(anchors: Sequence, negatives: Sequence[Sequence[int]], train_items: Sequence,
                       classnames: Sequence[str], max_negatives: int = 7, size: float = 1.15):
    """One row per anchor image: the anchor, then one training image of each hard negative class DHNO chose for
    it (``negatives[i]``: class labels, e.g. from :meth:`dpclab.methods.dpc.DPC.build_batch`)."""
    import matplotlib.pyplot as plt

    from .data.features import load_image

    example = {}
    for d in train_items:
        example.setdefault(d.label, d)
    cols = 1 + min(max_negatives, max((len(n) for n in negatives), default=0))
    fig, axes = plt.subplots(len(anchors), cols, figsize=(cols * size, len(anchors) * (size + 0.3)), squeeze=False)
    for r, (anchor, negs) in enumerate(zip(anchors, negatives)):
        for c in range(cols):
            ax = axes[r][c]
            ax.axis("off")
            d = anchor if c == 0 else (example.get(negs[c - 1]) if c - 1 < len(negs) else None)
            if d is None:
                continue
            ax.imshow(load_image(d.impath).convert("RGB"), interpolation="nearest")
            label = f"anchor:\n{classnames[d.label]}" if c == 0 else f"neg {c}:\n{classnames[d.label]}"
            ax.set_title(label, fontsize=7, color="black" if c == 0 else "#cf222e")
    fig.tight_layout()
    return fig


def omega_summary(grid, omega_b: float, omega_n: float) -> str:
    """A one-line Markdown read-out of :func:`dpclab.omega.omega_view` (the ω sliders' callback text)."""
    from .omega import omega_view

    v = omega_view(grid, omega_b, omega_n)
    return (f"ω_b = {v['omega_b']:.2f}, ω_n = {v['omega_n']:.2f} → base **{v['base']:.2f}**, "
            f"new **{v['new']:.2f}**, HM **{v['hm']:.2f}**")


def omega_sliders(grid, step: float | None = None):
    """Two ipywidgets sliders (ω_b, ω_n) over the grid's values, showing :func:`omega_summary` live.

    The callback only reads the precomputed grid (no model call). Errors inside widget callbacks do not fail a
    headless run, so notebooks also call :func:`omega_summary` directly once."""
    import ipywidgets as widgets
    from IPython.display import Markdown, display

    omegas = list(grid.omegas)
    step = step or (min(b - a for a, b in zip(omegas, omegas[1:])) if len(omegas) > 1 else 0.05)
    default_b, default_n = grid.meta.get("default", [0.2, 0.0])
    make = lambda name, v: widgets.FloatSlider(value=v, min=omegas[0], max=omegas[-1], step=step,  # noqa: E731
                                               description=name, continuous_update=True, readout_format=".2f")
    sb, sn = make("ω_b", default_b), make("ω_n", default_n)
    out = widgets.Output()

    def update(change=None):
        with out:
            out.clear_output(wait=True)
            display(Markdown(omega_summary(grid, sb.value, sn.value)))

    sb.observe(update, "value")
    sn.observe(update, "value")
    update()
    return widgets.VBox([widgets.HBox([sb, sn]), out])


def top_predictions(logits, classnames: Sequence[str], k: int = 3) -> list[str]:
    """``"name (p%)"`` strings of the ``k`` most probable classes for each row of ``logits``."""
    probs = logits.float().softmax(-1)
    p, idx = probs.topk(min(k, probs.shape[-1]), dim=-1)
    return [", ".join(f"{classnames[j]} ({100 * q:.0f}%)" for q, j in zip(pr.tolist(), ix.tolist()))
            for pr, ix in zip(p, idx)]


def show_figure(fig, dpi: int = 100) -> None:
    """Display a matplotlib Figure as a PNG in the notebook. Figures built with the object API
    (``matplotlib.figure.Figure()``, as :mod:`dpclab.plots` does) have no pyplot manager to show them."""
    import io

    from IPython.display import Image, display

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    display(Image(data=buf.getvalue()))


def curve_frame(history: Sequence[dict]) -> "pd.DataFrame":
    """Per-epoch history (as stored by :func:`dpclab.train.fit`) as a DataFrame, with HM when base/new exist."""
    import pandas as pd

    from .evaluate import harmonic_mean

    df = pd.DataFrame(list(history))
    if {"base", "new"} <= set(df.columns):
        df["hm"] = [harmonic_mean(b, n) for b, n in zip(df["base"], df["new"])]
    return df


def plot_curves(curves: dict, reference: dict | None = None, metrics: Sequence[str] = ("base", "new", "hm")):
    """Accuracy against epoch: one panel per metric, one line per method (``curves``: name -> :func:`curve_frame`
    output); ``reference`` (e.g. zero-shot metrics) is drawn as a dashed horizontal line."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.2), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name, df in curves.items():
            ax.plot(df["epoch"] + 1, df[metric], label=name)
        if reference is not None:
            ax.axhline(reference[metric], ls="--", color="gray", label="zero-shot")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric} accuracy (%)" if metric != "hm" else "HM (%)")
        ax.set_title({"base": "base classes", "new": "new classes", "hm": "harmonic mean"}.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_tradeoff(curves: dict, reference: dict | None = None, points: dict | None = None, ax=None):
    """The base-new plane: each method's trajectory over epochs (``curves``: name -> frame with base/new columns,
    drawn as a moving average over 1/20 of the epochs; the dot is the last epoch's actual value),
    extra single ``points`` (name -> metrics), the ``reference`` point, and dotted iso-HM contours."""
    import matplotlib.pyplot as plt
    import numpy as np

    if ax is None:
        _, ax = plt.subplots(figsize=(5.2, 4.6))
    xs = [v for df in curves.values() for v in df["base"]] + [p["base"] for p in (points or {}).values()]
    ys = [v for df in curves.values() for v in df["new"]] + [p["new"] for p in (points or {}).values()]
    if reference is not None:
        xs.append(reference["base"])
        ys.append(reference["new"])
    lo = max(0.0, min(xs + ys) - 5)
    hi = min(100.0, max(xs + ys) + 5)
    grid = np.linspace(lo, hi, 200)
    b, n = np.meshgrid(grid, grid)
    hm = 2 * b * n / np.maximum(b + n, 1e-9)
    cs = ax.contour(b, n, hm, levels=8, colors="lightgray", linestyles=":", linewidths=0.8)
    ax.clabel(cs, fontsize=6, fmt="HM %.0f")
    for name, df in curves.items():
        window = max(1, len(df) // 20)  # per-epoch accuracies on small test sets are noisy: a moving average
        smooth = df[["base", "new"]].rolling(window, min_periods=1).mean()
        label = f"{name} (over epochs{f', moving average of {window}' if window > 1 else ''})"
        line, = ax.plot(smooth["base"], smooth["new"], "-", alpha=0.7, label=label)
        ax.plot(df["base"].iloc[-1], df["new"].iloc[-1], "o", color=line.get_color())
    # one colour per base method, one marker per plug-in, so a dozen methods stay distinguishable
    bases = list(dict.fromkeys(name.partition("+")[0] for name in (points or {})))
    palette = plt.get_cmap("tab10")
    markers = {"": "s", "dpc": "^", "dept": "D"}
    for name, p in (points or {}).items():
        base, _, plugin = name.partition("+")
        ax.plot(p["base"], p["new"], markers.get(plugin, "o"), color=palette(bases.index(base) % 10), label=name)
    if reference is not None:
        ax.plot(reference["base"], reference["new"], "*", ms=12, color="black", label="zero-shot")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)
    ax.set_xlabel("base accuracy (%)")
    ax.set_ylabel("new accuracy (%)")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.2)
    return ax.figure


def untrained_coop_vs_zeroshot(exp, backbone, words: str = "a photo of a") -> "pd.DataFrame":
    """Untrained CoOp (context initialised from ``words``) next to zero-shot CLIP with the template
    ``"<words> {}."`` on the base and new test sets: accuracy of each and the largest logit difference (0 up to
    float rounding: the two are the same model)."""
    from dataclasses import replace

    import pandas as pd

    from .evaluate import accuracy, predict_logits
    from .pipeline import build_method

    coop = build_method("coop", backbone, {"ctx_init": words})
    zeroshot = build_method("zeroshot", backbone)
    rows = []
    for split in ("base", "new"):
        task = replace(exp.tasks[split], template=words + " {}.")
        ex = exp.test_examples(split, "features")
        zs_logits, coop_logits = predict_logits(zeroshot, ex, task), predict_logits(coop, ex, task)
        rows.append({"split": split, f"zero-shot '{task.template}'": accuracy(zs_logits, ex.labels),
                     f"CoOp untrained, ctx = '{words}'": accuracy(coop_logits, ex.labels),
                     "max |logit difference|": float((zs_logits - coop_logits).abs().max())})
    return pd.DataFrame(rows)


def seed_table(results: dict) -> "pd.DataFrame":
    """``{method: [metrics per seed]}`` -> one row per method: base/new/HM as mean ± std over seeds, and the HM of
    the mean base and new accuracies (the protocol's HM)."""
    import pandas as pd

    s = summarize(pd.DataFrame([{"method": name, **m} for name, runs in results.items() for m in runs]), ("method",))
    return pd.DataFrame({"method": s["method"], "seeds": s["runs"],
                         "base": [format_mean_std(m, sd) for m, sd in zip(s["base"], s["base_std"])],
                         "new": [format_mean_std(m, sd) for m, sd in zip(s["new"], s["new_std"])],
                         "HM (of means)": [round(h, 2) for h in s["hm"]]})


__all__ = ["PARAMETER_KEYS", "Setup", "setup", "parse_seeds", "parse_datasets", "ensure_world", "project_root",
           "class_table", "image_grid", "prediction_grid", "hard_negative_grid",
           "omega_summary", "omega_sliders", "top_predictions", "curve_frame", "untrained_coop_vs_zeroshot", "show_figure", "plot_curves", "plot_tradeoff", "mean_std",
           "seed_table"]
