"""The library works with the lab absent: a fresh interpreter that refuses every ``dpclab.lab`` import trains and
evaluates a run on the embedded backend (the world written by the library itself)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import importlib.abc, sys

    class BlockLab(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "dpclab.lab" or name.startswith("dpclab.lab."):
                raise ImportError(f"the lab is blocked in this test: {name}")
            return None

    sys.meta_path.insert(0, BlockLab())
    import json
    from dpclab.data.world import ensure_world
    from dpclab.pipeline import RunConfig, run
    from dpclab.source import Source

    src = Source(data_root="data/world", cache_dir="data/cache", runs_dir="runs", results="runs/results.csv")
    ensure_world(src.data_root, ["world_tint"])
    res = run(RunConfig("coop", "world_tint", seed=1, source=src, train={"epochs": 1}, progress=False))
    zs = run(RunConfig("zeroshot", "world_tint", seed=1, source=src, progress=False))
    assert not [m for m in sys.modules if m.startswith("dpclab.lab")], "a lab module was imported"
    print(json.dumps({"coop": res.metrics, "zeroshot": zs.metrics}))
""")


def test_the_library_trains_and_evaluates_with_the_lab_blocked(tmp_path):
    out = subprocess.run([sys.executable, "-c", SCRIPT], cwd=tmp_path, capture_output=True, text=True, timeout=600,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert out.returncode == 0, out.stderr[-3000:]
    metrics = json.loads(out.stdout.strip().splitlines()[-1])
    for name in ("coop", "zeroshot"):
        assert set(metrics[name]) >= {"base", "new", "hm"} and 0 < metrics[name]["base"] <= 100
    assert (tmp_path / "runs" / "results.csv").is_file()
