"""The small types every data module and the method contract share: :class:`Datum` (one labelled image file),
:class:`Task` (the classes to tell apart) and :class:`DatasetError` (bad dataset input). Nothing here imports another
dpclab module, so the data loaders, the image pipeline, the examples and the methods all stand on it directly."""

from __future__ import annotations

from dataclasses import dataclass


class DatasetError(ValueError):
    """Bad dataset input: the message names the file and the fix."""


@dataclass(frozen=True)
class Datum:
    """One labelled image file of a dataset split."""

    #: absolute path of the image file
    impath: str
    #: class index within the dataset
    label: int
    #: the class name
    classname: str


@dataclass(frozen=True)
class Task:
    """A set of classes to classify among. ``split`` (base | new | all) lets DPC/DePT pick their inference rule."""

    #: the class names, in label order
    classnames: tuple[str, ...]
    #: the prompt template of the dataset ("a photo of a {}.")
    template: str = "a photo of a {}."
    #: base | new | all: which classes of the base-to-new protocol these are
    split: str = "base"
    #: the dataset's name (for messages and caches)
    name: str = ""

    def __post_init__(self):
        object.__setattr__(self, "classnames", tuple(self.classnames))
        if self.split not in ("base", "new", "all"):
            raise ValueError(f"Task.split must be 'base', 'new' or 'all', got {self.split!r}")


__all__ = ["Datum", "Task", "DatasetError"]
