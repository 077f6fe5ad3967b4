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
