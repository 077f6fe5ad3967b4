"""One run key: :mod:`dpclab.runkey` computes what the six definitions before it computed (kept here verbatim as
``_old_*``), so a run directory made by the older code is found and reused, never retrained."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from dpclab.lab.plan import PlannedRun
from dpclab.lab.trainjobs import job_key_of as job_run_key
from dpclab.pipeline import _same_data
from dpclab.methods.table import resolve
from dpclab.runconfig import RunConfig, train_config, with_method_data
from dpclab.runkey import job_key, key_fields, run_key
from dpclab.trainconfig import TrainConfig

BACKBONE, INPUTS, CROP = "dpclab-tiny-embedded", "0123456789abcdef", (0.08, 1.0)


# ---------------------------------------------------------------- the definitions before dpclab.runkey (2063d05)
def _old_run_dir(cfg, backbone_key, inputs_key, revision=None):  # pipeline.run_dir_for
    extra = {"inputs": inputs_key, **({"revision": revision} if revision else {})}
    if cfg["train"] or cfg["method_cfg"] or cfg["train_classes"] != "base" or cfg["base_method_cfg"] or cfg["base_train"]:
        extra.update(train=cfg["train"], method_cfg=cfg["method_cfg"], train_classes=cfg["train_classes"],
                     base_method_cfg=cfg["base_method_cfg"], base_train=cfg["base_train"])
    tag = hashlib.sha1(json.dumps(extra, sort_keys=True, default=str).encode()).hexdigest()[:8]
    return Path(cfg["runs_dir"]) / backbone_key / cfg["dataset"] / cfg["method"] / \
        f"shots{cfg['shots']}-seed{cfg['seed']}-{tag}"


def _old_fingerprint(cfg, backbone_key, inputs_key, crop_scale, revision=None):  # pipeline._fingerprint
    return {**({"revision": revision} if revision else {}), "method": cfg["method"], "method_cfg": cfg["method_cfg"],
            "base_method_cfg": cfg["base_method_cfg"], "base_train": cfg["base_train"], "dataset": cfg["dataset"],
            "inputs": inputs_key, "backbone": backbone_key, "shots": cfg["shots"],
            "train_classes": cfg["train_classes"], "crop_scale": list(crop_scale)}


def _old_config_fingerprint(tcfg, extra):  # train.config_fingerprint (with main's checkpoint options left out)
    d = {k: v for k, v in asdict(tcfg).items()
         if k not in ("progress", "num_workers", "checkpoint_steps", "checkpoint_minutes")}
    return json.dumps({"train": d, **extra}, sort_keys=True, default=str)


def _old_job_key(cfg):  # trainjobs.run_key, after with_method_data
    fields = ("method", "dataset", "data_root", "model", "pretrained", "shots", "seed", "precision", "train",
              "method_cfg", "base_method_cfg", "base_train", "train_classes", "runs_dir")
    return json.dumps({k: cfg[k] for k in fields}, sort_keys=True, default=str)


#: pipeline.DATA_FIELDS
_OLD_DATA_FIELDS = ("dataset", "data_root", "model", "pretrained", "shots", "seed", "device", "precision",
                    "cache_dir", "train_classes")


def flat(cfg: RunConfig) -> dict:
    """The RunConfig as the older code saw it: the source's fields at the top level."""
    d = {k: v for k, v in vars(cfg).items() if k != "source"}
    return {**d, **{k: v for k, v in vars(cfg.source).items() if k != "backend"}}


CONFIGS = [
    RunConfig.of(method="coop", dataset="world_tint"),
    RunConfig.of(method="zeroshot", dataset="world_shapes", seed=3, shots=0),
    RunConfig.of(method="coop", dataset="eurosat", data_root="/data", model="ViT-B-16", pretrained="openai",
                 precision="fp16", runs_dir="/runs", train={"epochs": 7}),
    RunConfig.of(method="coop+dpc", dataset="world_tint", method_cfg={"mode": "released"}, base_train={"epochs": 2},
                 train={"epochs": 2}),
    RunConfig.of(method="coop+dept", dataset="world_tint", base_method_cfg={"n_ctx": 16, "ctx_init": None}),
    RunConfig.of(method="kgcoop", dataset="world_tint", train_classes="all", device="cpu", cache_dir=None),
    RunConfig.of(method="promptkd", dataset="world_shapes", method_cfg={"teacher_epochs": 2}, shots=8),
]


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.method)
@pytest.mark.parametrize("revision", [None, {"dpc": 2}])
def test_run_dir_and_fingerprints_equal_the_older_codes(cfg, revision):
    tcfg = train_config(cfg, resolve(cfg.method))
    key = run_key(cfg, tcfg, BACKBONE, INPUTS, CROP, revision)
    old = flat(cfg)
    assert key.run_dir == _old_run_dir(old, BACKBONE, INPUTS, revision)
    assert key.fingerprint == _old_fingerprint(old, BACKBONE, INPUTS, CROP, revision)
    assert key.full == _old_config_fingerprint(tcfg, _old_fingerprint(old, BACKBONE, INPUTS, CROP, revision))
    assert job_run_key(cfg) == _old_job_key(flat(with_method_data(cfg, resolve(cfg.method))))


