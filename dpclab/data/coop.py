"""Datasets in the CoOp layout, few-shot sampling and the base-to-new split, with the reference semantics.

Layouts supported (docs/protocol.md#datasets):
  * ``json``     -- ``<root>/<dirname>/<image_dir>/...`` plus ``<root>/<dirname>/split_zhou_<Name>.json`` with keys
                    train/val/test, each entry ``[relative_impath, label, classname]`` (9 of the 11 datasets and
                    the embedded world);
  * ``aircraft`` -- FGVC-Aircraft: ``images_variant_{train,val,test}.txt`` + ``variants.txt``;
  * ``imagenet`` -- ``images/{train,val}/<wnid>/`` + ``classnames.txt`` (val is the test set, as in CoOp);
  * ``folder``   -- an ImageFolder-style custom dataset: ``<path>/{train,val,test}/<classname>/<image>``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import warnings
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Sequence

from dpclab.data.items import DatasetError, Datum
from dpclab.io import DamagedFileError, atomic_write_json, read_json, set_aside

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff"}


def normalise_root(path: str | os.PathLike) -> str:
    """A data root as one string: ``~`` expanded, absolute, symlinks resolved. A relative and an absolute path to the
    same folder give the same string, so the same images get the same run key."""
    return str(Path(path).expanduser().resolve())


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    dirname: str
    layout: str = "json"  # json | aircraft | imagenet | folder
    image_dir: str = "images"
    split_file: str | None = None
    template: str = "a photo of a {}."
    #: RandomResizedCrop scale of the training transform (0.08-1 for the real datasets, docs/protocol.md#transforms)
    crop_scale: tuple[float, float] = (0.08, 1.0)


@dataclass
class DatasetSplits:
    """One dataset: its splits and class names (``classnames[label]``) and its hand-crafted template."""

    name: str
    train: list[Datum]
    val: list[Datum]
    test: list[Datum]
    classnames: list[str]
    template: str = "a photo of a {}."
    meta: dict = field(default_factory=dict)
    crop_scale: tuple[float, float] = (0.08, 1.0)

    @property
    def num_classes(self) -> int:
        return len(self.classnames)


DATASETS: dict[str, DatasetSpec] = {
    s.name: s
    for s in [
        DatasetSpec("imagenet", "imagenet", "imagenet", "images"),
        DatasetSpec("caltech101", "caltech-101", "json", "101_ObjectCategories", "split_zhou_Caltech101.json"),
        DatasetSpec("oxford_pets", "oxford_pets", "json", "images", "split_zhou_OxfordPets.json",
                    "a photo of a {}, a type of pet."),
        DatasetSpec("stanford_cars", "stanford_cars", "json", "", "split_zhou_StanfordCars.json"),
        DatasetSpec("oxford_flowers", "oxford_flowers", "json", "jpg", "split_zhou_OxfordFlowers.json",
                    "a photo of a {}, a type of flower."),
        DatasetSpec("food101", "food-101", "json", "images", "split_zhou_Food101.json",
                    "a photo of {}, a type of food."),
        DatasetSpec("fgvc_aircraft", "fgvc_aircraft", "aircraft", "images", None,
                    "a photo of a {}, a type of aircraft."),
        DatasetSpec("sun397", "sun397", "json", "SUN397", "split_zhou_SUN397.json"),
        DatasetSpec("dtd", "dtd", "json", "images", "split_zhou_DescribableTextures.json", "{} texture."),
        DatasetSpec("eurosat", "eurosat", "json", "2750", "split_zhou_EuroSAT.json",
                    "a centered satellite photo of {}."),
        DatasetSpec("ucf101", "ucf101", "json", "UCF-101-midframes", "split_zhou_UCF101.json",
                    "a photo of a person doing {}."),
    ]
}
#: KgCoOp's anchor templates differ from CoOp's for one dataset (docs/protocol.md#class-names-and-templates).
KGCOOP_TEMPLATES = {"dtd": "a photo of a {}, a type of texture."}


def clean_classname(name: str) -> str:
    return name.replace("_", " ").strip()


def _require_dir(path: Path, what: str, fix: str) -> None:
    if not path.is_dir():
        raise DatasetError(f"{what} not found: {path}. {fix}")


def _require_file(path: Path, what: str, fix: str) -> None:
    if not path.is_file():
        raise DatasetError(f"{what} not found: {path}. {fix}")


def _classnames_from(items: Sequence[Datum], source: Path) -> list[str]:
    """``classnames[label]`` from items; a label with two names or a gap in labels is an error naming the file."""
    names: dict[int, str] = {}
    for d in items:
        if names.setdefault(d.label, d.classname) != d.classname:
            raise DatasetError(
                f"{source}: label {d.label} is used for two class names ({names[d.label]!r} and {d.classname!r}). "
                f"Each label must map to exactly one class name; fix the split file."
            )
    if not names:
        raise DatasetError(f"{source}: no images listed. Check the split file or folder.")
    labels = sorted(names)
    if labels != list(range(len(labels))):
        raise DatasetError(f"{source}: labels must be 0..{len(labels) - 1} without gaps; found {labels[:10]}...")
    return [names[i] for i in labels]


def read_json_split(path: Path, image_root: Path) -> dict[str, list[Datum]]:
    """Read a CoOp ``split_zhou_*.json``; validate every entry's shape (not yet the image files)."""
    fix = "Download the split file from the CoOp data instructions (DATASETS.md) into the dataset folder."
    _require_file(path, "Split file", fix)
    try:
        raw = json.loads(path.read_text())
    except ValueError as err:  # JSONDecodeError, or bytes that are not UTF-8
        if (path.parent / ".world_stamp").is_file():  # the generated world's (dpclab.data.world): write it again
            fix = (f"It is the generated world's: write it again with `python -m dpclab world --root "
                   f"{path.parent.parent} --names {path.parent.name}`.")
        else:
            fix = f"Re-download it. {fix}"
        raise DatasetError(f"Split file {path} is not valid JSON ({err}). {fix}") from err
    if not isinstance(raw, dict) or not {"train", "test"} <= set(raw):
        raise DatasetError(f"Split file {path} must be a JSON object with keys 'train', 'val', 'test'. {fix}")
    out = {}
    for split in ("train", "val", "test"):
        items = []
        for i, entry in enumerate(raw.get(split, [])):
            ok = (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], str)
                  and isinstance(entry[1], int) and not isinstance(entry[1], bool) and entry[1] >= 0
                  and isinstance(entry[2], str))
            if not ok:
                raise DatasetError(
                    f"Split file {path}: entry {i} of '{split}' is {entry!r}; expected "
                    f"[relative_image_path, label (int >= 0), classname]. Fix or re-download the file."
                )
            items.append(Datum(str(image_root / entry[0]), entry[1], clean_classname(entry[2])))
        out[split] = items
    return out


