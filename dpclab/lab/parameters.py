"""The notebooks' parameters: the keys every notebook's ``parameters`` cell defines, and the check that refuses others
(papermill would only warn and ignore them). Read by the notebook setup, the report and the command-line options."""

from __future__ import annotations

from typing import Iterable

#: the keys every notebook's ``parameters`` cell defines (tests/test_notebooks.py checks them)
PARAMETER_KEYS = ("backend", "model", "pretrained", "data_root", "dataset", "shots", "seeds", "epochs", "device",
                  "quick", "interactive", "precision")


def check_parameter_names(names: Iterable[str]) -> None:
    """Refuse parameter names the notebooks do not define, in one line naming them and the valid ones."""
    unknown = sorted(set(names) - set(PARAMETER_KEYS))
    if unknown:
        raise ValueError(f"Unknown notebook parameter(s) {unknown}. The notebooks take: {', '.join(PARAMETER_KEYS)}.")


__all__ = ["PARAMETER_KEYS", "check_parameter_names"]
