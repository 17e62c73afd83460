"""Domains as users have them on disk, and the embedded digit shifts.

A domain is read whole into memory as uint8 images resized to ``size`` x ``size``: the real datasets
of SlimDA hold at most a few thousand images per domain (VisDA-2017 aside). Two layouts are read:

- ImageFolder: ``<data>/<domain>/<class_name>/<image>``, class index = sorted class names; Office-31's
  ``<data>/<domain>/images/<class_name>/<image>`` too.
- List files: ``<data>/image_list/<domain>.txt`` (Transfer-Learning-Library) or ImageCLEF-DA's
  ``<data>/list/<domain>List.txt``, lines ``relative/path.jpg <int_label>`` with paths relative to ``<data>``.

Both are read through the image helpers of :mod:`shared.data` (listing, list files, decoding).

The embedded datasets (:data:`EMBEDDED`) are generated from digits shipped inside PyPI wheels, written once
to the user cache in both layouts (PNG class folders and ``image_list/<domain>.txt``) and read back by
:func:`load_domain`, so the real reader is exercised on every run.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.transforms.v2 import functional as TF

from shared.checkpoint import save_json
from shared.data import (
    EmbeddedSplit,
    cache_dir,
    class_folders,
    list_image_folder,
    load_background_images,
    load_digits,
    load_mnist5k,
    rank_in_class,
    read_image_list,
    read_images,
    require_images,
)
from shared.errors import UserError, require_path

SHIFTS = ("mnistm", "invert", "fog", "rotate")
MNISTM_TEXTURES = ("brick", "grass", "gravel", "coffee", "chelsea", "astronaut", "china", "flower")
EMBEDDED_DOMAINS = {"mnist-digits": ("mnist", "digits"), "toy-digits": ("digits", "digits-m")}
EMBEDDED = tuple(EMBEDDED_DOMAINS)
EMBEDDED_SIZE = 16
EMBEDDED_SEED = 0
_COMPLETE = "COMPLETE"


class RealDataset(NamedTuple):
    """A real dataset's domains and class count, for help text and error messages (not enforced)."""

    title: str
    domains: tuple[str, ...]
    num_classes: int
    layout: str


DOMAINS: dict[str, RealDataset] = {
    "office31": RealDataset(
        "Office-31", ("amazon", "webcam", "dslr"), 31, "<data>/amazon/images/back_pack/frame_0001.jpg"
    ),
    "officehome": RealDataset(
        "Office-Home",
        ("Art", "Clipart", "Product", "Real_World"),
        65,
        "<data>/Art/Alarm_Clock/00001.jpg (rename the release's 'Real World' folder to Real_World)",
    ),
    "imageclef": RealDataset(
        "ImageCLEF-DA", ("i", "p", "c"), 12, "<data>/list/iList.txt with lines 'i/xxx.jpg <label>', images in <data>/i/"
    ),
    "visda": RealDataset("VisDA-2017", ("train", "validation"), 12, "<data>/train/aeroplane/src_1_xxx.png"),
}


@dataclass(frozen=True, eq=False)
class Domain:
    """One domain in memory: uint8 images (N, 3, S, S), int64 labels (N), class names, each image's file."""

    name: str
    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    paths: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def _list_files(data: Path, domain: str, list_dir: str | None) -> list[Path]:
    if list_dir is not None:
        return [data / list_dir / f"{domain}.txt"]
    return [data / "image_list" / f"{domain}.txt", data / "list" / f"{domain}List.txt", data / "list" / f"{domain}.txt"]


def _image_folder(folder: Path) -> Path | None:
    """The ImageFolder root of a domain folder: itself, or Office-31's ``images/`` inside it; None if neither."""
    classes = class_folders(folder)
    if classes == ["images"] and class_folders(folder / "images"):
        return folder / "images"
    return folder if classes else None


def _domains_found(data: Path) -> list[str]:
    """Domain names under ``data``: its folders other than the list folders, and the list files' names."""
    lists = [p.stem for p in (data / "image_list").glob("*.txt")]
    lists += [p.stem.removesuffix("List") for p in (data / "list").glob("*.txt")]
    return sorted({*(name for name in class_folders(data) if name not in ("image_list", "list")), *lists})


def _read_domain(name: str, items: list[tuple[Path, int]], classes: list[str], size: int, where: Path) -> Domain:
    if not items:
        raise UserError(f"domain {name!r} has no images in {where}: check --data and the domain name")
    paths = [path for path, _ in items]
    labels = torch.tensor([label for _, label in items], dtype=torch.int64)
    return Domain(name, read_images(paths, size, "RGB"), labels, classes, [str(path) for path in paths])


