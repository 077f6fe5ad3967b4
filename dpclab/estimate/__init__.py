"""What the full report costs on this device, before launching it: ``python -m dpclab estimate``.

It times a few training steps and evaluation batches of every method the report runs, with the model's real shapes
(its weights are irrelevant to the time: ``--pretrained random`` needs no download) on synthetic images, at a few
class counts spanning the datasets', and prices the report's plan (``dpclab.grid.report_plan``: every notebook's
runs, the datasets' sizes from ``dpclab.data.shapes``) with this cost model, per run:

* training: ``epochs x steps x step(C_train)``, ``steps = train images // batch``; a step's time is measured on
  preloaded inputs, and pixel methods add the decode + augment time of their batch, divided over the DataLoader
  workers (``max(compute, decode / workers)``: workers decode while the model runs);
* feature caches (features-kind methods): each augmented view of a training set is encoded once per dataset, seed
  and class set (the first run that needs view ``v`` pays for it; later methods reuse it), the test set once per
  dataset;
* evaluation: base and new test sets in batches of 256 (``evaluate.predict_logits``), ``fixed(C) + B x
  per_image(C)`` per batch (pixel methods also decode); runs that plot curves (notebooks 01, 02) evaluate after
  every epoch; notebook 03 evaluates DPC on its 21-value omega grid;
* every notebook loads the backbone once.

Step and evaluation times are measured at a few class counts and interpolated linearly in between (the text
tower's cost grows with the number of class prompts). ``--check DATASET`` runs a reduced version end to end (real
pipeline, synthetic images of that dataset's shape) and compares the wall time with the projection.

    python -m dpclab estimate                                   # ViT-B-16 (random weights), 11 datasets, 3 seeds
    python -m dpclab estimate --quick --model small             # CPU smoke mode: embedded model, 2 class counts
    python -m dpclab estimate --quick --model small --check eurosat --check-epochs 2
"""

from .check import check_end_to_end
from .cli import build_parser, hours, main, summary
from .measure import MeasureConfig, measure, pick_class_counts
from .model import EVAL_BATCH, OMEGA_GRID_SIZE, Curve, DeviceTimings, MethodTimings, Projection, RunCost, project

__all__ = ["check_end_to_end", "build_parser", "hours", "main", "summary", "MeasureConfig", "measure",
           "pick_class_counts", "EVAL_BATCH", "OMEGA_GRID_SIZE", "Curve", "DeviceTimings", "MethodTimings",
           "Projection", "RunCost", "project"]
