"""The checks before any job starts or is submitted (``grid``, ``report``, ``estimate``): a 332-task array that would
fail after its queue wait is refused here, in one line naming the fix.

* :func:`check_data` -- every planned dataset's split file read, a sample of its listed images found and a few
  decoded, from the data root as the jobs will see it (the same normalised path: on a cluster, a file system the
  compute nodes share);
* :func:`resolve_weights` -- every open_clip tag the runs load (a PromptKD teacher's included) resolved once, here,
  to its local file (``dpclab.backbones.cached_weights``); the jobs are handed that file
  (:func:`dpclab.lab.trainjobs.with_weights`), so compute nodes without internet download nothing. A tag with no
  local copy is refused where the jobs would download it (``--slurm``) unless ``--allow-download``;
* :func:`preflight` -- both, with the lines the command prints.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Sequence

from PIL import Image

from dpclab.backbones import EMBEDDED_PRETRAINED, cached_weights
from dpclab.data.coop import load_dataset
from dpclab.experiment import dataset_specs
from dpclab.pipeline import step_configs

#: images per dataset opened and decoded (besides the existence check of a larger sample by ``load_dataset``)
DECODE_SAMPLE = 4
#: listed images per split whose files must exist
EXIST_SAMPLE = 64


class PreflightError(ValueError):
    """A check before submission failed; the message is one line naming the fix."""


@dataclass
class Preflight:
    """What the checks found: the lines to print, and the weights files to hand the jobs (``"model/tag"`` -> file)."""

    #: what was checked, one line each (the command prints them with a ``pre-flight:`` prefix)
    lines: list[str] = field(default_factory=list)
    #: ``"model/tag"`` -> the local weights file resolved on this host, handed to the jobs
    weights: dict[str, str] = field(default_factory=dict)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()).rstrip(".")


def check_data(data_root: str, datasets: Iterable[str], decode: int = DECODE_SAMPLE) -> list[str]:
    """Every dataset readable from ``data_root``: its split file, :data:`EXIST_SAMPLE` listed images per split found,
    ``decode`` of them decoded. One line per dataset; :class:`PreflightError` naming every unreadable one."""

    specs = dataset_specs()
    names = list(dict.fromkeys(datasets))
    lines, problems = [], []
    for name in names:
        try:
            data = load_dataset(data_root, name, specs, check_images=EXIST_SAMPLE)
            items = data.train + data.test
            picks = [items[i] for i in range(0, len(items), max(1, len(items) // decode))][:decode]
            for d in picks:
                with Image.open(d.impath) as im:
                    im.convert("RGB")
        except (ValueError, OSError) as err:  # DatasetError is a ValueError; PIL raises OSError subclasses
            problems.append(f"{name}: {_one_line(err)}")
            continue
        lines.append(f"data: {name} readable ({len(data.train)} train / {len(data.test)} test images listed, "
                     f"{len(picks)} decoded)")
    if problems:
        more = f" (and {len(problems) - 1} more: {', '.join(p.split(':')[0] for p in problems[1:])})" \
            if len(problems) > 1 else ""
        raise PreflightError(f"pre-flight: {len(problems)} of {len(names)} planned datasets are not readable from "
                             f"the data root {data_root}, so their jobs would fail -- {problems[0]}{more}. Fix: pass "
                             f"-p data_root the folder holding eurosat/, dtd/, ... in the CoOp layout (on a cluster, "
                             f"a path the compute nodes see), or --datasets the ones present; nothing was started.")
    return lines


def weights_of(configs: Iterable) -> list[tuple[str, str]]:
    """Every (model, pretrained) the runs ``configs`` load: each run's own and those of the runs it builds on (a
    PromptKD teacher, DPC's step 1)."""

    pairs: dict[tuple[str, str], None] = {}
    for cfg in configs:
        for c, _, _ in step_configs(cfg):
            pairs[(c.source.model, c.source.pretrained)] = None
    return list(pairs)


def is_tag(pretrained: str) -> bool:
    """An open_clip tag (``openai``), not a file, the embedded checkpoint or random weights."""

    p = str(pretrained)
    return not (p in ("", "none", "random", EMBEDDED_PRETRAINED) or os.sep in p
                or Path(p).suffix in {".pt", ".pth", ".bin", ".safetensors"})


def resolve_weights(pairs: Sequence[tuple[str, str]], remote: bool, allow_download: bool = False) \
        -> tuple[dict[str, str], list[str]]:
    """Each tag of ``pairs`` -> its local file on this host (``{"model/tag": file}``) and the lines saying so. A tag
    with no local copy: a :class:`PreflightError` when ``remote`` jobs would download it (compute nodes often have
    no internet) unless ``allow_download``; else a line saying the jobs download it. Files are checked to exist."""

    files, lines, missing = {}, [], []
    for model, pretrained in pairs:
        if not is_tag(pretrained):
            if pretrained not in ("", "none", "random", EMBEDDED_PRETRAINED) and not Path(pretrained).expanduser().is_file():
                raise PreflightError(f"pre-flight: the weights file {pretrained} (model {model}) does not exist "
                                     f"here. Fix: pass -p pretrained an existing file (on a cluster, on a file system "
                                     f"the compute nodes see) or an open_clip tag; nothing was started.")
            continue
        local = cached_weights(model, pretrained)
        if local is None:
            missing.append(f"{model}/{pretrained}")
            continue
        files[f"{model}/{pretrained}"] = str(local)
        lines.append(f"weights: {model}/{pretrained} -> {local} (handed to the jobs; they download nothing)")
    for tag in missing:
        if remote and not allow_download:
            model, pretrained = tag.split("/", 1)
            raise PreflightError(
                f"pre-flight: weights {tag} have no local copy on this host and every job would download them "
                f"(compute nodes often have no internet: each task would fail after its queue wait). Fix: download "
                f"them here once (python -c \"import open_clip; open_clip.create_model('{model}', "
                f"pretrained='{pretrained}')\"), or pass -p pretrained a weights file the nodes can read, or "
                f"--allow-download if the compute nodes are online; nothing was submitted.")
        lines.append(f"weights: {tag} has no local copy; the jobs download it (open_clip's cache)")
    return files, lines


def preflight(source, configs: Sequence, remote: bool = False, allow_download: bool = False) -> Preflight:
    """The data and weights checks for the runs ``configs`` of ``source`` (``remote``: the jobs run elsewhere, SLURM)."""
    configs = list(configs)
    out = Preflight()
    out.lines += check_data(source.data_root, [c.dataset for c in configs])
    out.weights, lines = resolve_weights(weights_of(configs), remote, allow_download)
    out.lines += lines
    return out


__all__ = ["Preflight", "PreflightError", "preflight", "check_data", "resolve_weights", "weights_of", "is_tag"]