def _check_images_exist(items: Sequence[Datum], source: Path, sample: int = 0) -> None:
    """Check that image files exist (all of them, or a deterministic sample of ``sample`` for big sets)."""
    check = items if not sample or len(items) <= sample else [items[i] for i in
                                                               range(0, len(items), len(items) // sample)]
    for d in check:
        if not os.path.isfile(d.impath):
            raise DatasetError(
                f"Image listed in {source} is missing: {d.impath}. Is the data root right, and is the dataset "
                f"fully extracted in the CoOp layout?"
            )


def _read_aircraft(base: Path) -> tuple[dict[str, list[Datum]], list[str]]:
    variants = base / "variants.txt"
    _require_file(variants, "FGVC-Aircraft class list", "Extract fgvc-aircraft-2013b/data into fgvc_aircraft/.")
    classnames = [ln.strip() for ln in variants.read_text().splitlines() if ln.strip()]
    index = {c: i for i, c in enumerate(classnames)}
    out = {}
    for split in ("train", "val", "test"):
        path = base / f"images_variant_{split}.txt"
        _require_file(path, "FGVC-Aircraft split file", "Extract fgvc-aircraft-2013b/data into fgvc_aircraft/.")
        items = []
        for n, line in enumerate(path.read_text().splitlines()):
            if not line.strip():
                continue
            parts = line.strip().split(" ", 1)
            if len(parts) != 2 or parts[1] not in index:
                raise DatasetError(f"{path}, line {n + 1}: {line!r} is not '<image id> <variant in variants.txt>'.")
            items.append(Datum(str(base / "images" / f"{parts[0]}.jpg"), index[parts[1]], parts[1]))
        out[split] = items
    return out, classnames


def _read_imagenet(base: Path) -> tuple[dict[str, list[Datum]], list[str]]:
    names_file = base / "classnames.txt"
    _require_file(names_file, "ImageNet class-name file", "Put CoOp's classnames.txt into imagenet/.")
    wnids, classnames = [], []
    for line in names_file.read_text().splitlines():
        if line.strip():
            wnid, _, name = line.strip().partition(" ")
            wnids.append(wnid)
            classnames.append(clean_classname(name))
    out = {}
    for split in ("train", "val"):
        folder = base / "images" / split
        _require_dir(folder, "ImageNet image folder", "Expected imagenet/images/{train,val}/<wnid>/.")
        items = []
        for label, wnid in enumerate(wnids):
            for f in sorted((folder / wnid).iterdir()) if (folder / wnid).is_dir() else []:
                items.append(Datum(str(f), label, classnames[label]))
        out[split] = items
    return {"train": out["train"], "val": out["val"], "test": out["val"]}, classnames


def _read_folder(base: Path) -> tuple[dict[str, list[Datum]], list[str]]:
    _require_dir(base / "train", "Image-folder 'train' directory",
                 "A custom dataset needs <path>/train/<class>/<images> and <path>/test/<class>/<images>.")
    _require_dir(base / "test", "Image-folder 'test' directory",
                 "A custom dataset needs <path>/train/<class>/<images> and <path>/test/<class>/<images>.")
    classdirs = sorted(p.name for p in (base / "train").iterdir() if p.is_dir())
    classnames = [clean_classname(c) for c in classdirs]
    out = {}
    for split in ("train", "val", "test"):
        items = []
        for label, c in enumerate(classdirs):
            d = base / split / c
            for f in sorted(d.iterdir()) if d.is_dir() else []:
                if f.suffix.lower() in IMAGE_EXTENSIONS:
                    items.append(Datum(str(f), label, classnames[label]))
        out[split] = items
    return out, classnames


def load_dataset(root: str | os.PathLike, name: str, specs: dict[str, DatasetSpec] | None = None,
                 check_images: int = 256) -> DatasetSplits:
    """Load dataset ``name`` from data root ``root``. ``name`` may also be a path to an ImageFolder-style dataset.

    ``check_images`` existence-checks that many listed images per split (0 = all).
    """
    specs = DATASETS if specs is None else specs
    root = Path(normalise_root(root))
    if name not in specs and Path(name).expanduser().is_dir():
        spec = DatasetSpec(Path(name).name, str(Path(name).expanduser().resolve()), "folder")
    elif name not in specs:
        raise DatasetError(f"Unknown dataset {name!r}. Known: {', '.join(sorted(specs))}; or pass a folder path "
                           f"with train/ and test/ class subfolders.")
    else:
        spec = specs[name]
    _require_dir(root, "Data root", "Pass --data-root pointing at the folder that holds the dataset folders "
                 "(CoOp layout), or use the embedded world (python -m dpclab world).")
    base = root / spec.dirname
    _require_dir(base, f"Dataset folder for {spec.name!r}",
                 f"Expected {spec.dirname}/ under the data root (CoOp layout, see DATASETS.md of CoOp).")
    if spec.layout == "json":
        source = base / spec.split_file
        splits = read_json_split(source, base / spec.image_dir)
        classnames = _classnames_from(splits["train"] + splits["test"], source)
    elif spec.layout == "aircraft":
        source = base
        splits, classnames = _read_aircraft(base)
    elif spec.layout == "imagenet":
        source = base / "images"
        splits, classnames = _read_imagenet(base)
    elif spec.layout == "folder":
        source = base
        splits, classnames = _read_folder(base)
    else:
        raise DatasetError(f"Unknown layout {spec.layout!r} for dataset {spec.name!r}.")
    for split in ("train", "test"):
        if not splits[split]:
            raise DatasetError(f"{source}: the '{split}' split is empty.")
        _check_images_exist(splits[split], source, check_images)
    fingerprint = hashlib.sha1(
        json.dumps([[d.impath, d.label] for s in ("train", "val", "test") for d in splits[s]]).encode()
    ).hexdigest()[:12]
    return DatasetSplits(spec.name, splits["train"], splits["val"], splits["test"], classnames, spec.template,
                         meta={"source": str(source), "fingerprint": fingerprint}, crop_scale=tuple(spec.crop_scale))


# --------------------------------------------------------------------------------------------- few-shot, base/new
def group_by_label(items: Sequence[Datum]) -> "OrderedDict[int, list[Datum]]":
    """Items per label, labels in order of first appearance (Dassl's ``split_dataset_by_label``)."""
    groups: OrderedDict[int, list[Datum]] = OrderedDict()
    for d in items:
        groups.setdefault(d.label, []).append(d)
    return groups


def sample_few_shot(items: Sequence[Datum], k: int, rng: random.Random) -> list[Datum]:
    """``rng.sample(items_of_class, k)`` per class in order of first appearance; all items if a class has fewer."""
    out: list[Datum] = []
    for group in group_by_label(items).values():
        out.extend(rng.sample(group, k) if len(group) >= k else group)
    return out


class FewShotWarning(UserWarning):
    """K is larger than the number of training images of some classes (they keep all their images)."""


def short_classes(items: Sequence[Datum], k: int) -> dict[str, int]:
    """Classes with fewer than ``k`` items: {classname: count}."""
    return {g[0].classname: len(g) for g in group_by_label(items).values() if len(g) < k}


def few_shot(data: DatasetSplits, k: int, seed: int, cache_dir: str | os.PathLike | None = None) -> DatasetSplits:
    """K-shot train and min(K, 4)-shot val per class, sampled with ``random.Random(seed)`` (the reference seeds
    Python's ``random`` with the run seed, then samples train, then val). ``k <= 0`` keeps all data.

    A class with fewer than K training images keeps all of them, as the reference does; that is not an error,
    but the result is no longer a balanced K-shot set, so a :class:`FewShotWarning` names those classes.

    With ``cache_dir`` the sampled lists are stored as JSON per (dataset fingerprint, K, seed) and reused. They
    depend on the split listing only (paths and labels), not on the image bytes: an image replaced in place leaves
    them valid, while features and runs, keyed by the files' (size, mtime), are recomputed.
    """
    if k <= 0:
        return data
    short = short_classes(data.train, k)
    if short:
        listed = ", ".join(f"{name!r} ({n})" for name, n in list(short.items())[:10])
        more = f" and {len(short) - 10} more" if len(short) > 10 else ""
        warnings.warn(
            f"{data.name}: {k} shots requested but {len(short)} class(es) have fewer training images: {listed}{more}. "
            f"They use all their images (the reference's behaviour), so the set is not balanced; pass a smaller "
            f"--shots for a balanced K-shot set.", FewShotWarning, stacklevel=2)
    cache = None
    if cache_dir is not None:
        fp = data.meta.get("fingerprint", "nofp")
        cache = Path(cache_dir) / "fewshot" / f"{data.name}-{fp}-shot{k}-seed{seed}.json"
        if cache.is_file():
            stored = _read_split_cache(cache)
            if stored is not None:
                return replace(data, train=stored["train"], val=stored["val"])
    rng = random.Random(seed)
    train = sample_few_shot(data.train, k, rng)
    val = sample_few_shot(data.val, min(k, 4), rng)
    if cache is not None:
        rows = lambda items: [[d.impath, d.label, d.classname] for d in items]  # noqa: E731
        atomic_write_json(cache, {"train": rows(train), "val": rows(val)})
    return replace(data, train=train, val=val)


def _read_split_cache(path: Path) -> dict[str, list[Datum]] | None:
    """A few-shot split cache entry as {"train": [Datum], "val": [Datum]}; a damaged one (cut short, rows that are
    not [path, label, class]) is moved aside with a warning naming it, and sampled again (None)."""
    try:
        stored = read_json(path, ("train", "val"))
        try:
            return {k: [Datum(str(p), int(y), str(c)) for p, y, c in stored[k]] for k in ("train", "val")}
        except (TypeError, ValueError) as err:
            raise DamagedFileError(path, f"a row is not [path, label, class]: {err}") from err
    except DamagedFileError as err:
        set_aside(err, "sampled again")
        return None


def base_new_classes(num_classes: int) -> tuple[list[int], list[int]]:
    """Sorted labels split at ceil(n/2): base = first half (the larger one for odd n), new = the rest."""
    labels = list(range(num_classes))
    m = math.ceil(num_classes / 2)
    return labels[:m], labels[m:]


def subsample_classes(data: DatasetSplits, which: str) -> DatasetSplits:
    """Keep the ``base``, ``new`` or ``all`` classes in every split and relabel them 0.. in sorted order."""
    if which == "all":
        return data
    if which not in ("base", "new"):
        raise ValueError(f"subsample must be 'base', 'new' or 'all', got {which!r}")
    base, new = base_new_classes(data.num_classes)
    keep = base if which == "base" else new
    relabel = {y: i for i, y in enumerate(keep)}
    pick = lambda items: [Datum(d.impath, relabel[d.label], d.classname) for d in items if d.label in relabel]  # noqa
    return replace(data, train=pick(data.train), val=pick(data.val), test=pick(data.test),
                   classnames=[data.classnames[y] for y in keep], meta={**data.meta, "subsample": which})