def load_domain(
    data: Path, domain: str, size: int, list_dir: str | None = None, classes: list[str] | None = None
) -> Domain:
    """Read ``domain`` of the dataset at ``data``, every image resized to ``size`` x ``size`` (bilinear).

    Without ``list_dir``, an ImageFolder ``<data>/<domain>/`` (or Office-31's ``<data>/<domain>/images/``)
    holding class folders wins; otherwise the first list file found among ``image_list/<domain>.txt``,
    ImageCLEF-DA's ``list/<domain>List.txt`` and ``list/<domain>.txt`` is read, paths relative to ``<data>``.
    With ``list_dir``, ``<data>/<list_dir>/<domain>.txt`` is read. A list file's classes are ``classes``
    (index = label) when given, else numbered ``"0"`` .. ``str(max_label)``.
    """
    if size < 1:
        raise UserError(f"image size must be at least 1, got {size}")
    data = require_path(data, "data folder", kind="dir")
    folder = _image_folder(data / domain) if list_dir is None else None
    if folder is not None:
        items, names = list_image_folder(folder)
        return _read_domain(domain, items, names, size, folder)
    candidates = _list_files(data, domain, list_dir)
    list_file = next((path for path in candidates if path.is_file()), None)
    if list_file is None:
        looked = ([f"{domain}/<class>/", f"{domain}/images/<class>/"] if list_dir is None else []) + [
            str(path.relative_to(data)) for path in candidates
        ]
        raise UserError(
            f"domain {domain!r} not found in {data} (looked for {', '.join(looked)}); "
            f"domains found there: {', '.join(_domains_found(data)) or 'none'}"
        )
    listed = read_image_list(list_file)
    require_images(data, [path for path, _ in listed], str(list_file))
    items = [(data / path, label) for path, label in listed]
    top = max((label for _, label in items), default=-1)
    if classes is not None and top >= len(classes):
        raise UserError(f"{list_file} has label {top}, but only {len(classes)} class names were given")
    names = list(classes) if classes is not None else [str(i) for i in range(top + 1)]
    return _read_domain(domain, items, names, size, list_file)


def _numbered(classes: list[str]) -> bool:
    return classes == [str(i) for i in range(len(classes))]


def check_same_classes(source: Domain, target: Domain) -> None:
    """Raise a UserError unless both domains hold the same classes (closed-set adaptation).

    Counts must agree; names must agree too unless one side is numbered ("0", "1", ...: a list file's
    classes), which matches any names by index.
    """
    s, t = source.classes, target.classes
    if len(s) == len(t) and (s == t or _numbered(s) or _numbered(t)):
        return
    only_source, only_target = [n for n in s if n not in t], [n for n in t if n not in s]
    raise UserError(
        f"source {source.name} has {len(s)} classes, target {target.name} has {len(t)} "
        f"(only in source: {', '.join(only_source[:5]) or '-'}; only in target: {', '.join(only_target[:5]) or '-'}): "
        "both domains must hold the same classes"
    )


