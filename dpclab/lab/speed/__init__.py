"""``python -m dpclab speed``: how much faster dpclab trains CoOp than a reference-style loop, measured side by side.

The *reference-style* loop is written here the way the CoOp/Dassl code does it: every step loads and augments the
images from disk, runs them through the frozen image encoder, builds the full 77-token prompts and runs the whole
text transformer on them. dpclab computes the same loss (checked on one batch, printed as "faithfulness") but

* encodes each augmented view of the training images once, as a cached feature tensor (``data/features.py``);
* truncates the text sequences after the last end-of-text token (``text.py``; exact under the causal mask).

So one dpclab epoch costs "train on cached features" when the view is cached (re-runs, other methods and plug-ins
on the same seed, ``n_views < epochs``), and "train + encode one fresh view" in the faithful default where every
epoch sees a fresh augmentation (``n_views = 0``). Both are reported as ratios to the reference epoch; ratios,
not absolute seconds, are the headline, because the absolute numbers depend on the machine and its load.

Also measured: DPC's step-2 epoch, the ω-slider update latency (``dpclab.omega``), the notebook suite's wall time
(``python -m dpclab report``), and peak memory per phase.

    python -m dpclab speed --quick                   # ~1 minute smoke run on a tiny model
    python -m dpclab speed                           # tiny/embedded model and a random-weight ViT-B-16
    python -m dpclab speed --model ViT-B-16:openai --classes 50 --shots 16 --device cuda
"""

from dpclab.lab.speed.cli import build_parser, config_from_args, main, parse_model, run_bench
from dpclab.lab.speed.config import SHAPE_METHODS, TINY_CONFIG, TINY_MODEL, BenchConfig, ModelCase, default_small_model, \
    register_tiny_model
from dpclab.lab.speed.coop import bench_coop, bench_dpc, bench_notebooks, bench_omega, faithfulness
from dpclab.lab.speed.profile import tower_profile
from dpclab.lab.speed.reference import ReferenceCoOp, reference_epoch, reference_step_time
from dpclab.lab.speed.report import Row, markdown, shapes_markdown, write_csv
from dpclab.lab.speed.shapes import CPU_MAX_CLASSES, ShapeCase, bench_shape, run_shapes, shape_cases

__all__ = ["build_parser", "config_from_args", "main", "parse_model", "run_bench", "SHAPE_METHODS", "TINY_CONFIG",
           "TINY_MODEL", "BenchConfig", "ModelCase", "default_small_model", "register_tiny_model", "bench_coop",
           "bench_dpc", "bench_notebooks", "bench_omega", "faithfulness", "tower_profile",
           "ReferenceCoOp", "reference_epoch", "reference_step_time", "Row", "markdown", "shapes_markdown",
           "write_csv", "CPU_MAX_CLASSES", "ShapeCase", "bench_shape", "run_shapes", "shape_cases"]
