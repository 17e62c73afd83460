"""ImageNet-style data for iFormer: the ImageFolder reader (timm's split names), and the embedded
digits written as a real ImageFolder tree and read back through it. Transforms: :mod:`iformer.transforms`.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import torch
from PIL import Image
from torch import Tensor
from torch.utils.data import DataLoader

from iformer.transforms import IMAGENET_MEAN, IMAGENET_STD, check_in_chans, eval_transform, train_transform
from shared.data import (
    ImageFileDataset,
    TensorBatchDataset,
    cache_dir,
    list_image_folder,
    load_digits,
    make_loader,
    read_images,
)
from shared.distributed import barrier, is_main_process
from shared.errors import UserError, require_path

TRAIN_SPLITS = ("train", "training")
EVAL_SPLITS = ("validation", "val", "valid", "eval", "evaluation")

_DIGITS_MARKER = "COMPLETE"


def find_split(root: Path, split: str) -> Path:
    """The split's folder under ``root``: the first of :data:`TRAIN_SPLITS` or :data:`EVAL_SPLITS` that exists.

    ``split`` is ``"train"`` or ``"eval"`` (timm's split search).
    """
    names = {"train": TRAIN_SPLITS, "eval": EVAL_SPLITS}.get(split)
    if names is None:
        raise ValueError(f"split must be 'train' or 'eval', got {split!r}")
    root = require_path(root, "dataset folder", kind="dir")
    for name in names:
        if (root / name).is_dir():
            return root / name
    raise UserError(f"no {split} split in {root}: expected a sub-folder named one of {', '.join(names)}")


def image_folder(root: Path, transform: Callable | None = None) -> ImageFileDataset:
    """The ImageFolder tree ``<root>/<class>/<image>`` (classes = sorted sub-folders), decoded as RGB on access.

    An unreadable image is reported by name when it is read (see :func:`shared.data.open_image`).
    """
    items, classes = list_image_folder(root)
    return ImageFileDataset(items, classes, transform=transform, mode="RGB")


def write_digits_image_folder(root: Path, size: int = 32) -> Path:
    """Write the embedded UCI digits as ``root/{train,val}/<class>/<index>.png`` (8-bit grayscale), once.

    The split is :func:`shared.data.load_digits`'s (1,442 train / 355 val). The tree is written in a temporary
    sibling folder and renamed into place, with a marker file naming its size, so an interrupted write never
    looks complete; a complete tree of the same size is reused.
    """
    if size < 1:
        raise UserError(f"digits image size must be at least 1, got {size}")
    root = Path(root)
    stamp = f"uci-digits {size}x{size}\n"
    if _digits_tree_matches(root, stamp):
        return root
    if root.is_dir() and not any(root.iterdir()):
        root.rmdir()
    root.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{root.name}.partial-", dir=root.parent))
    try:
        digits = load_digits(size=size)
        for split, images, labels in (("train", digits.x_train, digits.y_train), ("val", digits.x_test, digits.y_test)):
            pixels = (images[:, 0] * 255).round().clamp(0, 255).to(torch.uint8).numpy()
            for label in range(digits.num_classes):
                (partial / split / str(label)).mkdir(parents=True)
            for index, (image, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
                Image.fromarray(image).save(partial / split / str(label) / f"{index:04d}.png")
        (partial / _DIGITS_MARKER).write_text(stamp)
        try:
            os.replace(partial, root)
        except OSError:
            if not _digits_tree_matches(root, stamp):  # not another process's identical tree
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return root


def _digits_tree_matches(root: Path, stamp: str) -> bool:
    """Whether ``root`` holds a complete digits tree written with ``stamp``; UserError for anything else there."""
    marker = root / _DIGITS_MARKER
    if marker.is_file():
        if marker.read_text() == stamp:
            return True
        raise UserError(f"{root} holds digits of another size ({marker.read_text().strip()}): choose another folder")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise UserError(
            f"{root} exists but is not a complete digits ImageFolder tree: remove it or choose another folder"
        )
    return False


def load_image_folder_tensors(root: Path, img_size: int, in_chans: int) -> tuple[Tensor, Tensor, list[str]]:
    """A small ImageFolder read once into memory.

    Returns images (N, in_chans, img_size, img_size) float in [0, 1] (bilinear resize where the size
    differs; grayscale replicated for 3 channels, RGB converted to L for 1), labels int64 (N,) and the
    class names.
    """
    check_in_chans(in_chans)
    items, classes = list_image_folder(root)
    pixels = read_images([path for path, _ in items], img_size, mode="L" if in_chans == 1 else "RGB")
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return pixels.float().div_(255.0).contiguous(), labels, classes


class Loaders(NamedTuple):
    """The loaders of a run: ``prepare`` (or None) maps a batch on the device to model inputs."""

    train: DataLoader
    eval: DataLoader
    num_classes: int
    prepare: Callable[[Tensor], Tensor] | None


def digits_loaders(img_size: int, batch_size: int, seed: int, device: torch.device) -> Loaders:
    """The embedded default: digits written as an ImageFolder tree and read back by the real reader.

    The tensors stay in memory and ``prepare`` normalises a batch on the device with the ImageNet statistics.
    """
    root = cache_dir("iformer", "digits", f"size-{img_size}")
    if is_main_process():
        write_digits_image_folder(root, size=img_size)
    barrier()
    loaders, classes = [], []
    for split, shuffle in (("train", True), ("eval", False)):
        images, labels, classes = load_image_folder_tensors(find_split(root, split), img_size, in_chans=3)
        loaders.append(
            make_loader(TensorBatchDataset(images, labels), batch_size, shuffle=shuffle, seed=seed, device=device)
        )
    mean = torch.tensor(IMAGENET_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=device).view(1, 3, 1, 1)
    return Loaders(loaders[0], loaders[1], len(classes), lambda x: (x - mean) / std)


def folder_loaders(
    root: Path,
    img_size: int,
    batch_size: int,
    *,
    auto_augment: str | None,
    re_prob: float,
    crop_pct: float,
    seed: int,
    workers: int,
    device: torch.device,
) -> Loaders:
    """An ImageFolder dataset with train/ and val/ splits, read on the fly through the paper's transforms."""
    root = require_path(root, "--data folder", kind="dir")
    train_set = image_folder(
        find_split(root, "train"), train_transform(img_size, auto_augment=auto_augment, re_prob=re_prob)
    )
    eval_set = image_folder(find_split(root, "eval"), eval_transform(img_size, crop_pct=crop_pct))
    if train_set.classes != eval_set.classes:
        raise UserError(f"{root}: the train and eval splits have different class folders")
    common = {"seed": seed, "workers": workers, "device": device}
    train = make_loader(train_set, batch_size, shuffle=True, drop_last=True, **common)
    return Loaders(train, make_loader(eval_set, batch_size, **common), len(train_set.classes), None)
