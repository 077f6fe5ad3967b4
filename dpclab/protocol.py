"""The references' protocol rules that depart from a method's one set of defaults, as data
(docs/protocol.md#per-dataset-exceptions and #transfer-settings).

The method table (:mod:`dpclab.methods`) holds one set of defaults per method; the released configurations depart
from them by dataset (CoOp on ImageNet: 50 epochs), by shot count (CoOp: 50 epochs at 1 shot, 100 at 2-4) and by
setting (MaPLe's and PromptSRC's cross-dataset configurations). :func:`dataset_train` gives the departures that
apply to a run; the method-default resolution reads it (``train_config``: method defaults, then these, then the
run's own ``train`` overrides), so ``python -m dpclab train``, the notebooks, ``grid`` and ``estimate`` all get them.
:func:`setting_overrides` gives a transfer setting's (``dpclab.transfer`` applies them to its source run).

Every rule names the released file and line it comes from. Settings a released repository states but does not
apply itself are listed too (``applied=False``): they are documented and never change a run.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: ``DatasetException.dataset`` of a rule that holds on every dataset (a shot-count rule)
EVERY_DATASET = "*"


@dataclass(frozen=True, kw_only=True)
class Rule:
    """What every protocol rule states, whatever it holds for: its overrides, where they are stated, and whether
    dpclab applies them. Keyword-only: a rule names them (``train=..., source=...``)."""

    #: TrainConfig overrides on top of the method's defaults (of the source run, for a setting rule)
    train: dict = field(default_factory=dict)
    #: method config values the source states (applied with the rule; some only documented, see ``applied``)
    method_cfg: dict = field(default_factory=dict)
    #: where it is stated (paper, released file and line)
    source: str = ""
    #: whether dpclab applies it (False: documented only -- the released code itself does not apply it, or dpclab has
    #: no runner for its setting)
    applied: bool = True


@dataclass(frozen=True)
class DatasetException(Rule):
    """One departure from a method's defaults on a dataset (or on every dataset, for some shot counts)."""

    #: dataset name (as in ``dpclab.data.coop.DATASETS``), or :data:`EVERY_DATASET`
    dataset: str
    #: the method it applies to, exactly (``coop`` is CoOp alone; the step 1 of ``coop+dpc`` is a ``coop`` run)
    method: str
    #: the shot counts it holds for, (lowest, highest) inclusive; None: every shot count
    shots: tuple[int, int] | None = None

    def holds(self, method: str, dataset: str, shots: int | None) -> bool:
        """Whether this rule concerns a run of ``method`` on ``dataset`` with ``shots`` images per class (``None``:
        unknown, only rules without a shot range hold)."""
        if self.method != method or self.dataset not in (dataset, EVERY_DATASET):
            return False
        if self.shots is None:
            return True
        return shots is not None and self.shots[0] <= shots <= self.shots[1]


_COOP_MD = "CoOp COOP.md l.10 and l.14-19 (KaiyangZhou/CoOp)"

#: every known per-dataset exception (docs/protocol.md#per-dataset-exceptions lists the same). A rule for one dataset
#: wins over a rule for every dataset (CoOp on ImageNet: 50 epochs at every shot count)
EXCEPTIONS: tuple[DatasetException, ...] = (
    DatasetException(EVERY_DATASET, "coop", train={"epochs": 50}, shots=(1, 1),
                     source=f"{_COOP_MD}: 1 shot trains with the *_ep50 configs (8-16 shots: the 200-epoch default)"),
    DatasetException(EVERY_DATASET, "coop", train={"epochs": 100}, shots=(2, 4),
                     source=f"{_COOP_MD}: 2 and 4 shots train with the *_ep100 configs"),
    DatasetException("imagenet", "coop", train={"epochs": 50},
                     source=f"{_COOP_MD}: 'for ImageNet, we use configs/trainers/CoOp/*_ep50.yaml for all settings' "
                            f"(CoOp's own rule; DePT trains its CoOp baseline 10 epochs on every dataset)"),
    DatasetException("imagenet", "promptkd", train={"batch_size": 256, "lr": 0.16},
                     source="PromptKD issue #10 (zhengli97/PromptKD, the maintainer, 2024-04-22): ImageNet trained at "
                            "batch 256 with the lr scaled linearly, 0.005 x 32 = 0.16 ('0.08x2=0.16'), about a day on "
                            "one 80 GB A100; the released config (batch 8, lr 0.005) would take ~15 days"),
    *(DatasetException(ds, "promptkd", method_cfg={"kd_weight": 200.0}, applied=False,
                       source="PromptKD scripts/promptkd/base2new_train.sh l.15-16, a comment: KD_WEIGHT 200 for "
                              "fgvc_aircraft, oxford_flowers, dtd (1000 elsewhere); the script passes 1000 for every "
                              "dataset")
      for ds in ("fgvc_aircraft", "oxford_flowers", "dtd")),
)


