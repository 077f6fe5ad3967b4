"""The estimate checked against a real run: a reduced version of the report end to end (the real pipeline, synthetic
images of a dataset's shape), its wall time next to the projection of the same runs."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from dpclab.backbones import load_clip
from dpclab.data.shapes import DatasetShape
from dpclab.lab.estimate.model import DeviceTimings, MeasureConfig
from dpclab.lab.estimate.price import project
from dpclab.lab.plan import PlannedRun, Scope
from dpclab.lab.synthetic import write_shape_dataset
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.source import Source


@dataclass(frozen=True)
class Check:
    """Measured and projected seconds, end to end and per run (by method)."""

    measured: float
    projected: float
    per_run_measured: dict = field(default_factory=dict)
    per_run_projected: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.measured / self.projected


def check_end_to_end(shape: DatasetShape, methods: Sequence[str], epochs: int, timings: DeviceTimings,
                     mcfg: MeasureConfig, workdir: Path, shots: int = 16, log=print) -> Check:
    """Run ``methods`` (seed 1, ``epochs`` epochs) through the real pipeline on a synthetic dataset of ``shape``
    in ``mcfg.precision``; return the measured wall time next to the projection of the same runs."""
    spec = write_shape_dataset(workdir / "data", shape, shots, mcfg.image_px)
    scope = Scope((spec.name,), (1,), epochs)
    plan = [PlannedRun("check", spec.name, m, 1, train=tuple(sorted(train.items())),
                       base_train=tuple(sorted(base_train.items())))
            for m in methods for train, base_train in [scope.train_overrides(m)]]
    src = Source(model=mcfg.model, pretrained=str(mcfg.pretrained or "random"), data_root=str(workdir / "data"),
                 shots=shots, precision=mcfg.precision, device=mcfg.device, cache_dir=str(workdir / "cache"),
                 runs_dir=str(workdir / "runs"), results=None)
    projected = project(plan, {spec.name: shape}, timings, shots=shots, notebooks=1)
    t0 = time.perf_counter()
    bb = load_clip(mcfg.model, mcfg.pretrained, mcfg.device, mcfg.precision)
    measured_runs = {}
    exp = None
    for planned in plan:
        cfg = planned.run_config(src, progress=False)
        t = time.perf_counter()
        exp = exp or Experiment.prepare(cfg, bb, specs={spec.name: spec})
        run(cfg, experiment=exp)
        measured_runs[planned.method] = time.perf_counter() - t
    out = Check(time.perf_counter() - t0, projected.total, measured_runs,
                {r.run.method: r.total for r in projected.runs})
    for m in methods:
        log(f"  {m:16s} measured {measured_runs[m]:7.1f} s   projected {out.per_run_projected.get(m, 0.0):7.1f} s")
    log(f"end to end ({shape.name} shape, {shape.classes} classes, {shape.test} test images, {epochs} epochs, "
        f"{len(methods)} methods, {mcfg.precision}): measured {out.measured:.1f} s, projected {out.projected:.1f} s "
        f"(measured / projected = {out.ratio:.2f})")
    return out


__all__ = ["Check", "check_end_to_end"]
