"""Which run is this: the one definition of a run's identity, read from the config fields' own metadata.

Each field of :class:`~dpclab.source.Source`, :class:`~dpclab.runconfig.RunConfig`,
:class:`~dpclab.trainconfig.TrainConfig` and :class:`~dpclab.lab.plan.PlannedRun` says in
``field(metadata={"key": (...)})`` which identities it belongs to (:data:`ROLES`; a config class may name a default,
``KEY_DEFAULT``: every TrainConfig field is fingerprinted unless it says ``{"key": ()}``); a field holding another config
(``RunConfig.source``) says ``{"key": "nested"}`` and its own fields are read; a dict-valued field may name keys of
its value that identify nothing (``"unkeyed"``: how often a run checkpoints). :func:`key_fields` is the only reader
of that metadata; :func:`run_key` builds a run's directory and fingerprints from it, :func:`job_key` the key of a
run in a job list (before its images are read). A leaf module: it imports nothing of dpclab.

The values are exactly those the code before this module computed (tests/test_runkey.py pins them), so existing run
directories keep their keys and are reused.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import MISSING, dataclass, fields, is_dataclass
from pathlib import Path

#: what a field can identify: "data" the images a run reads and how (one Experiment serves runs equal in these);
#: "job" a run before it is prepared (job lists, the report's plan); "dir" the run directory's path;
#: "options" the options hashed into the directory name when any differs from its default;
#: "fingerprint" what is stored with a finished run and compared on reuse / resume
ROLES = ("data", "job", "dir", "options", "fingerprint")


def key_fields(config, role: str) -> dict:
    """The fields of the dataclass ``config`` (and of the configs it nests) whose metadata names ``role``."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {', '.join(ROLES)}, not {role!r}.")
    out = {}
    default = getattr(type(config), "KEY_DEFAULT", ())  # a config may put its fields in a role unless they opt out
    for f in fields(config):
        roles = f.metadata.get("key", default)
        value = getattr(config, f.name)
        if roles == "nested" and is_dataclass(value):
            out.update(key_fields(value, role))
        elif role in roles:
            unkeyed = f.metadata.get("unkeyed", ())
            out[f.name] = {k: v for k, v in value.items() if k not in unkeyed} if unkeyed else value
    return out


def _defaults(config, role: str) -> dict:
    """The default values of ``config``'s ``role`` fields (not of nested configs)."""
    out = {}
    for f in fields(config):
        if role in f.metadata.get("key", ()):
            out[f.name] = f.default if f.default is not MISSING else f.default_factory()
    return out


def job_key(config) -> str:
    """What identifies a run before it is prepared: two configs with equal keys train the same run."""
    return json.dumps(key_fields(config, "job"), sort_keys=True, default=str)


def train_fingerprint(train) -> dict:
    """The training settings that change a run's numbers (a :class:`~dpclab.trainconfig.TrainConfig`)."""
    return key_fields(train, "fingerprint")


def full_fingerprint(train, fingerprint: dict) -> str:
    """The JSON string stored with a run and its checkpoints: training settings and the run's ``fingerprint``."""
    return json.dumps({"train": train_fingerprint(train), **fingerprint}, sort_keys=True, default=str)


@dataclass(frozen=True)
class RunKey:
    """Which run a configuration is: where it lives and what is compared before it is reused or resumed."""

    #: runs_dir/<backbone>/<dataset>/<method>/shots<K>-seed<S>-<hash of the inputs and non-default options>
    run_dir: Path
    #: what identifies the run besides its training settings (model, data, options)
    fingerprint: dict
    #: :func:`full_fingerprint`: the training settings included
    full: str


def run_key(config, train, backbone: str, inputs: str, crop_scale, revision: dict | None = None) -> RunKey:
    """The :class:`RunKey` of the run ``config`` (a RunConfig) trained with ``train`` (its TrainConfig) on the
    backbone whose key is ``backbone``, reading the images whose key is ``inputs`` (a run made from other image files
    is never reused) with ``crop_scale``. ``revision`` (:attr:`MethodSpec.revision`, when not empty): a run made by an
    older revision of the method's code is kept in its own directory, never reused."""
    rev = {"revision": revision} if revision else {}
    options = key_fields(config, "options")
    tag = {"inputs": inputs, **rev, **(options if options != _defaults(config, "options") else {})}
    digest = hashlib.sha1(json.dumps(tag, sort_keys=True, default=str).encode()).hexdigest()[:8]
    d = key_fields(config, "dir")
    run_dir = Path(d["runs_dir"]) / backbone / d["dataset"] / d["method"] / f"shots{d['shots']}-seed{d['seed']}-{digest}"
    fp = {**rev, **key_fields(config, "fingerprint"), "inputs": inputs, "backbone": backbone,
          "crop_scale": list(crop_scale)}
    return RunKey(run_dir, fp, full_fingerprint(train, fp))


__all__ = ["ROLES", "key_fields", "job_key", "train_fingerprint", "full_fingerprint", "RunKey", "run_key"]
