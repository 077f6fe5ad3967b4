"""Images -> tensors -> frozen image features, with an on-disk cache.

Prompt learners that leave the image encoder untouched (CoOp, CoCoOp, KgCoOp, DPC and DePT on those) see
images only through the *frozen* image encoder, so its features can be computed once and reused across epochs,
seeds, methods and notebooks. Training augmentation stays faithful: each epoch ``e`` of the reference draws a
fresh random crop/flip; here view ``v`` of image ``i`` is a crop/flip drawn from a generator seeded by
``(seed, v, i)``, and epoch ``e`` uses view ``e % n_views``. With ``n_views >= epochs`` every epoch sees fresh
augmentations, exactly like the reference; fewer views trade augmentation variety for time (documented knob).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from dpclab.cpus import allocated_cpus
from dpclab.data.items import DatasetError, Datum
from dpclab.io import DamagedFileError, atomic_torch_save, file_lock, set_aside, torch_load
from dpclab.progress import progress_bar


class ToRGB:
    """PIL image -> RGB. A module-level class, not a lambda: transforms go to DataLoader worker processes, which
    under ``spawn`` (macOS, Windows) and ``forkserver`` (Linux from Python 3.14) receive them pickled."""

    def __call__(self, im: Image.Image) -> Image.Image:
        return im.convert("RGB")

    def __repr__(self) -> str:
        return "ToRGB()"


class PILRandomResizedCrop(T.RandomResizedCrop):
    """torchvision's ``RandomResizedCrop`` with the same random draws and the same pixels, in fewer operations per
    PIL image (the ratio's logarithm computed once, PIL's crop and resize called directly): the embedded world's
    32-px views cost ~0.16 ms each in torchvision's, ~0.07 ms here. Tensors go to torchvision's own."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        log_ratio = torch.log(torch.tensor(self.ratio))
        self._log_ratio = (float(log_ratio[0]), float(log_ratio[1]))  # what uniform_ receives in torchvision's
        self._resample = T.functional.pil_modes_mapping[self.interpolation]

    def forward(self, img):
        if not isinstance(img, Image.Image):
            return super().forward(img)
        i, j, h, w = self._params(img.size)
        return img.crop((j, i, j + w, i + h)).resize((self.size[1], self.size[0]), self._resample)

    def _params(self, size: tuple[int, int]) -> tuple[int, int, int, int]:
        """``RandomResizedCrop.get_params`` for a PIL image of ``size`` (width, height): the same calls on the
        default generator, in the same order."""
        width, height = size
        area = height * width
        (lo, hi), scale = self._log_ratio, self.scale
        for _ in range(10):
            target_area = area * torch.empty(1).uniform_(scale[0], scale[1]).item()
            aspect_ratio = torch.exp(torch.empty(1).uniform_(lo, hi)).item()
            w = int(round(math.sqrt(target_area * aspect_ratio)))
            h = int(round(math.sqrt(target_area / aspect_ratio)))
            if 0 < w <= width and 0 < h <= height:
                i = torch.randint(0, height - h + 1, size=(1,)).item()
                j = torch.randint(0, width - w + 1, size=(1,)).item()
                return i, j, h, w
        in_ratio = float(width) / float(height)  # torchvision's fallback: the central crop
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            h, w = height, int(round(height * max(self.ratio)))
        else:
            w, h = width, height
        return (height - h) // 2, (width - w) // 2, h, w


