"""Image loading in parallel: the default worker count per backend, and workers change no number."""

from __future__ import annotations

import torch

from dpclab.data.coop import load_dataset
from dpclab.data.features import build_transforms, default_num_workers, encode_image_list, loader_options


def test_default_workers_real_backend_parallel_small_inputs_in_process():
    assert default_num_workers(224, cpu_count=16) == 8
    assert default_num_workers(224, cpu_count=4) == 3
    assert default_num_workers(224, cpu_count=2) == 0  # nothing to gain on a 2-core machine
    assert default_num_workers(32, cpu_count=64) == 0  # the embedded 32-px model and the tests' tiny models
    assert loader_options(0, "cpu") == {"num_workers": 0, "pin_memory": False}
    opts = loader_options(3, "cuda")
    assert opts["pin_memory"] and opts["num_workers"] == 3 and opts["prefetch_factor"] >= 2


def test_encoded_views_identical_with_worker_processes(json_root, tiny_backbone):
    data = load_dataset(json_root, "eurosat")
    items = data.train[:12]
    bb = tiny_backbone
    tf = build_transforms(bb.image_size, bb.mean, bb.std)["train"]
    serial = encode_image_list(bb.model, items, tf, bb.device, batch_size=5, view_seed=3, num_workers=0)
    parallel = encode_image_list(bb.model, items, tf, bb.device, batch_size=5, view_seed=3, num_workers=2)
    assert serial.shape == (12, bb.model.text_projection.shape[-1])
    torch.testing.assert_close(serial, parallel, rtol=0, atol=0)
    other_view = encode_image_list(bb.model, items, tf, bb.device, batch_size=5, view_seed=4, num_workers=0)
    assert not torch.equal(serial, other_view)  # the view seed matters, the worker count does not
