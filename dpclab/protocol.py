"""Per-dataset exceptions to the methods' training defaults, as data (docs/protocol.md#per-dataset-exceptions).

The method table (:mod:`dpclab.methods`) holds one set of defaults per method; the papers' released configurations
depart from them on a few datasets. :func:`dataset_train` gives the departures that apply to a run; the method-default
resolution reads it (``train_config``: method defaults, then these, then the run's own ``train`` overrides), so
``python -m dpclab train --method coop --dataset imagenet``, the notebooks, ``grid`` and ``estimate`` all get them.

Settings a released repository states but does not apply itself are listed too (``applied=False``): they are
documented and never change a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DatasetException:
    """One per-dataset departure from a method's defaults."""

    #: dataset name (as in ``dpclab.data.coop.DATASETS``)
    dataset: str
    #: the method it applies to, exactly (``coop`` is CoOp alone; the step 1 of ``coop+dpc`` is a ``coop`` run)
    method: str
    #: TrainConfig overrides on top of the method's defaults
    train: dict = field(default_factory=dict)
    #: method config values the source states (documented; not applied unless ``applied``)
    method_cfg: dict = field(default_factory=dict)
    #: where it is stated (paper, released file and line)
    source: str = ""
    #: whether dpclab applies it (False: the released code itself does not, so reproducing it means not applying it)
    applied: bool = True


#: every known per-dataset exception (docs/protocol.md#per-dataset-exceptions lists the same)
EXCEPTIONS: tuple[DatasetException, ...] = (
    DatasetException("imagenet", "coop", train={"epochs": 50},
                     source="the CoOp protocol as the DPC and DePT papers run it (50 epochs on ImageNet)"),
    *(DatasetException(ds, "promptkd", method_cfg={"kd_weight": 200.0}, applied=False,
                       source="PromptKD scripts/promptkd/base2new_train.sh l.15-16, a comment: KD_WEIGHT 200 for "
                              "fgvc_aircraft, oxford_flowers, dtd (1000 elsewhere); the script passes 1000 for every "
                              "dataset")
      for ds in ("fgvc_aircraft", "oxford_flowers", "dtd")),
)


def exceptions_for(method: str, dataset: str, applied_only: bool = True) -> list[DatasetException]:
    """The exceptions of ``method`` on ``dataset`` (only the applied ones unless told otherwise)."""
    return [e for e in EXCEPTIONS if e.method == method and e.dataset == dataset and (e.applied or not applied_only)]


def dataset_train(method: str, dataset: str) -> dict:
    """TrainConfig overrides of ``method`` on ``dataset`` from the applied exceptions (``{}`` for most runs)."""
    out: dict = {}
    for e in exceptions_for(method, dataset):
        out.update(e.train)
    return out


__all__ = ["DatasetException", "EXCEPTIONS", "exceptions_for", "dataset_train"]