class ToNormalizedTensor:
    """``ToTensor()`` then ``Normalize(mean, std)`` in one step, with the same float32 operations in the same order
    (/255, -mean, /std: the same numbers bit for bit) on an RGB PIL image: ~0.03 ms against ~0.06 ms for a 32-px
    image. Any other input (another mode, a tensor, another default dtype) goes through torchvision's two."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]):
        self.mean, self.std = tuple(float(m) for m in mean), tuple(float(s) for s in std)
        self._mean = torch.tensor(self.mean, dtype=torch.float32).numpy().reshape(1, 1, -1)
        self._std = torch.tensor(self.std, dtype=torch.float32).numpy().reshape(1, 1, -1)
        self._reference = T.Compose([T.ToTensor(), T.Normalize(self.mean, self.std)])

    def __call__(self, pic) -> torch.Tensor:
        if not isinstance(pic, Image.Image) or pic.mode != "RGB" or torch.get_default_dtype() != torch.float32:
            return self._reference(pic)
        x = np.asarray(pic, dtype=np.uint8).astype(np.float32)
        x /= np.float32(255)
        x -= self._mean
        x /= self._std
        return torch.from_numpy(np.ascontiguousarray(x.transpose(2, 0, 1)))

    def __repr__(self) -> str:
        return f"ToNormalizedTensor(mean={list(self.mean)}, std={list(self.std)})"


def build_transforms(image_size: int, mean: Sequence[float], std: Sequence[float],
                     crop_scale: tuple[float, float] = (0.08, 1.0)) -> dict[str, Callable]:
    """The protocol's transforms (docs/protocol.md#transforms): train = RandomResizedCrop(scale .08-1, bicubic) +
    flip; test = resize + center crop. The crop and the final ToTensor + Normalize are :class:`PILRandomResizedCrop`
    and :class:`ToNormalizedTensor`: torchvision's numbers, faster."""
    bicubic = T.InterpolationMode.BICUBIC
    to_rgb = ToRGB()
    return {
        "train": T.Compose([to_rgb, PILRandomResizedCrop(image_size, scale=tuple(crop_scale), interpolation=bicubic),
                            T.RandomHorizontalFlip(), ToNormalizedTensor(mean, std)]),
        "test": T.Compose([to_rgb, T.Resize(image_size, interpolation=bicubic), T.CenterCrop(image_size),
                           ToNormalizedTensor(mean, std)]),
    }


#: images this small stay decoded in memory (per process) once read: the embedded world's 32 px images, where decoding
#: the file is ~10 % of encoding an augmented view and CoOp encodes 200 views of the same shots. Larger images (the
#: real datasets') are decoded every time. Keyed by path and (size, mtime_ns), so a replaced file is read again.
SMALL_IMAGE_PIXELS = 64 * 64
#: at most this many decoded small images are kept (~3 KB each at 32 px)
MAX_DECODED = 100_000
_decoded: dict[tuple, Image.Image] = {}


def load_image(path: str) -> Image.Image:
    """The image at ``path``, decoded (small images from memory after the first read: :data:`SMALL_IMAGE_PIXELS`).
    Callers must not modify it in place (the transforms return new images)."""
    key = (path, *file_stamp(path))
    im = _decoded.get(key)
    if im is not None:
        return im
    try:
        with Image.open(path) as im:
            im.load()
    except FileNotFoundError as err:
        raise DatasetError(f"Image file missing: {path}. Check the data root and that the dataset is extracted.") \
            from err
    except (UnidentifiedImageError, OSError) as err:
        raise DatasetError(f"Image file cannot be read: {path} ({err}). Re-download or remove it from the split.") \
            from err
    if im.width * im.height <= SMALL_IMAGE_PIXELS and len(_decoded) < MAX_DECODED:
        _decoded[key] = im
    return im


#: an augmented view's tensors are kept per :class:`ImageList` (one view) up to this many bytes, when small (at most
#: :data:`SMALL_IMAGE_PIXELS` pixels): DPC's hard-negative batches read each image of a view ~8 times per epoch
#: (as an anchor, then as other anchors' negatives) and would otherwise transform it afresh each time
MAX_VIEW_BYTES = 256 * 2 ** 20


