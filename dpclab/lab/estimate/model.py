"""The estimate's data: what to measure (:class:`MeasureConfig`) and what a device measured, per method, as
functions of the class count (:class:`DeviceTimings`). Pure data (the measuring is ``measuring.py``, the pricing
``price.py``)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import numpy as np


#: evaluation batch size of ``evaluate.predict_logits``
EVAL_BATCH = 256


@dataclass(frozen=True)
class MeasureConfig:
    #: open_clip model (its shapes set the time; the weights do not)
    model: str = "ViT-B-16"
    #: None/"random": random weights (same shapes, same time, no download)
    pretrained: str | None = None
    device: str = "auto"
    #: fp32 | fp16 | amp (``dpclab.precision``): the backbone, the prompts and the steps in this precision
    precision: str = "fp32"
    #: class counts every method is timed at (unless measure() gets them per method)
    class_counts: tuple[int, ...] = (5, 50, 200, 500)
    #: timed steps per epoch probe (after one warm-up epoch)
    steps: int = 3
    #: two evaluation batch sizes (fixed + per-image cost), pixel methods
    eval_sizes: tuple[int, int] = (16, 64)
    #: the same for features-kind methods (cheap per example)
    eval_sizes_features: tuple[int, int] = (16, 128)
    #: repeats of every timing (the median is kept)
    repeats: int = 3
    #: side of the synthetic JPEGs (their decode cost)
    image_px: int = 400
    #: images in the frozen image encoder's timed batch
    encode_images: int = 128


@dataclass(frozen=True)
class Curve:
    """A time as a function of the class count: linear between the measured points, along the last segment above
    them, and flat below the smallest (a slope extrapolated there would price fewer classes below what was ever
    measured); never below the smallest measured time."""

    classes: tuple[float, ...]
    seconds: tuple[float, ...]

    def __call__(self, c: float) -> float:
        xs, ys = self.classes, self.seconds
        if len(xs) == 1 or c <= xs[0]:
            return ys[0]
        if c >= xs[-1]:
            slope = (ys[-1] - ys[-2]) / (xs[-1] - xs[-2])
            return max(min(ys), ys[-1] + slope * (c - xs[-1]))
        return float(np.interp(c, xs, ys))

    @classmethod
    def constant(cls, seconds: float) -> "Curve":
        return cls((1.0,), (float(seconds),))


@dataclass(frozen=True)
class MethodTimings:
    #: "features" or "pixels": what the method's steps consume
    kind: str
    #: seconds per training step (its SPEC batch), inputs already in memory
    step: Curve
    #: seconds per evaluation batch, independent of its size (text encoding)
    eval_fixed: Curve
    #: seconds per evaluated example (image tower, per-image prompts)
    eval_per_image: Curve
    #: the training batch the step was timed at
    batch_size: int = 1
    #: peak memory of its training steps at the largest class count (MiB; CUDA allocation, or process RSS on a
    #: CPU); None: not trained (zero-shot) or not measured
    peak_mib: float | None = None


@dataclass(frozen=True)
class DeviceTimings:
    #: the torch device (cuda:0, cpu)
    device: str
    #: open_clip model name
    model: str
    #: seconds to load the backbone
    load: float
    #: seconds per image of the frozen image encoder (batch of pixels in memory)
    encode: float
    #: seconds per image to decode + augment a training image (one process)
    decode_train: float
    #: seconds per image to decode + resize + crop a test image (one process)
    decode_test: float
    #: DataLoader workers of the real pipeline on this machine
    workers: int
    #: per method
    methods: dict[str, MethodTimings] = field(default_factory=dict)
    #: fp32 | fp16 | amp: the precision everything was measured in
    precision: str = "fp32"
    #: the device by name (GPU model, or the CPU's and its torch threads)
    device_name: str = ""

    def decode(self, images: float, compute: float, train: bool) -> float:
        """Wall time of ``compute`` seconds of model work fed ``images`` decoded images (workers overlap them)."""
        dec = images * (self.decode_train if train else self.decode_test)
        return max(compute, dec / self.workers) if self.workers > 0 else compute + dec

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)

    @classmethod
    def from_json(cls, text: str) -> "DeviceTimings":
        d = json.loads(text)
        methods = {k: MethodTimings(v["kind"], *(Curve(tuple(v[n]["classes"]), tuple(v[n]["seconds"]))
                                                 for n in ("step", "eval_fixed", "eval_per_image")), v["batch_size"],
                                    v.get("peak_mib"))
                   for k, v in d.pop("methods").items()}
        return cls(**d, methods=methods)


__all__ = ["EVAL_BATCH", "MeasureConfig", "Curve", "MethodTimings", "DeviceTimings"]
