"""The methods: the tables (:mod:`.table`: name -> class, config, training defaults; plug-ins that wrap a method,
``"coop+dpc"``, ``"maple+dept"``) with :func:`resolve`, which turns a name into one frozen :class:`MethodSpec`
(:mod:`.spec`) that builds the method: ``resolve(name).build(backbone)`` is the one public factory, and nothing else
reads the tables' entries; and the contract every method follows (:mod:`.base`).

Plain dicts, no registry decorators: adding a method means adding its file and one line in ``table.py``
(docs/extending.md; ``tests/test_contract.py`` then tests it, and every plug-in on it).
"""

from __future__ import annotations

from dpclab.methods.base import (Loss, Output, Plugin, PromptMethod, Task, from_run, learned_state,
                                 load_learned_state)
from dpclab.methods.dept import DePT, DePTConfig
from dpclab.methods.spec import MethodEntry, MethodSpec, PluginEntry, Teacher
from dpclab.methods.table import METHODS, PLUGINS, method_names, resolve

__all__ = ["METHODS", "PLUGINS", "MethodEntry", "PluginEntry", "Teacher", "MethodSpec", "resolve", "method_names",
           "Output", "Loss", "Task", "PromptMethod", "Plugin", "from_run", "learned_state", "load_learned_state", "DePT",
           "DePTConfig"]