def test_pinned_run_directories():
    """Two run directories as the code before dpclab.runkey named them (literals computed by the code at 2063d05: a default CoOp run
    and a DPC run with options)."""
    coop, dpc = CONFIGS[0], CONFIGS[3]
    assert run_key(coop, train_config(coop, resolve(coop.method)), BACKBONE, INPUTS, CROP).run_dir == \
        Path("runs/dpclab-tiny-embedded/world_tint/coop/shots16-seed1-4e91f57e")
    assert run_key(dpc, train_config(dpc, resolve(dpc.method)), BACKBONE, INPUTS, CROP, {"dpc": 2}).run_dir.name == \
        "shots16-seed1-1280a9ed"


def test_same_data_reads_the_data_fields():
    a = CONFIGS[0]
    assert set(key_fields(a, "data")) == set(_OLD_DATA_FIELDS)
    for name, value in (("shots", 4), ("device", "cpu"), ("seed", 2), ("train_classes", "all"), ("cache_dir", None)):
        assert not _same_data(a, a.replace(**{name: value})), name
    assert _same_data(a, a.replace(method="kgcoop", train={"epochs": 1}, runs_dir="elsewhere"))


def test_training_settings_outside_the_fingerprint():
    t = TrainConfig()
    fp = json.loads(run_key(CONFIGS[0], replace(t, progress=False, num_workers=4), BACKBONE, INPUTS, CROP).full)
    assert set(fp["train"]) == set(asdict(t)) - {"progress", "num_workers", "checkpoint_steps", "checkpoint_minutes"}


def test_planned_run_key_reads_the_job_fields():
    r = PlannedRun("02", "world_tint", "coop+dpc", 1, (("mode", "released"),), train=(("epochs", 2),))
    assert dict(r.key) == {"dataset": "world_tint", "method": "coop+dpc", "seed": 1, "method_cfg": (("mode", "released"),),
                           "train_classes": "base", "base_method_cfg": (), "train": (("epochs", 2),), "base_train": ()}
    assert replace(r, notebook="03", label="other", curve=True).key == r.key
    assert job_key(r.run_config(CONFIGS[0].source)) == job_key(r.run_config(CONFIGS[0].source, progress=False))


def test_run_config_holds_a_source_and_spells_none_of_its_fields():
    """One settings type: the source's fields are declared (and validated) on Source only."""
    from dataclasses import fields

    from dpclab.source import Source

    assert not {f.name for f in fields(RunConfig)} & {f.name for f in fields(Source)}
    cfg = RunConfig.of(method="coop", dataset="world_tint", shots=4, precision="fp16", train={"epochs": 2})
    assert (cfg.source.shots, cfg.source.precision, cfg.train) == (4, "fp16", {"epochs": 2})
    assert cfg.replace(shots=8).source.shots == 8 and cfg.source.shots == 4
    with pytest.raises(ValueError, match="shots must be an integer >= 0"):  # Source's validation, the only one
        RunConfig.of(shots=-1)
    with pytest.raises(TypeError, match="no field"):
        cfg.replace(shot=8)
    with pytest.raises(TypeError, match="must be a dpclab.source.Source"):
        RunConfig(source={"shots": 4})


def test_the_run_key_is_defined_once():
    """Which run is this -- its directory, fingerprints and job key -- is computed in ``dpclab/runkey.py`` alone: no
    other module defines a function of those names or hashes a config, and the callers (the pipeline's plan, the
    job lists, the report's plan) read :mod:`dpclab.runkey`. Before it there were six definitions (issue 28)."""
    import ast

    root = Path(__file__).resolve().parents[1] / "dpclab"
    names = {"run_key", "job_key", "full_fingerprint", "key_fields", "run_dir_for", "config_fingerprint"}
    defined, hashing = [], []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text())
        rel = str(path.relative_to(root.parent))
        defined += [f"{rel}:{n.name}" for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name in names]
        for call in ast.walk(tree):  # hashlib.<any>(json.dumps(...)...): hashing a serialised config or listing
            if (isinstance(call, ast.Call) and isinstance(call.func, ast.Attribute)
                    and ast.unparse(call.func.value) == "hashlib" and "json.dumps" in ast.unparse(call)):
                hashing.append(rel)
    assert sorted(defined) == ["dpclab/runkey.py:full_fingerprint", "dpclab/runkey.py:job_key",
                               "dpclab/runkey.py:key_fields", "dpclab/runkey.py:run_key"]
    # the other json hashes name data, not runs: a dataset's split listing (data/coop.py), the feature cache's image
    # listing (data/features.py)
    assert sorted(set(hashing)) == ["dpclab/data/coop.py", "dpclab/data/features.py", "dpclab/runkey.py"]
    for module in ("pipeline.py", "lab/trainjobs.py", "lab/plan.py"):
        assert "from dpclab.runkey import" in (root / module).read_text(), module
