"""Numeric precision of a run: ``fp32`` | ``fp16`` | ``amp`` (one knob through load_clip, the pipeline, the CLI and
the notebooks).

``fp32``
    Everything in float32 (the default; what every faithfulness test checks).
``fp16``
    What the reference trainers run (CoOp/DPC/DePT/MaPLe/PromptSRC ``PREC = "fp16"``): the CLIP weights converted
    as OpenAI's ``convert_weights`` does (convolutions, linear layers, attention and projections in half precision;
    layer norms computed in float32, open_clip's ``precision="fp16"``), and the *learned* prompt tensors in half
    precision too: the learned context inherits the CLIP dtype and SGD updates it in fp16. Inputs (pixels and
    cached image features) are fed in fp16. DePT's CAT head stays float32 (it works on float features).
``amp``
    CLIP and prompts in float32, forward passes under :func:`torch.autocast` (bfloat16 on CPU, float16 on CUDA,
    with a gradient scaler for float16).

Every precision but ``fp32`` changes the image features, so it is part of :attr:`dpclab.backbones.Backbone.key`
(feature caches and run directories).
"""

from __future__ import annotations

import contextlib
from typing import Iterable, Iterator

import torch
from torch import nn

PRECISIONS = ("fp32", "fp16", "amp")


def check_precision(precision: str, device: torch.device) -> str:
    """``precision`` if the device can run it; a clear error naming the fix otherwise."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS} (fp32: float32; fp16: the reference's half "
                         f"precision; amp: autocast), got {precision!r}.")
    if precision == "fp16":
        try:  # the ops a CLIP forward/backward needs, in half precision, on this device
            w = torch.ones(2, 3, 2, 2, dtype=torch.float16, device=device, requires_grad=True)
            x = torch.ones(1, 3, 4, 4, dtype=torch.float16, device=device)
            y = torch.nn.functional.conv2d(x, w, stride=2).flatten(1)
            y = torch.nn.functional.layer_norm(y.float(), y.shape[-1:]).half() @ y.t()
            torch.nn.functional.cross_entropy(y, torch.zeros(1, dtype=torch.long, device=device)).backward()
        except (RuntimeError, NotImplementedError) as err:
            raise ValueError(f"precision='fp16' is not supported on device {device} ({str(err)[:160]}). "
                             f"Use precision='fp32' or 'amp'.") from err
    if precision == "amp":
        try:
            with torch.autocast(device.type, dtype=amp_dtype(device)):
                pass
        except (RuntimeError, ValueError) as err:
            raise ValueError(f"precision='amp' (autocast) is not supported on device {device} "
                             f"({str(err)[:160]}). Use precision='fp32'.") from err
    return precision


def amp_dtype(device: torch.device) -> torch.dtype:
    """The autocast dtype: float16 on CUDA, bfloat16 elsewhere (CPU autocast supports bfloat16)."""
    return torch.float16 if device.type == "cuda" else torch.bfloat16


def autocast(precision: str, device: torch.device):
    """``torch.autocast`` for ``amp``; a no-op context otherwise."""
    if precision != "amp":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype(device))


def autocast_iter(items: Iterable, precision: str, device: torch.device) -> Iterator:
    """Iterate ``items`` with each ``next()`` under :func:`autocast` (batch builders that run the model, e.g.
    DPC's hard-negative scoring, then see the same precision as the loss)."""
    it = iter(items)
    while True:
        with autocast(precision, device):
            try:
                item = next(it)
            except StopIteration:
                return
        yield item


def grad_scaler(precision: str, device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only for float16 autocast (``amp`` on CUDA); disabled it is a pass-through."""
    enabled = precision == "amp" and amp_dtype(device) == torch.float16
    return torch.amp.GradScaler(device.type, enabled=enabled)


def input_dtype(precision: str) -> torch.dtype:
    """dtype of the inputs fed to the model: half for ``fp16`` (as the reference's ``image.type(clip.dtype)``)."""
    return torch.float16 if precision == "fp16" else torch.float32


def cast_learned(method: nn.Module, precision: str) -> nn.Module:
    """``fp16``: the method's trainable tensors in half precision (the reference's learned context inherits the
    CLIP dtype), except those under the names in its ``float32_parameters`` (DePT's head). Called on a base method
    and then on the plug-in that wraps it. Other precisions: unchanged."""
    if precision == "fp16":
        keep = method.float32_parameters  # a PromptMethod attribute (empty by default)
        for name, p in method.named_parameters():
            if any(name == k or name.startswith(k + ".") for k in keep):
                continue
            if p.requires_grad and p.is_floating_point():
                p.data = p.data.half()
    return method


__all__ = ["PRECISIONS", "check_precision", "amp_dtype", "autocast", "autocast_iter", "grad_scaler", "input_dtype",
           "cast_learned"]
