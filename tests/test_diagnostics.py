"""The linear probe (the benchmark's feature-ceiling row) on hand-made features."""

from types import SimpleNamespace

import math

import torch

from dpclab.diagnostics import PROBE_WEIGHT_DECAYS, linear_probe


def _fake_experiment(train_x, train_y, test_x, test_y, val=True):
    def items(x, y):
        return [SimpleNamespace(label=int(label), x=row) for row, label in zip(x, y)]

    split = SimpleNamespace(train=items(train_x, train_y), val=items(train_x, train_y) if val else [],
                            test=items(test_x, test_y), classnames=[str(c) for c in sorted(set(train_y.tolist()))])
    return SimpleNamespace(base=split, features=lambda data, transform: torch.stack([d.x for d in data]))


def test_probe_separates_separable_classes_and_fails_on_noise():
    g = torch.Generator().manual_seed(0)
    centres = torch.randn(5, 16, generator=g) * 3
    y_train, y_test = torch.arange(5).repeat(4), torch.arange(5).repeat(10)
    x_train = centres[y_train] + 0.1 * torch.randn(20, 16, generator=g)
    x_test = centres[y_test] + 0.1 * torch.randn(50, 16, generator=g)
    out = linear_probe(_fake_experiment(x_train, y_train, x_test, y_test))
    assert out["base"] == 100.0 and out["train_acc"] == 100.0 and math.isnan(out["new"])
    assert out["weight_decay"] in PROBE_WEIGHT_DECAYS
    # test features unrelated to their labels: a probe cannot beat chance by much
    noise = torch.randn(500, 16, generator=g)
    out = linear_probe(_fake_experiment(x_train, y_train, noise, torch.arange(5).repeat(100), val=False))
    assert out["base"] < 40.0 and out["weight_decay"] == PROBE_WEIGHT_DECAYS[0]
