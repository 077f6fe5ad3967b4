"""The methods: the tables (:mod:`.table`: name -> class, config, training defaults; plug-ins that wrap a method,
``"coop+dpc"``, ``"maple+dept"``), the contract every method follows (:mod:`.base`), and :func:`resolve`, which turns a
name into one frozen :class:`MethodSpec` and builds the method from it (:mod:`.spec`).

Plain dicts, no registry decorators: adding a method means adding its file and one line in ``table.py``
(docs/extending.md; ``tests/test_contract.py`` then tests it, and every plug-in on it).
"""

from __future__ import annotations

from dpclab.methods.base import Output, Plugin, PromptMethod, Task, learned_state, load_learned_state
from dpclab.methods.dept import DePT, DePTConfig
from dpclab.methods.spec import (MethodSpec, build_method, default_train, get_method, make_config, method_names, parse_method,
                   resolve)
from dpclab.methods.table import METHODS, PLUGINS, MethodEntry, PluginEntry

__all__ = ["METHODS", "PLUGINS", "MethodEntry", "PluginEntry", "MethodSpec", "resolve", "get_method", "parse_method",
           "method_names", "build_method", "default_train", "make_config", "Output", "Task", "PromptMethod", "Plugin",
           "learned_state", "load_learned_state", "DePT", "DePTConfig"]
