"""DPC step 2's batches as the released code builds them: fresh augmented views (never step 1's), and in
``mode="released"`` its negative sampler (all top-K candidates when the true class is outside them; random fill
from classes 1..n-2 that gives up after n-2 draws). Hand-worked examples, plus the pipeline end to end."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from dpclab.methods.base import Task
from dpclab.methods.dpc import (DPC, DPCConfig, STEP2_FIRST_VIEW, released_fill, sample_negative_classes,
                                step2_view)
from dpclab.pipeline import run
from dpclab.experiment import Experiment
from dpclab.runconfig import RunConfig
from dpclab.methods import resolve
from dpclab.train import Examples, TrainConfig

NAMES = tuple(f"thing {i}" for i in range(6))
BASE = Task(NAMES, split="base")


def _script(values):
    """A ``draw(lo, hi)`` that returns the scripted values in order and records the ranges asked for."""
    values, asked = list(values), []

    def draw(lo, hi):
        asked.append((lo, hi))
        return values.pop(0)
    return draw, asked


# ------------------------------------------------------------------------------------------------ candidate cap
def test_released_keeps_all_top_k_candidates_when_the_true_class_is_outside_them():
    g = torch.Generator().manual_seed(0)
    scores = torch.tensor([[0., 9, 8, 7, 6, 5, 4, 3, 2, 1]])  # top-4 of anchor class 0: 1, 2, 3, 4
    assert sample_negative_classes([0], scores, 10, 4, 2, g, rule="released") == [[1, 2, 3, 4]]
    assert sample_negative_classes([0], scores, 10, 4, 2, g, rule="uniform") == [[1, 2, 3]]
    # true class inside the top-K: both keep K-1
    scores = torch.tensor([[9., 8, 7, 6, 5, 4, 3, 2, 1, 0]])
    assert sample_negative_classes([0], scores, 10, 4, 2, g, rule="released") == [[1, 2, 3]]
    assert sample_negative_classes([0], scores, 10, 4, 2, g, rule="uniform") == [[1, 2, 3]]


# ------------------------------------------------------------------------------------------------ random fill
def test_released_fill_hand_worked_gives_up_after_n_minus_2_draws():
    # n = 5: draws from [1, 3], at most 3 of them. Batch holds 1 and 2; draws 1 (in batch), 3 (joins), 3 (drawn
    # before): three draws spent, one class found although two were wanted
    draw, asked = _script([1, 3, 3])
    assert released_fill({1, 2}, 5, 2, draw) == [3]
    assert asked == [(1, 3)] * 3


def test_released_fill_hand_worked_stops_one_draw_after_it_has_enough():
    # n = 8: up to 6 draws from [1, 6]; wants 2; batch {0, 5}: 5 (in batch), 2 (joins), 6 (joins), then one more
    # draw ends the loop, as the released `else: break`
    draw, asked = _script([5, 2, 6, 4, 4, 4])
    assert released_fill({0, 5}, 8, 2, draw) == [2, 6]
    assert len(asked) == 4
    # the loop length is n-2 even when nothing joins; a class in the batch is never taken
    draw, asked = _script([3] * 6)
    assert released_fill({3}, 8, 2, draw) == [] and len(asked) == 6
    assert released_fill({0}, 2, 2, _script([])[0]) == []  # n = 2: no draw at all


def test_released_sampler_fills_through_its_rule_and_uniform_mode_from_all_unused_classes():
    # n = 6, top_k 2, anchors 1 and 2: anchor 1's top-2 is (1, 2) -> candidate 2 is in the batch -> no negative
    scores = torch.tensor([[0., 9, 8, 0, 0, 0], [0., 8, 9, 0, 0, 0]])
    draw, asked = _script([4, 1, 3, 2, 4, 3, 3, 3])
    negs = sample_negative_classes([1, 2], scores, 6, 2, 2, torch.Generator(), rule="released", draw=draw)
    # anchor 1: draws 4 (joins), 1 (anchor), 3 (joins), then one draw ends its loop; anchor 2: top-2 = (2, 1)
    # -> nothing; draws 4, 3, 3, 3 (n-2 = 4 draws): 4 and 3 are taken by anchor 1, so it gets none
    assert negs == [[4, 3], []]
    assert asked == [(1, 4)] * 8
    # released never draws class 0 or the last class; uniform does
    seen = {"released": set(), "uniform": set()}
    for seed in range(200):
        g = torch.Generator().manual_seed(seed)
        for rule in seen:
            for n in sample_negative_classes([1, 2], scores, 6, 2, 2, g, rule=rule):
                seen[rule].update(n)
    assert seen["released"] == {3, 4} and seen["uniform"] == {0, 3, 4, 5}


def test_dpc_modes_pick_their_rule(tiny_backbone):
    coop = resolve("coop").build(tiny_backbone)
    labels = torch.arange(6).repeat_interleave(2)
    feats = torch.randn(12, 32, generator=torch.Generator().manual_seed(0))
    found = {}
    for mode in ("paper", "released"):
        dpc = DPC(resolve("coop").build(tiny_backbone), DPCConfig(mode=mode, top_k=2, min_negatives=4)).train()
        dpc.base.load_state_dict(coop.state_dict())
        classes = set()
        for seed in range(30):
            _, _, negs = dpc.build_batch(feats[:1], labels[:1], labels, feats.__getitem__, BASE,
                                         torch.Generator().manual_seed(seed))
            classes.update(c for n in negs for c in n)
        found[mode] = classes
    assert 5 in found["paper"] and 5 not in found["released"]  # released fill never draws the last class


# ------------------------------------------------------------------------------------------------ fresh views
class _Recorder(Examples):
    def __init__(self, labels, feats):
        super().__init__(labels, features=self._feats)
        self.views, self._table = [], feats

    def _feats(self, v):
        self.views.append(v)
        return self._table + v  # a different tensor per view


@pytest.mark.parametrize("mode", ["paper", "reparam", "released"])
def test_step_two_reads_fresh_views_never_step_ones(tiny_backbone, mode):
    data = _Recorder(torch.arange(6).repeat(2), torch.randn(12, 32))
    data.task = BASE
    cfg = TrainConfig(epochs=20, batch_size=4, progress=False)
    dpc = DPC(resolve("coop").build(tiny_backbone), DPCConfig(mode=mode))
    for epoch in (0, 1, 19):
        for _ in dpc.batches(data, epoch, cfg, torch.Generator().manual_seed(epoch)):
            pass
    step1 = TrainConfig(epochs=200)
    assert data.views == [STEP2_FIRST_VIEW, STEP2_FIRST_VIEW + 1, STEP2_FIRST_VIEW + 19]
    assert min(data.views) > max(e % step1.views() for e in range(step1.epochs))
    assert step2_view(3, TrainConfig(epochs=20, n_views=2)) == STEP2_FIRST_VIEW + 1


def test_pixel_bases_read_fresh_views_too(tiny_backbone):
    asked = []

    class Pixels(Examples):
        def take(self, view, cfg):
            asked.append(view)
            return lambda idx: torch.zeros(len(idx), 3, 8, 8)

    class Stub(DPC):
        def build_batch(self, x, y, labels, take, task, generator):
            take(torch.tensor([0]))
            return x, y, []

    data = Pixels(torch.arange(6), items=[], task=BASE)
    dpc = Stub(resolve("coop").build(tiny_backbone))
    list(dpc.batches(data, 3, TrainConfig(epochs=20, batch_size=3), torch.Generator()))
    assert asked == [STEP2_FIRST_VIEW + 3]
    assert data.epoch_view(3, TrainConfig(epochs=20)) == 3  # what step 1 read in that epoch


def test_pipeline_step_two_encodes_new_views_and_step_one_keeps_its_own(json_root, tmp_path, tiny_backbone):
    cfg = RunConfig.of(method="coop+dpc", dataset="eurosat", data_root=str(json_root), model="unused",
                    pretrained="unused", shots=4, seed=1, device="cpu", cache_dir=str(tmp_path / "cache"),
                    runs_dir=str(tmp_path / "runs"), results=None, train={"epochs": 2, "lr": 0.05},
                    base_train={"epochs": 3, "batch_size": 4, "lr": 0.05}, progress=False)
    run(cfg, experiment=Experiment.prepare(cfg, tiny_backbone))
    views = sorted(int(p.name.split("-v")[1].split("-")[0])
                   for p in Path(tmp_path / "cache" / "features").rglob("train*.pt"))
    assert views == [0, 1, 2, STEP2_FIRST_VIEW, STEP2_FIRST_VIEW + 1]  # one encoder pass per new view
