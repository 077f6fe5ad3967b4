"""What the speed benchmark measures: the models and workloads (``ModelCase``), the whole run (``BenchConfig``), and
the tiny random-weight model used when the embedded checkpoint is not there."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from dpclab.backbones import EMBEDDED_MODEL, EMBEDDED_PRETRAINED, embedded_checkpoint, register_model_configs

#: a tiny open_clip architecture (random weights) for when the embedded checkpoint is not there
TINY_MODEL = "dpclab-bench-tiny"
TINY_CONFIG = {
    "embed_dim": 64,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
}
#: the methods compared with reference-style loops at the datasets' shapes: CoOp, KgCoOp, DPC step 2, MaPLe
SHAPE_METHODS = ("coop", "kgcoop", "coop+dpc", "maple")


# ------------------------------------------------------------------------------------------------ configuration
@dataclass(frozen=True)
class ModelCase:
    """One model to benchmark, with its own workload size (a ViT-B/16 on a CPU needs a smaller one)."""

    model: str
    pretrained: str | None
    classes: int
    shots: int
    batch_size: int
    epochs: int

    @property
    def label(self) -> str:
        return f"{self.model}:{self.pretrained or 'random'}"


@dataclass(frozen=True)
class BenchConfig:
    cases: list[ModelCase]
    device: str = "auto"
    seed: int = 1
    image_px: int = 96  # side of the generated images on disk (real datasets are larger: loading costs more there)
    dpc_epochs: int = 1
    notebooks: bool = True
    notebooks_quick: bool = True  # time `report --quick` (the CI smoke mode); False: the full suite
    out_csv: Path = Path("reports/speed/speed.csv")
    out_md: Path = Path("reports/speed/speed.md")
    workdir: Path | None = None  # data and caches; a temporary folder when None
    shapes: list = field(default_factory=list)  # ShapeCase: dataset shapes x SHAPE_METHODS vs reference loops
    shape_methods: tuple = SHAPE_METHODS
    shape_steps: int = 5
    coop_cases: bool = True  # the CoOp epoch comparison on the bench dataset (the original benchmark)
    extra: dict = field(default_factory=dict)


def default_small_model() -> tuple[str, str | None]:
    """The embedded tiny CLIP when its checkpoint is present, else a random-weight tiny config."""
    if embedded_checkpoint().is_file():
        return EMBEDDED_MODEL, EMBEDDED_PRETRAINED
    return TINY_MODEL, None


def register_tiny_model(workdir: Path) -> None:
    d = workdir / "model_configs"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{TINY_MODEL}.json").write_text(json.dumps(TINY_CONFIG))
    register_model_configs(d)


