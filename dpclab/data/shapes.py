"""The sizes of the 11 CoOp datasets, in one place: classes, base/new class counts, few-shot training set, test set.

Class and test-set counts are those of the CoOp splits (``split_zhou_*.json``, ImageNet's val set as its test set),
as listed in CoOp's DATASETS.md. Base/new classes follow the base-to-new protocol (``m = ceil(n/2)`` base classes, the
rest new; see ``data.coop.base_new_classes`` and docs/protocol.md#base-to-new-split). How the test images divide
between base and new classes is not published per dataset; :attr:`DatasetShape.test_base` splits them in proportion
to the class counts (the splits are close to balanced per class), which is all the cost estimate needs.

These shapes drive the cost estimate (``python -m dpclab estimate``) and the speed benchmark
(``python -m dpclab speed``); nothing here touches the data on disk.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class DatasetShape:
    name: str
    classes: int
    test: int  # images in the test split, all classes
    train: int = 0  # images in the full train split (few-shot sampling draws from it); 0 = not needed here

    @property
    def base_classes(self) -> int:
        return math.ceil(self.classes / 2)

    @property
    def new_classes(self) -> int:
        return self.classes - self.base_classes

    @property
    def test_base(self) -> int:
        """Test images of the base classes (proportional split, see the module docstring)."""
        return round(self.test * self.base_classes / self.classes)

    @property
    def test_new(self) -> int:
        return self.test - self.test_base

    def train_images(self, shots: int, train_classes: str = "base") -> int:
        """Few-shot training images: ``shots`` per class of the trained classes."""
        return shots * (self.base_classes if train_classes == "base" else self.classes)

    def val_images(self, shots: int) -> int:
        """Few-shot validation images of the base classes (``min(shots, 4)`` per class)."""
        return min(shots, 4) * self.base_classes


#: name -> shape, in the order of the papers' tables (names as in ``data.coop.DATASETS``)
COOP_SHAPES: dict[str, DatasetShape] = {
    s.name: s
    for s in [
        DatasetShape("imagenet", 1000, 50000, 1281167),
        DatasetShape("caltech101", 100, 2465, 4128),
        DatasetShape("oxford_pets", 37, 3669, 2944),
        DatasetShape("stanford_cars", 196, 8041, 6509),
        DatasetShape("oxford_flowers", 102, 2463, 4093),
        DatasetShape("food101", 101, 30300, 50500),
        DatasetShape("fgvc_aircraft", 100, 3333, 3334),
        DatasetShape("sun397", 397, 19850, 15880),
        DatasetShape("dtd", 47, 1692, 2820),
        DatasetShape("eurosat", 10, 8100, 13500),
        DatasetShape("ucf101", 101, 3783, 7639),
    ]
}


def shape_of(name: str) -> DatasetShape:
    if name not in COOP_SHAPES:
        raise ValueError(f"No shape known for dataset {name!r}; the CoOp datasets are: {', '.join(COOP_SHAPES)}.")
    return COOP_SHAPES[name]


__all__ = ["DatasetShape", "COOP_SHAPES", "shape_of"]