def _mnistm(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """MNIST-M (Ganin & Lempitsky, 2015): ``|patch - m|`` with ``patch`` a random crop of a random texture.

    The textures are scikit-image's and scikit-learn's sample images, center-cropped squares resized to 64 px
    (or the image size, if larger) by :func:`shared.data.load_background_images`: a short side of 64 px with the
    long side cropped.
    """
    n, _, h, w = images.shape
    textures = torch.stack(list(load_background_images(list(MNISTM_TEXTURES), size=max(64, h, w)).values()))
    side = textures.shape[-1]
    which = torch.from_numpy(rng.integers(len(textures), size=n))
    top, left = (torch.from_numpy(rng.integers(side - extent + 1, size=n)) for extent in (h, w))
    rows = (top[:, None] + torch.arange(h))[:, None, :, None]
    cols = (left[:, None] + torch.arange(w))[:, None, None, :]
    patches = textures[which[:, None, None, None], torch.arange(3)[None, :, None, None], rows, cols]
    return (patches - images).abs()


def _invert(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``(1 - x) * c`` with a random tint colour ``c`` ~ U(0.5, 1)^3 per image."""
    tint = torch.from_numpy(rng.uniform(0.5, 1.0, size=(len(images), 3, 1, 1))).float()
    return (1 - images) * tint


def _fog(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """``x t + A (1 - t)``, t = 0.4, A ~ U(0.7, 0.9) per image; Gaussian blur σ = 0.7; noise σ = 0.03."""
    t, sigma = 0.4, 0.7
    airlight = torch.from_numpy(rng.uniform(0.7, 0.9, size=(len(images), 1, 1, 1))).float()
    foggy = (images * t + airlight * (1 - t)).expand(-1, 3, -1, -1)
    kernel = 2 * math.ceil(3 * sigma) + 1
    blurred = TF.gaussian_blur(foggy, kernel_size=[kernel, kernel], sigma=[sigma, sigma])
    noise = torch.from_numpy(rng.normal(0.0, 0.03, size=blurred.shape)).float()
    return (blurred + noise).clamp(0, 1)


def _rotate(images: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Rotation by a random angle in [-30°, 30°] per image about the centre, zeros outside (bilinear)."""
    angle = torch.from_numpy(rng.uniform(-30.0, 30.0, size=len(images))).float().deg2rad()
    cos, sin, zero = angle.cos(), angle.sin(), torch.zeros_like(angle)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, images.shape, align_corners=False)
    rotated = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return rotated.clamp(0, 1).expand(-1, 3, -1, -1)


_SHIFT_FUNCTIONS = {"mnistm": _mnistm, "invert": _invert, "fog": _fog, "rotate": _rotate}


def make_shift(images: torch.Tensor, shift: str, seed: int) -> torch.Tensor:
    """Grey images (N, 1, H, W) in [0, 1] turned into a shifted RGB domain (N, 3, H, W) in [0, 1].

    ``shift`` is one of :data:`SHIFTS`; the random draws come from ``numpy.random.default_rng(seed)`` and do
    not depend on the pixels, so the result is a function of ``(images, shift, seed)``.
    """
    if shift not in _SHIFT_FUNCTIONS:
        raise UserError(f"unknown shift {shift!r}: choose from {', '.join(SHIFTS)}")
    if images.ndim != 4 or images.shape[1] != 1 or not images.is_floating_point():
        raise ValueError(f"make_shift needs float images (N, 1, H, W), got {images.dtype} {tuple(images.shape)}")
    return _SHIFT_FUNCTIONS[shift](images.float(), np.random.default_rng(seed)).contiguous()


def _all_images(split: EmbeddedSplit) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.cat([split.x_train, split.x_test]), torch.cat([split.y_train, split.y_test])


def generate_embedded(name: str) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The domains of embedded dataset ``name`` as generated: float images (N, 3, 16, 16) in [0, 1], labels.

    - ``mnist-digits``: ``mnist`` = all 5,000 MNIST-5k digits (train then test part) downsized to 16 px
      (antialiased); ``digits`` = all 1,797 UCI digits (train then test part) upsampled 8 -> 16 (bilinear).
    - ``toy-digits``: the 1,797 UCI digits, upsampled the same way, in the order train then test
      part of :func:`shared.data.load_digits`, split by the parity of each digit's rank within its class in
      that order: even ranks -> ``digits`` (source, 901), odd ranks -> ``digits-m`` (target, 896), the
      target turned into MNIST-M by ``make_shift(..., "mnistm", seed=0)``.
    """
    _embedded_domains(name)
    digits, digit_labels = _all_images(load_digits(EMBEDDED_SIZE))
    if name == "mnist-digits":
        mnist, mnist_labels = _all_images(load_mnist5k(EMBEDDED_SIZE))
        return {
            "mnist": (mnist.expand(-1, 3, -1, -1), mnist_labels),
            "digits": (digits.expand(-1, 3, -1, -1), digit_labels),
        }
    in_source = torch.from_numpy(rank_in_class(digit_labels.numpy()) % 2 == 0)
    return {
        "digits": (digits[in_source].expand(-1, 3, -1, -1), digit_labels[in_source]),
        "digits-m": (make_shift(digits[~in_source], "mnistm", EMBEDDED_SEED), digit_labels[~in_source]),
    }


def _write_domains(root: Path, domains: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> None:
    """Each domain as ``<root>/<domain>/<label>/<index>.png`` and ``<root>/image_list/<domain>.txt``."""
    (root / "image_list").mkdir(parents=True)
    for domain, (images, labels) in domains.items():
        pixels = (images * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
        lines = []
        for index, (array, label) in enumerate(zip(pixels, labels.tolist(), strict=True)):
            relative = f"{domain}/{label}/{index:05d}.png"
            (root / relative).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(root / relative)
            lines.append(f"{relative} {label}\n")
        (root / "image_list" / f"{domain}.txt").write_text("".join(lines), encoding="utf-8")


def _embedded_domains(name: str) -> tuple[str, str]:
    if name not in EMBEDDED_DOMAINS:
        raise UserError(f"embedded dataset must be one of {', '.join(EMBEDDED)}, got {name!r}")
    return EMBEDDED_DOMAINS[name]


def embedded_root(name: str) -> Path:
    """The folder of embedded dataset ``name`` in the user cache, written on first use.

    The tree is written into a temporary folder beside it, ``COMPLETE`` last, then moved into place with
    ``os.replace``: an interrupted write leaves no half dataset, and of concurrent writers the first wins.
    """
    _embedded_domains(name)
    root = cache_dir("slimda", name)
    if (root / _COMPLETE).is_file():
        return root
    domains = generate_embedded(name)
    try:
        root.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=root.parent))
    except OSError as exc:
        raise UserError(f"cannot write to {root.parent} ({exc}): set XDG_CACHE_HOME to a writable folder") from None
    try:
        _write_domains(staging, domains)
        counts = {domain: len(labels) for domain, (_, labels) in domains.items()}
        save_json(staging / _COMPLETE, {"dataset": name, "size": EMBEDDED_SIZE, "seed": EMBEDDED_SEED, **counts})
        os.replace(staging, root)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        if not (root / _COMPLETE).is_file():  # else a concurrent writer moved its complete copy into place first
            raise UserError(f"cannot write the embedded dataset to {root} ({exc}): delete it or free space") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return root


def load_embedded(name: str) -> tuple[Domain, Domain]:
    """(source, target) of embedded dataset ``name``, read back from disk by :func:`load_domain` at 16 px."""
    source, target = _embedded_domains(name)
    root = embedded_root(name)
    return load_domain(root, source, EMBEDDED_SIZE), load_domain(root, target, EMBEDDED_SIZE)
