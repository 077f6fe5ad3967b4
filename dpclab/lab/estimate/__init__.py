"""What the full report costs on this device, before launching it: ``python -m dpclab estimate``.

It times a few training steps and evaluation batches of every method the report runs, with the model's real shapes
(its weights are irrelevant to the time: random weights need no download) in the report's precision, on synthetic
images, at a few class counts spanning the datasets', and prices the report's plan (every notebook's runs, 00-06,
including notebook 03's ω grid and 05's invariance study; the datasets' sizes from ``dpclab.data.shapes``):

* ``model.py`` -- the measured timings (per method, functions of the class count; flat below the smallest
  measured count, never below the smallest measured time);
* ``price.py`` -- the cost model (pure arithmetic; see its docstring): per run, per notebook, one process, and the
  wall time on N GPUs when the grid runs its dependency waves over them and the report does the rest;
* ``measuring.py`` -- the measuring (the real ``fit`` on a probe of a few batches, evaluation at two batch sizes, the
  frozen image encoder, JPEG decoding, peak memory);
* ``check.py`` -- ``--check DATASET``: a reduced version end to end (real pipeline, synthetic images of that
  dataset's shape) against its projection;
* ``cli.py`` -- the command line; it takes the report's parameters (``-p precision fp16 -p model ViT-B-16``,
  ``--quick``, as ``python -m dpclab report``; ``dpclab.lab.options``), plans with ``dpclab.lab.plan.report_plan`` and names
  the device and the precision in its output.

    python -m dpclab estimate                                   # ViT-B-16 (random weights), 11 datasets, 3 seeds
    python -m dpclab estimate -p precision fp16 --gpus 4        # the papers' precision, a 4-GPU node
    python -m dpclab estimate --short --model small             # CPU smoke mode: embedded model, 2 class counts
    python -m dpclab estimate --short --model small --check eurosat --check-epochs 2
    python -m dpclab estimate --quick                           # the report's quick mode (report --quick)
"""