def exceptions_for(method: str, dataset: str, applied_only: bool = True, shots: int | None = None
                   ) -> list[DatasetException]:
    """The exceptions of ``method`` on ``dataset`` with ``shots`` images per class (only the applied ones unless
    told otherwise), rules for every dataset first."""
    found = [e for e in EXCEPTIONS if e.holds(method, dataset, shots) and (e.applied or not applied_only)]
    return sorted(found, key=lambda e: e.dataset != EVERY_DATASET)


def dataset_train(method: str, dataset: str, shots: int | None = None) -> dict:
    """TrainConfig overrides of ``method`` on ``dataset`` at ``shots`` from the applied exceptions (``{}`` for most
    runs; a rule for the dataset itself wins over one for every dataset)."""
    out: dict = {}
    for e in exceptions_for(method, dataset, shots=shots):
        out.update(e.train)
    return out


# ------------------------------------------------------------------------------------------- transfer settings
#: the settings of :mod:`dpclab.transfer` (train on every class of a source, test elsewhere) and the few-shot one
SETTINGS = ("cross_dataset", "domain_generalization", "few_shot")


@dataclass(frozen=True)
class SettingRule(Rule):
    """A method's released configuration for a setting other than base-to-new."""

    #: one of :data:`SETTINGS`
    setting: str
    #: the method it applies to, exactly
    method: str
    #: the datasets it holds for (empty: every dataset)
    datasets: tuple[str, ...] = ()


_MAPLE_XD = ("MaPLe configs/trainers/MaPLe/vit_b16_c2_ep5_batch4_2ctx_cross_datasets.yaml l.17-18 (LR 0.0026, "
             "MAX_EPOCH 2), l.36 (PROMPT_DEPTH 3) (muzairkhattak/multimodal-prompt-learning); the ImageNet source of "
             "cross-dataset and domain generalisation")
_SRC_XD = ("PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep20_batch4_4+4ctx_cross_datasets.yaml l.38-39 "
           "(PROMPT_DEPTH_VISION/TEXT 3), l.42-43 (GPA_MEAN 6, GPA_STD 10) (muzairkhattak/PromptSRC); epochs, batch "
           "and lr as base-to-new (l.4, l.18-19)")
_SRC_FS = ("PromptSRC configs/trainers/PromptSRC/vit_b16_c2_ep50_batch4_4+4ctx_few_shot.yaml l.19 (MAX_EPOCH 50), "
           "l.38-39 (depth 9)")
_FEW_SHOT_30 = ("imagenet", "caltech101", "oxford_pets", "food101", "ucf101", "sun397")
_FEW_SHOT_45 = ("stanford_cars", "oxford_flowers", "fgvc_aircraft", "dtd", "eurosat")

#: every known setting rule (docs/protocol.md#transfer-settings lists the same)
SETTING_RULES: tuple[SettingRule, ...] = (
    *(SettingRule(s, "maple", train={"epochs": 2, "lr": 0.0026}, method_cfg={"prompt_depth": 3}, source=_MAPLE_XD)
      for s in ("cross_dataset", "domain_generalization")),
    *(SettingRule(s, "promptsrc", method_cfg={"text_depth": 3, "vision_depth": 3, "gpa_mean": 6.0, "gpa_std": 10.0},
                  source=_SRC_XD) for s in ("cross_dataset", "domain_generalization")),
    SettingRule("few_shot", "promptsrc", train={"epochs": 50}, method_cfg={"gpa_mean": 30.0, "gpa_std": 30.0},
                datasets=_FEW_SHOT_30, applied=False, source=f"{_SRC_FS}, l.42-44 (GPA 30/30 for {_FEW_SHOT_30})"),
    SettingRule("few_shot", "promptsrc", train={"epochs": 50}, method_cfg={"gpa_mean": 45.0, "gpa_std": 5.0},
                datasets=_FEW_SHOT_45, applied=False, source=f"{_SRC_FS}, l.45-47 (GPA 45/5, commented out there, "
                                                            f"for {_FEW_SHOT_45})"),
)


def setting_rules(setting: str, method: str, dataset: str, applied_only: bool = True) -> list[SettingRule]:
    """The rules of ``method`` in ``setting`` (one of :data:`SETTINGS`) with ``dataset`` as its source."""
    if setting not in SETTINGS:
        raise ValueError(f"setting must be one of {SETTINGS}, got {setting!r}.")
    return [r for r in SETTING_RULES if r.setting == setting and r.method == method
            and (not r.datasets or dataset in r.datasets) and (r.applied or not applied_only)]


def setting_overrides(setting: str, method: str, dataset: str) -> tuple[dict, dict]:
    """``(train, method_cfg)`` overrides of ``method``'s source run in ``setting`` (applied rules only); a run's own
    ``train`` / ``method_cfg`` still win over them."""
    train: dict = {}
    method_cfg: dict = {}
    for r in setting_rules(setting, method, dataset):
        train.update(r.train)
        method_cfg.update(r.method_cfg)
    return train, method_cfg


__all__ = ["Rule", "DatasetException", "EXCEPTIONS", "EVERY_DATASET", "exceptions_for", "dataset_train", "SETTINGS",
           "SettingRule", "SETTING_RULES", "setting_rules", "setting_overrides"]
