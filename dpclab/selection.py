"""Model selection on the base test set, the released PromptKD behaviour (docs/fidelity.md, K2).

Dassl's ``TEST.FINAL_MODEL "best_val"`` evaluates the val split after every epoch and keeps the best epoch; PromptKD's
val split *is* the base-class test set. :class:`BestBaseEpoch` does the same through :func:`dpclab.train.fit`'s
``on_epoch`` hook: it evaluates base test accuracy after every epoch (logged as ``base_test``), keeps the learned
state of the best epoch (the first of ties, as Dassl's strict ``>``) in ``best.pt`` beside the checkpoint (so a
resumed run remembers it), and :meth:`restore` loads it after training. A method opts in through its
``selection()`` hook (:class:`~dpclab.methods.base.PromptMethod`; PromptKD returns its ``cfg.select``); the
protocol default is the last epoch.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from torch import nn

from dpclab.io import DamagedFileError, atomic_torch_save, set_aside, torch_load
from dpclab.methods.base import learned_state, load_learned_state


def wants_best_base(method: nn.Module) -> bool:
    """Whether a run of ``method`` keeps its best base-test epoch (its :meth:`~dpclab.methods.base.PromptMethod.selection`
    hook)."""
    return method.selection() == "best_base"


class BestBaseEpoch:
    """``on_epoch`` hook keeping the best base-test epoch; ``accuracy(method) -> float`` evaluates it."""

    def __init__(self, accuracy: Callable[[nn.Module], float], run_dir: str | Path | None = None,
                 on_epoch: Callable | None = None):
        self.accuracy, self.inner = accuracy, on_epoch
        self.path = Path(run_dir) / "best.pt" if run_dir is not None else None
        self.best: dict | None = None
        if self.path is not None and self.path.is_file():
            try:
                self.best = torch_load(self.path, map_location="cpu", keys=("epoch", "base_test", "state"))
            except DamagedFileError as err:  # its run resumes from its checkpoint; the best epoch is searched again
                set_aside(err, "the best epoch is searched again from here")

    def __call__(self, epoch: int, method: nn.Module) -> dict:
        logs = dict(self.inner(epoch, method)) if self.inner is not None else {}
        acc = self.accuracy(method)
        if self.best is None or acc > self.best["base_test"]:
            self.best = {"epoch": epoch, "base_test": acc, "state": learned_state(method)}
            if self.path is not None:
                atomic_torch_save(self.best, self.path)
        return {**logs, "base_test": acc, "best_epoch": self.best["epoch"]}

    def restore(self, method: nn.Module) -> None:
        """Load the best epoch's learned state (nothing if no epoch ran)."""
        if self.best is not None:
            load_learned_state(method, self.best["state"], "best base-test epoch")


__all__ = ["BestBaseEpoch", "wants_best_base"]