class ImageList(Dataset):
    """(image tensor, label, index) for a list of :class:`Datum`. With ``view_seed`` set, the random transform of
    item ``i`` is drawn from the CPU generator seeded with ``hash(view_seed, i)`` so an augmented view is reproducible;
    a small image's view is then transformed once and the same tensor returned again (:data:`MAX_VIEW_BYTES`):
    callers must not modify it in place (batches stack copies)."""

    def __init__(self, items: Sequence[Datum], transform: Callable, view_seed: int | None = None):
        self.items, self.transform = list(items), transform
        self.view_seed = view_seed

    @property
    def view_seed(self) -> int | None:
        return self._view_seed

    @view_seed.setter
    def view_seed(self, seed: int | None) -> None:
        """Another view: the kept tensors were the old view's (DPC's released crops set a seed per draw)."""
        self._view_seed = seed
        self._views: dict[int, torch.Tensor] = {}
        self._view_bytes = 0

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        d = self.items[i]
        if self.view_seed is None:
            return self.transform(load_image(d.impath)), d.label, i
        x = self._views.get(int(i))
        if x is None:
            img = load_image(d.impath)
            with torch.random.fork_rng(devices=[]):
                # the CPU generator only: transforms run on the CPU, and torch.manual_seed would also queue a
                # seed for every accelerator backend (with a captured stack each: ~40% of the view cost here)
                torch.default_generator.manual_seed((self.view_seed * 1_000_003 + i) % (2 ** 63))
                x = self.transform(img)
            size = x.numel() * x.element_size() if isinstance(x, torch.Tensor) else None
            if size is not None and x.dim() >= 2 and x.shape[-1] * x.shape[-2] <= SMALL_IMAGE_PIXELS and \
                    self._view_bytes + size <= MAX_VIEW_BYTES:
                self._views[int(i)] = x
                self._view_bytes += size
        return x, d.label, i


def file_stamp(path: str) -> tuple[int, int]:
    """(size, mtime_ns) of an image file: what the caches key on, so an image replaced in place invalidates them.

    Chosen over hashing the bytes: a stat is ~10 us per image, reading and hashing a 100 KB JPEG ~300 us (sha1,
    warm page cache), i.e. ~1 s against ~40 s for the 133k test images of the 11 datasets at every evaluation."""
    try:
        st = os.stat(path)
    except FileNotFoundError as err:
        raise DatasetError(f"Image file missing: {path}. Check the data root and that the dataset is extracted.") \
            from err
    return st.st_size, st.st_mtime_ns


