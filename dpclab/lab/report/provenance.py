"""What produced a report: ``reports/provenance.json`` and the provenance table of ``index.html``.

Recorded: dpclab's version and git commit (and whether the tree was dirty), the command and the notebooks'
parameters, Python / torch / open_clip / CUDA versions, the device's name, the precision, the weights file's
sha256, per dataset its split file's sha256 and image counts, the seeds, and the report's wall time."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

import dpclab
from dpclab.backbones import EMBEDDED_PRETRAINED, embedded_checkpoint, resolve_device
from dpclab.data.coop import load_dataset
from dpclab.io import atomic_write_text, sha256_file
from dpclab.lab.report.index import PROVENANCE_FILE
from dpclab.experiment import dataset_specs
from dpclab.source import EMBEDDED_DATA_ROOT, Source

#: the notebooks' parameters cell defaults (what a report runs with when no ``-p`` overrides them)
NOTEBOOK_DEFAULTS = {"backend": "auto", "model": "dpclab-tiny", "pretrained": "embedded", "data_root": None,
                     "dataset": None, "shots": 16, "seeds": None, "epochs": None, "device": "auto",
                     "precision": "fp32", "quick": False, "interactive": True}


def git_state(path: str | Path) -> dict:
    """``{"commit": <sha>, "dirty": bool}`` of the git checkout holding ``path``; commit None outside one."""
    def git(*args: str) -> str:
        return subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=30,
                              check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
        dirty = bool(git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None}
    return {"commit": commit, "dirty": dirty}


def invocation() -> list[str]:
    """This process's command line as typed: ``python -m dpclab report ...`` for the CLI."""
    argv = list(sys.argv)
    if argv and Path(argv[0]).name == "__main__.py" and Path(argv[0]).parent.name == "dpclab":
        return ["python", "-m", "dpclab", *argv[1:]]
    return ["python", *argv]


def device_name(device: str = "auto") -> str:
    """The device the notebooks ran on, by name: the CUDA GPU's, or the CPU's model and core count."""
    dev = resolve_device(device)
    if dev.type == "cuda":
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"CPU: {cpu} ({os.cpu_count()} logical cores)"


def _cached_weights(model: str, pretrained: str) -> Path | None:
    """The file open_clip loads for a pretrained tag, when it is in the local Hugging Face cache."""
    try:
        import open_clip
        from huggingface_hub import try_to_load_from_cache

        cfg = open_clip.get_pretrained_cfg(model, pretrained)
        parts = cfg.get("hf_hub", "").strip("/").split("/")  # "timm/vit_base_patch16_clip_224.openai/"
        if len(parts) < 2:
            return None
        names = parts[2:] or ["open_clip_model.safetensors", "open_clip_pytorch_model.bin"]
        for name in names:
            found = try_to_load_from_cache("/".join(parts[:2]), name)
            if isinstance(found, str):
                return Path(found)
    except Exception:  # noqa: BLE001 - provenance is best effort for downloaded weights
        return None
    return None


def weights(model: str, pretrained: str, cwd: str | Path = ".") -> dict:
    """The weights' file and sha256: the embedded checkpoint, a checkpoint path, or a tag's cached download."""
    if pretrained == EMBEDDED_PRETRAINED:
        path = embedded_checkpoint()
    elif Path(cwd, str(pretrained)).expanduser().is_file():
        path = Path(cwd, str(pretrained)).expanduser()
    else:
        path = _cached_weights(model, str(pretrained))
    if path is None or not path.is_file():
        return {"model": model, "pretrained": pretrained, "file": None, "sha256": None,
                "note": "open_clip tag: the downloaded file was not found in the local cache"}
    return {"model": model, "pretrained": pretrained, "file": str(path), "sha256": sha256_file(path)}


def datasets(names: list[str], data_root: Path) -> dict:
    """Per dataset: the split file and its sha256, classes and images per split (or the error reading it)."""
    specs = dataset_specs()
    out = {}
    for name in names:
        try:
            data = load_dataset(data_root, name, specs=specs, check_images=1)
        except Exception as err:  # noqa: BLE001 - a missing dataset is recorded, not fatal
            out[name] = {"error": f"{type(err).__name__}: {str(err)[:300]}"}
            continue
        source = Path(data.meta["source"])
        out[name] = {"split_file": str(source) if source.is_file() else None,
                     "split_sha256": sha256_file(source) if source.is_file() else None,
                     "listing_fingerprint": data.meta.get("fingerprint"), "classes": data.num_classes,
                     "images": {"train": len(data.train), "val": len(data.val), "test": len(data.test)}}
    return out


def provenance(parameters: dict, dataset_names: list[str], seeds: list, cwd: str | Path = ".",
               wall_seconds: float | None = None, command: list[str] | None = None,
               training: dict | None = None) -> dict:
    """The provenance record of a report run with these notebook ``parameters`` in ``cwd``, whose notebooks used
    ``dataset_names`` and ``seeds`` (:func:`dpclab.lab.plan.planned_datasets`)."""
    import open_clip

    p = {**NOTEBOOK_DEFAULTS, **parameters}
    src = Source.from_parameters(p)
    backend = src.backend
    names = list(dataset_names)
    root = Path(cwd, str(Path(p["data_root"] or EMBEDDED_DATA_ROOT).expanduser())).resolve()
    cuda = torch.version.cuda
    return {
        "dpclab": {"version": dpclab.__version__, **git_state(Path(dpclab.__file__).parent)},
        "command": " ".join(command if command is not None else invocation()),
        "parameters": parameters,
        "generated": time.strftime("%Y-%m-%d %H:%M:%S %z"),
        "wall_seconds": None if wall_seconds is None else round(wall_seconds, 1),
        "training": None if training is None else {k: round(v, 1) if isinstance(v, float) else v
                                                   for k, v in training.items()},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "open_clip": open_clip.__version__, "cuda": cuda,
                     "cuda_available": torch.cuda.is_available()},
        "platform": platform.platform(),
        "device": device_name(str(p["device"])),
        "precision": p["precision"],
        "backend": backend,
        "weights": weights(p["model"], str(p["pretrained"]), cwd),
        "data_root": str(root),
        "datasets": datasets(names, root),
        "shots": p["shots"],
        "seeds": seeds,
        "quick": bool(p["quick"]),
    }


def write_provenance(record: dict, out_dir: str | Path) -> Path:
    """``<out_dir>/provenance.json``, atomically."""
    return atomic_write_text(Path(out_dir) / PROVENANCE_FILE, json.dumps(record, indent=1, default=str) + "\n")


__all__ = ["provenance", "write_provenance", "git_state", "device_name", "weights", "datasets"]
