"""The method table: name -> (class, its config dataclass, its training defaults from
docs/protocol.md#hyperparameters), the plug-in table for the Base-New Trade-off fixes that wrap a method
(``"coop+dpc"``, ``"maple+dept"``...), and their one reader, :func:`resolve`.

Plain dicts, no registry decorators: adding a method means adding one line here (its class is a
:class:`~dpclab.methods.base.PromptMethod`; ``tests/test_contract.py`` then tests it, and every plug-in on it; see
docs/extending.md). Nothing else reads these entries: :func:`resolve` (``dpclab.methods.resolve``) turns a name into
one frozen :class:`~dpclab.methods.spec.MethodSpec`, once per run, checking it against the tables once (the base, the
plug-in, the refusals, as one-line errors naming the choices); :func:`method_names` lists the names they admit. The
row types (:class:`~dpclab.methods.spec.MethodEntry`, :class:`~dpclab.methods.spec.PluginEntry`) and the spec live in
:mod:`dpclab.methods.spec`. The README's methods table and docs/protocol.md's hyperparameter
table are generated from these dicts (``python -m dpclab.methods.doc_tables``; ``tests/test_extending.py`` checks
that they match).
"""

from __future__ import annotations

from dpclab.methods.cocoop import CoCoOp, CoCoOpConfig
from dpclab.methods.coop import CoOp, CoOpConfig, KgCoOp, KgCoOpConfig
from dpclab.methods.dept import DePT, DePTConfig
from dpclab.methods.dpc import DPC, DPCConfig
from dpclab.methods.maple import MaPLe, MaPLeConfig
from dpclab.methods.promptkd import PromptKD, PromptKDConfig, teacher_run_config
from dpclab.methods.promptsrc import PromptSRC, PromptSRCConfig
from dpclab.methods.spec import MethodEntry, MethodSpec, PluginEntry, Teacher, can_wrap, plain_spec, plugin_spec
from dpclab.methods.zeroshot import ZeroShotCLIP, ZeroShotConfig


METHODS: dict[str, MethodEntry] = {
    "zeroshot": MethodEntry(ZeroShotCLIP, ZeroShotConfig, {"epochs": 0}, trainable=False),
    "coop": MethodEntry(CoOp, CoOpConfig, {"epochs": 200, "batch_size": 32, "lr": 0.002}),
    "cocoop": MethodEntry(CoCoOp, CoCoOpConfig, {"epochs": 10, "batch_size": 1, "lr": 0.002}),
    "kgcoop": MethodEntry(KgCoOp, KgCoOpConfig, {"epochs": 100, "batch_size": 128, "lr": 0.002}),
    "maple": MethodEntry(MaPLe, MaPLeConfig, {"epochs": 5, "batch_size": 4, "lr": 0.0035}),
    "promptsrc": MethodEntry(PromptSRC, PromptSRCConfig, {"epochs": 20, "batch_size": 4, "lr": 0.0025}),
    # docs/protocol.md#promptkd: the student distils a PromptSRC teacher (its own 16-shot base run) on every training
    # image of all classes, unlabeled; 20 epochs, batch 8, lr 0.005 (released vit_b16_c2_ep20_batch8_4+4ctx)
    "promptkd": MethodEntry(PromptKD, PromptKDConfig, {"epochs": 20, "batch_size": 8, "lr": 0.005},
                            data={"shots": 0, "train_classes": "all"},
                            teacher=Teacher(teacher_run_config, "teacher_method", "teacher_epochs")),
}


PLUGINS: dict[str, PluginEntry] = {
    # docs/protocol.md#dpc: step 2 trains 20 epochs, lr 0.002, batch 4 anchors (each with up to top_k-1 = 7 negatives)
    # revision 1: step 2 trains on fresh views, never step 1's, and ``mode=released`` builds its batches as the released
    # code (issue 22; docs/fidelity.md D4-D6); revision 2: ``mode=released`` crops every hard-negative draw afresh
    # (issue 26; docs/fidelity.md D7). DPC runs made by older code are kept and not reused
    "dpc": PluginEntry(DPC, DPCConfig, {"epochs": 20, "batch_size": 4, "lr": 0.002}, two_step=True,
                       refuses={"cocoop": "DPC's InfoNCE needs class-level text features, and CoCoOp's prompts are "
                                          "per image"}, revision=2),
    # DePT (docs/protocol.md#dept): trained jointly from scratch with the base; 10 epochs, batch 4, lr 0.0035 for every base
    # (CoCoOp: batch 1, lr 0.002); KgCoOp+DePT uses the regulariser weight W = 2.0 (reference configs).
    "dept": PluginEntry(DePT, DePTConfig, train={"epochs": 10, "batch_size": 4, "lr": 0.0035}, two_step=False,
                        train_by_base={"cocoop": {"batch_size": 1, "lr": 0.002}},
                        base_cfg_by_base={"kgcoop": {"weight": 2.0}}),
}


def method_names() -> list[str]:
    """Every name the tables admit: the methods, then each plug-in on each base it can wrap and does not refuse."""
    pairs = [f"{m}+{p}" for m, entry in METHODS.items()
             for p, pentry in PLUGINS.items() if can_wrap(entry, pentry) and m not in pentry.refuses]
    return [*METHODS, *pairs]


def resolve(name: str) -> MethodSpec:
    """``"coop+dpc"`` -> its :class:`MethodSpec`. Unknown names, unknown plug-ins and refused pairs fail here, with
    the available choices."""
    base, _, plugin = name.partition("+")
    if base not in METHODS:
        raise ValueError(f"Unknown method {base!r}. Available: {', '.join(method_names())}.")
    entry = METHODS[base]
    if not plugin:
        return plain_spec(base, entry)
    if plugin not in PLUGINS:
        raise ValueError(f"Unknown plug-in {plugin!r} in {name!r}. Available: {', '.join(PLUGINS) or 'none yet'}.")
    pentry = PLUGINS[plugin]
    why = pentry.refuses.get(base) or ("" if can_wrap(entry, pentry) else f"{base!r} trains nothing to build on")
    if why:
        options = [n for n in method_names() if n.endswith(f"+{plugin}")]
        raise ValueError(f"{plugin!r} cannot wrap {base!r}: {why}. Choose one of {', '.join(options)}.")
    return plugin_spec(base, entry, plugin, pentry)


__all__ = ["METHODS", "PLUGINS", "method_names", "resolve"]