def items_digest(items: Sequence[Datum]) -> str:
    """Identifies a list of images by path, label and the (size, mtime_ns) of each file."""
    rows = [[d.impath, d.label, *file_stamp(d.impath)] for d in items]
    return hashlib.sha1(json.dumps(rows).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class FeatureKey:
    """What a cached feature tensor depends on: the weights, the exact image list (paths, labels and file stamps),
    the transform and view."""

    backbone: str
    items: str  # items_digest
    transform: str  # "test" or "train"
    view: int = 0
    seed: int = 0

    def filename(self) -> str:
        return f"{self.backbone}/{self.transform}-v{self.view}-s{self.seed}-{self.items}.pt"


#: the most DataLoader worker processes :func:`default_num_workers` picks
MAX_WORKERS = 8


def default_num_workers(image_size: int, cpu_count: int | None = None) -> int:
    """DataLoader workers that decode and augment images in parallel with the model.

    Real CLIP (224-px inputs from JPEGs of a few hundred pixels): ``min(8, cpus - 1)`` of the allocated CPUs
    (:func:`allocated_cpus`), so decoding keeps up with a GPU. Small inputs (the embedded 32-px model, the tests'
    tiny models) decode in microseconds and worker start-up would cost more than it saves: 0, i.e. in the main
    process (also the answer with 1-2 CPUs)."""
    cpus = allocated_cpus() if cpu_count is None else cpu_count
    if image_size <= 64 or not cpus or cpus <= 2:
        return 0
    return min(MAX_WORKERS, cpus - 1)


def ignore_time_limit_signal(worker_id: int = 0) -> None:
    """DataLoader worker start-up: ignore SIGUSR2, the time-limit warning SLURM sends to every process of a job
    step. The job's main process checkpoints and requeues on it (``dpclab.lab.jobs``); a loader worker killed by it
    first would turn the requeue into a "DataLoader worker killed" failure."""
    if hasattr(signal, "SIGUSR2"):
        signal.signal(signal.SIGUSR2, signal.SIG_IGN)


def loader_options(num_workers: int, device: torch.device | str | None = None) -> dict:
    """DataLoader keyword arguments: workers (with a deeper prefetch queue, deaf to the time-limit signal) and
    pinned memory when feeding CUDA, so host-to-device copies run asynchronously (``.to(device,
    non_blocking=True)``)."""
    cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
    opts = {"num_workers": int(num_workers), "pin_memory": cuda}
    if num_workers > 0:
        opts.update(prefetch_factor=4, worker_init_fn=ignore_time_limit_signal)
    return opts


@torch.no_grad()
def encode_image_list(model: torch.nn.Module, items: Sequence[Datum], transform: Callable, device: torch.device,
                      batch_size: int = 128, view_seed: int | None = None, num_workers: int = 0,
                      progress: bool = False, desc: str = "encode images") -> torch.Tensor:
    """Raw (unnormalised) image features [N, dim] of the frozen ``model.encode_image``.

    The features stay on ``device`` until the end (one copy back, no per-batch synchronisation), so with workers
    the next batches are decoded while the model runs."""
    loader = DataLoader(ImageList(items, transform, view_seed), batch_size=batch_size, shuffle=False,
                        **loader_options(num_workers, device))
    feats = []
    for x, _, _ in progress_bar(loader, enabled=progress, desc=desc, leave=False):  # inner bar: cleared when done
        feats.append(model.encode_image(x.to(device, non_blocking=True)).float())
    return torch.cat(feats).cpu() if feats else torch.empty(0)


def cached_features(model: torch.nn.Module, backbone_key: str, items: Sequence[Datum], transform: Callable,
                    transform_name: str, device: torch.device, cache_dir: str | os.PathLike | None,
                    view: int = 0, seed: int = 0, batch_size: int = 128, progress: bool = False,
                    num_workers: int = 0) -> torch.Tensor:
    """Features for ``items`` from the cache, computing and storing them (atomically) on a miss.

    A ``transform_name`` starting with ``"train"`` draws augmented view ``view`` (seeded by ``seed``); ``"test"`` is
    deterministic. The name is part of the cache key, so two training transforms need two names. A miss is
    encoded under a lock on the entry: concurrent workers asking for the same view encode it once (the others
    wait, then read it). Stored features are read onto the CPU whatever device wrote them.
    """
    train = transform_name.startswith("train")
    key = FeatureKey(backbone_key, items_digest(items), transform_name, view if train else 0, seed if train else 0)
    view_seed = (seed * 7919 + view) if train else None

    def encode() -> torch.Tensor:
        return encode_image_list(model, items, transform, device, batch_size, view_seed, num_workers=num_workers,
                                 progress=progress, desc=f"{transform_name} features v{view}")

    if cache_dir is None:
        return encode()
    path = Path(cache_dir) / "features" / key.filename()
    stored = _read_cached(path, len(items))
    if stored is not None:
        return stored
    with file_lock(path.parent / f".{path.name}.lock"):
        stored = _read_cached(path, len(items))  # another worker may have encoded it while this one waited
        if stored is not None:
            return stored
        feats = encode()
        atomic_torch_save(feats, path)
    return feats


def _read_cached(path: Path, n: int) -> torch.Tensor | None:
    """The cached features at ``path`` (None on a miss); a damaged entry (cut short, corrupted, not a tensor) is
    moved aside with a warning naming it, and recomputed (None)."""
    if not path.is_file():
        return None
    try:
        stored = torch_load(path, map_location="cpu")
        if not isinstance(stored, torch.Tensor):
            raise DamagedFileError(path, f"holds a {type(stored).__name__}, not a feature tensor")
    except DamagedFileError as err:
        set_aside(err, "recomputed")
        return None
    return stored if stored.shape[0] == n else None
