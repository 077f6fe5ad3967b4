"""The estimate checked against a real run: a reduced version of the report end to end (the real pipeline, synthetic
images of a dataset's shape), its wall time next to the projection of the same runs."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from ..data.shapes import DatasetShape
from ..grid import PlannedRun
from ..synthetic import write_shape_dataset
from .measure import MeasureConfig
from .model import DeviceTimings, project


def check_end_to_end(shape: DatasetShape, methods: Sequence[str], epochs: int, timings: DeviceTimings,
                     mcfg: MeasureConfig, workdir: Path, shots: int = 16, log=print) -> dict:
    """Run ``methods`` (seed 1, ``epochs`` epochs) through the real pipeline on a synthetic dataset of ``shape``;
    return the measured wall time next to the projection of the same runs."""
    from ..backbones import load_clip
    from ..grid import GridSource, run_config
    from ..pipeline import Experiment, run

    spec = write_shape_dataset(workdir / "data", shape, shots, mcfg.image_px)
    src = GridSource(model=mcfg.model, pretrained=str(mcfg.pretrained), data_root=str(workdir / "data"), shots=shots,
                     epochs=epochs, device=mcfg.device, cache_dir=str(workdir / "cache"), runs_dir=str(workdir / "runs"))
    plan = [PlannedRun("check", spec.name, m, 1) for m in methods]
    projected = project(plan, {spec.name: shape}, timings, shots=shots, epochs=epochs, notebooks=1)
    t0 = time.perf_counter()
    bb = load_clip(mcfg.model, mcfg.pretrained, mcfg.device)
    measured_runs = {}
    exp = None
    for planned in plan:
        m = planned.method
        cfg = replace(run_config(planned, src), results=None)
        t = time.perf_counter()
        exp = exp or Experiment.prepare(cfg, bb, specs={spec.name: spec})
        run(cfg, experiment=exp)
        measured_runs[m] = time.perf_counter() - t
    wall = time.perf_counter() - t0
    per_run = {r.run.method: r.total for r in projected.runs}
    for m in methods:
        log(f"  {m:16s} measured {measured_runs[m]:7.1f} s   projected {per_run.get(m, 0.0):7.1f} s")
    ratio = wall / projected.total
    log(f"end to end ({shape.name} shape, {shape.classes} classes, {shape.test} test images, {epochs} epochs, "
        f"{len(methods)} methods): measured {wall:.1f} s, projected {projected.total:.1f} s "
        f"(measured / projected = {ratio:.2f})")
    return {"measured_s": wall, "projected_s": projected.total, "ratio": ratio, "per_run_measured": measured_runs,
            "per_run_projected": per_run}

