"""Does step 2's crop scale explain ‖P'-P‖ (released mode, world_tint)? Step 1 = the benchmark's CoOp run (crop
0.5-1, the world's protocol); step 2 trained with crop (0.5, 1) (dpclab) and with (0.08, 1) (Dassl's default, what the
released code's loader applies), everything else equal. Run as it was (2026-12-02): its /work/bench paths are that session's benchmark runs and
cache; point them at yours."""
import json, sys
from dpclab.source import Source
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig, step1_config, train_config
from dpclab.methods import resolve
from dpclab.data.features import build_transforms
from dpclab.lab.dpc_study import _prompt_distance
from dpclab.train import fit
import torch
torch.set_num_threads(1)
src = Source(runs_dir="/work/bench/runs", cache_dir="/work/bench/cache", results=None)
out = []
for seed in (1, 2, 3):
    cfg = RunConfig("coop+dpc", "world_tint", seed, source=src, method_cfg={"mode": "released"}, progress=False)
    for scale in ((0.5, 1.0), (0.08, 1.0)):
        step1 = run(step1_config(cfg, resolve(cfg.method)))  # a fresh step-1 method object (DPC wraps one only once)
        assert step1.reused, "step 1 should be the benchmark's CoOp run"
        exp = Experiment.prepare(cfg)
        bb = exp.backbone
        exp.transforms = build_transforms(bb.image_size, bb.mean, bb.std, crop_scale=scale)
        exp.train_transform_name = f"train-cropcheck{scale[0]:g}-{scale[1]:g}"
        exp.cache_dir = "/work/bench/crop/cache"
        m = resolve("coop+dpc").build(bb, {"mode": "released"}, len(exp.train_task.classnames), base_method=step1.method)
        fit(m, exp.train_examples(m.input_kind), exp.train_task, train_config(cfg, resolve(cfg.method)), None)
        met = exp.evaluate(m)
        row = {"seed": seed, "crop": scale, "dist": round(_prompt_distance(m), 3), "base": round(met["base"], 2),
               "new": round(met["new"], 2)}
        print(row, flush=True)
        out.append(row)
json.dump(out, open("/work/bench/crop/result.json", "w"), indent=1)
