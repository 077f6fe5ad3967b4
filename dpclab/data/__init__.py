"""Data: CoOp-layout datasets, few-shot/base-new splits, the generated world, and cached frozen features."""

from dpclab.data.coop import (DATASETS, DatasetSpec, DatasetSplits, base_new_classes, few_shot, load_dataset,
                              subsample_classes)
from dpclab.data.items import Datum, DatasetError

__all__ = ["DATASETS", "Datum", "DatasetError", "DatasetSpec", "DatasetSplits", "base_new_classes", "few_shot",
           "load_dataset", "subsample_classes"]
