"""Readers for the datasets as users have them on disk, and the embedded default.

- CIFAR-10/100 python pickles, read by a restricted unpickler (no md5 check, unlike torchvision, so small
  fixtures load too); :func:`write_cifar_pickles` writes the same layout.
- The embedded MNIST-5k and UCI digits, written once as CIFAR-10-style pickles and read back by the same reader.
- Clothing1M and WebVision label lists (DivideMix's loaders, read by :func:`shared.data.read_image_list`) and a
  dataset reading their images (:func:`shared.data.open_image`).
"""

from __future__ import annotations

import dataclasses
import math
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.checkpoint import atomic_write
from shared.data import cache_dir, load_digits, load_mnist5k, open_image, read_image_list, require_images
from shared.errors import UserError, require_path

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2023, 0.1994, 0.2010)
CIFAR100_MEAN = (0.5071, 0.4867, 0.4408)
CIFAR100_STD = (0.2675, 0.2565, 0.2761)
EMBEDDED = ("mnist5k", "digits")

_CIFAR_SHAPE = (3, 32, 32)
_COMPLETE = "COMPLETE"


@dataclass(frozen=True, eq=False)
class ImageData:
    """A dataset in memory: uint8 images (N, C, H, W), int64 labels, and how to normalise and augment it."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    class_names: tuple[str, ...]
    flip: bool  # horizontal flip is a valid augmentation (CIFAR yes, digits no)


@dataclass(frozen=True)
class _Layout:
    title: str
    folder: str
    train: tuple[str, ...]
    test: str
    meta: str
    label_key: str
    names_key: str
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def files(self) -> tuple[str, ...]:
        return (*self.train, self.test, self.meta)


_LAYOUTS = {
    "cifar10": _Layout(
        title="CIFAR-10",
        folder="cifar-10-batches-py",
        train=tuple(f"data_batch_{i}" for i in range(1, 6)),
        test="test_batch",
        meta="batches.meta",
        label_key="labels",
        names_key="label_names",
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
    ),
    "cifar100": _Layout(
        title="CIFAR-100",
        folder="cifar-100-python",
        train=("train",),
        test="test",
        meta="meta",
        label_key="fine_labels",
        names_key="fine_label_names",
        mean=CIFAR100_MEAN,
        std=CIFAR100_STD,
    ),
}

# The only globals a CIFAR pickle needs: numpy array reconstruction (protocols 2 to 5, numpy 1 and 2 names).
_ALLOWED_GLOBALS = frozenset(
    [
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        *(
            (f"{core}.multiarray", name)
            for core in ("numpy.core", "numpy._core")
            for name in ("_reconstruct", "scalar")
        ),
        *((f"{core}.numeric", "_frombuffer") for core in ("numpy.core", "numpy._core")),
    ]
)


class _ForbiddenGlobal(pickle.UnpicklingError):
    pass


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickler that builds plain containers and numpy arrays, and refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise _ForbiddenGlobal(f"{module}.{name}")
        return super().find_class(module, name)


def _load_pickle(path: Path) -> dict[str, Any]:
    """A CIFAR pickle as a dict with str keys (files from Python 2 or 3, str or bytes keys)."""
    try:
        with path.open("rb") as handle:
            obj = _ArrayUnpickler(handle, encoding="latin1").load()
    except _ForbiddenGlobal as exc:
        raise UserError(
            f"{path} refers to {exc}, which a CIFAR pickle never holds: use the original dataset files"
        ) from exc
    except Exception as exc:  # garbage bytes raise almost any exception type from the unpickler
        raise UserError(
            f"{path} is not a readable pickle ({type(exc).__name__}): re-extract the dataset archive"
        ) from exc
    if not isinstance(obj, dict):
        raise UserError(f"{path} holds a {type(obj).__name__}, not a CIFAR dict: re-extract the dataset archive")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in obj.items()}


def _kind_of(folder: Path) -> str | None:
    """The CIFAR kind a folder holds, judged by its meta file, else by its name."""
    for kind, layout in _LAYOUTS.items():
        if (folder / layout.meta).is_file():
            return kind
    return next((kind for kind, layout in _LAYOUTS.items() if folder.name == layout.folder), None)


def _find_cifar(root: Path, kind: str | None) -> tuple[Path, str]:
    """The CIFAR folder at or directly under ``root`` (of ``kind`` when given), and its kind."""
    found = _kind_of(root)
    candidates = [(root, found)] if found else [(root / layout.folder, k) for k, layout in _LAYOUTS.items()]
    candidates = [(folder, k) for folder, k in candidates if folder.is_dir()]
    if not candidates:
        raise UserError(
            f"no CIFAR pickles in {root}: point at a cifar-10-batches-py folder (data_batch_1..5, test_batch, "
            "batches.meta), a cifar-100-python folder (train, test, meta), or their parent"
        )
    if kind is None:
        return candidates[0]
    for folder, k in candidates:
        if k == kind:
            return folder, k
    folder, k = candidates[0]
    raise UserError(
        f"{folder} holds {_LAYOUTS[k].title} pickles, not the {_LAYOUTS[kind].title} of this run: "
        f"point --data at a {_LAYOUTS[kind].folder} folder"
    )


def cifar_kind(root: str | os.PathLike) -> str:
    """``cifar10`` or ``cifar100``: what the CIFAR folder at or directly under ``root`` holds."""
    return _find_cifar(require_path(root, "--data", kind="dir"), None)[1]


def _read_meta(path: Path, layout: _Layout) -> tuple[tuple[str, ...], tuple[int, ...], tuple, tuple]:
    """Class names, image shape (C, H, W) and normalisation from a meta pickle."""
    meta = _load_pickle(path)
    names = meta.get(layout.names_key)
    if not isinstance(names, list | tuple) or not names or not all(isinstance(n, str | bytes) for n in names):
        raise UserError(f"{path} lacks the list '{layout.names_key}' of class names: re-extract the dataset archive")
    names = tuple(n.decode("latin1") if isinstance(n, bytes) else n for n in names)
    shape = meta.get("image_shape", _CIFAR_SHAPE)
    if not isinstance(shape, list | tuple) or len(shape) != 3 or not all(isinstance(s, int) and s > 0 for s in shape):
        raise UserError(f"{path} has image_shape {shape!r}, expected (C, H, W): rewrite it with write_cifar_pickles")
    stats = []
    for key, default in (("mean", layout.mean), ("std", layout.std)):
        value = meta.get(key, default)
        if (
            not isinstance(value, list | tuple)
            or len(value) != shape[0]
            or not all(isinstance(v, float | int) for v in value)
        ):
            raise UserError(f"{path} has {key} {value!r}, expected {shape[0]} numbers: fix or remove that key")
        stats.append(tuple(float(v) for v in value))
    return names, tuple(shape), stats[0], stats[1]


def _read_batches(
    folder: Path, names: tuple[str, ...], layout: _Layout, shape: tuple[int, ...]
) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (N, C, H, W) and labels of the batch files ``names``, concatenated in that order."""
    images, labels = [], []
    for name in names:
        path = folder / name
        batch = _load_pickle(path)
        if "data" not in batch or layout.label_key not in batch:
            raise UserError(
                f"{path} is not a {layout.title} batch (a dict with 'data' and '{layout.label_key}'): "
                "re-extract the dataset archive"
            )
        data = np.asarray(batch["data"])
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != math.prod(shape):
            raise UserError(
                f"{path} holds data {data.dtype} {data.shape}, expected uint8 rows of {math.prod(shape)} values "
                f"(image shape {shape}): re-extract the dataset archive"
            )
        y = np.asarray(batch[layout.label_key])
        if y.ndim != 1 or (y.size and not np.issubdtype(y.dtype, np.integer)) or y.size != data.shape[0]:
            raise UserError(f"{path} holds {y.size} labels for {data.shape[0]} images: re-extract the dataset archive")
        images.append(data.reshape(-1, *shape))
        labels.append(y.astype(np.int64))
    return torch.from_numpy(np.concatenate(images)), torch.from_numpy(np.concatenate(labels))


def load_cifar(root: str | os.PathLike, kind: str | None = None) -> ImageData:
    """CIFAR-10 or CIFAR-100 python pickles from ``root`` (the dataset folder or its parent).

    ``kind`` ("cifar10"/"cifar100") must match what is found. Train order is data_batch_1..5, the order
    noise files index into. Meta keys ``image_shape`` (C, H, W), ``mean`` and ``std`` override the CIFAR defaults.
    """
    if kind is not None and kind not in _LAYOUTS:
        raise UserError(f"CIFAR kind must be one of {', '.join(_LAYOUTS)}, got {kind!r}")
    root = require_path(root, "CIFAR data folder", kind="dir")
    folder, found = _find_cifar(root, kind)
    layout = _LAYOUTS[found]
    missing = [name for name in layout.files if not (folder / name).is_file()]
    if missing:
        raise UserError(f"{layout.title} folder {folder} lacks {', '.join(missing)}: re-extract the dataset archive")
    class_names, shape, mean, std = _read_meta(folder / layout.meta, layout)
    x_train, y_train = _read_batches(folder, layout.train, layout, shape)
    x_test, y_test = _read_batches(folder, (layout.test,), layout, shape)
    for split, y in (("training", y_train), ("test", y_test)):
        if y.numel() and (y.min() < 0 or y.max() >= len(class_names)):
            raise UserError(
                f"{folder} has {split} labels outside [0, {len(class_names)}) for its {len(class_names)} class "
                "names: re-extract the dataset archive"
            )
    return ImageData(found, x_train, y_train, x_test, y_test, len(class_names), mean, std, class_names, flip=True)


def _uint8_images(x: np.ndarray | torch.Tensor, what: str) -> np.ndarray:
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    if array.dtype != np.uint8 or array.ndim != 4:
        raise UserError(f"{what} must be uint8 images (N, C, H, W), got {array.dtype} {array.shape}")
    return array


def _dump(path: Path, obj: dict[str, Any]) -> None:
    atomic_write(path, lambda f: pickle.dump(obj, f, protocol=4))


def write_cifar_pickles(
    root: str | os.PathLike,
    x_train: np.ndarray | torch.Tensor,
    y_train: np.ndarray | torch.Tensor,
    x_test: np.ndarray | torch.Tensor,
    y_test: np.ndarray | torch.Tensor,
    kind: str = "cifar10",
    class_names: list[str] | tuple[str, ...] | None = None,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> Path:
    """Write uint8 images (N, C, H, W) and labels in the real CIFAR layout under ``root``; return its folder.

    CIFAR-10 splits the training set into data_batch_1..5 (consecutive chunks). A shape other than
    (3, 32, 32) is stored as meta ``image_shape``; ``mean``/``std`` are stored when given. Class names
    default to "0".."9" (or "0".."99").
    """
    if kind not in _LAYOUTS:
        raise UserError(f"CIFAR kind must be one of {', '.join(_LAYOUTS)}, got {kind!r}")
    layout = _LAYOUTS[kind]
    x_train, x_test = _uint8_images(x_train, "x_train"), _uint8_images(x_test, "x_test")
    if x_train.shape[1:] != x_test.shape[1:]:
        raise UserError(f"train images {x_train.shape[1:]} and test images {x_test.shape[1:]} differ in shape")
    y_train, y_test = (np.asarray(y).astype(np.int64).reshape(-1) for y in (y_train, y_test))
    names = [str(n) for n in class_names] if class_names else [str(i) for i in range(10 if kind == "cifar10" else 100)]
    if y_train.size != len(x_train) or y_test.size != len(x_test):
        raise UserError("write_cifar_pickles needs one label per image")
    for y in (y_train, y_test):
        if y.size and (y.min() < 0 or y.max() >= len(names)):
            raise UserError(f"labels must lie in [0, {len(names)}): pass class_names for every class")

    shape = tuple(int(s) for s in x_train.shape[1:])
    meta: dict[str, Any] = {layout.names_key: names}
    if shape != _CIFAR_SHAPE:
        meta["image_shape"] = shape
    if mean is not None:
        meta["mean"] = tuple(float(v) for v in mean)
    if std is not None:
        meta["std"] = tuple(float(v) for v in std)

    def batch(index: np.ndarray, x: np.ndarray, y: np.ndarray, label: str, prefix: str) -> dict[str, Any]:
        out = {"batch_label": label, layout.label_key: y[index].tolist(), "data": x[index].reshape(len(index), -1)}
        if kind == "cifar100":
            out["coarse_labels"] = (y[index] // 5).tolist()
        out["filenames"] = [f"{prefix}_{i:05d}.png" for i in index]
        return out

    folder = Path(root) / layout.folder
    if kind == "cifar10":
        chunks = np.array_split(np.arange(len(x_train)), 5)
        meta["num_cases_per_batch"] = len(chunks[0])
        for i, (name, index) in enumerate(zip(layout.train, chunks, strict=True), start=1):
            _dump(folder / name, batch(index, x_train, y_train, f"training batch {i} of 5", "train"))
    else:
        meta["coarse_label_names"] = [str(i) for i in range(math.ceil(len(names) / 5))]
        _dump(folder / "train", batch(np.arange(len(x_train)), x_train, y_train, "training batch 1 of 1", "train"))
    _dump(folder / layout.test, batch(np.arange(len(x_test)), x_test, y_test, "testing batch 1 of 1", "test"))
    _dump(folder / layout.meta, meta)
    return folder


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    return (x * 255).round().clamp(0, 255).to(torch.uint8)


def embedded_dataset(name: str = "mnist5k") -> Path:
    """The embedded split ``name`` written once as CIFAR-10-style pickles in the user cache; its folder.

    A ``COMPLETE`` marker written last tells a finished tree from an interrupted one.
    """
    if name not in EMBEDDED:
        raise UserError(f"embedded dataset must be one of {', '.join(EMBEDDED)}, got {name!r}")
    root = cache_dir("lcbooster", name)
    folder = root / _LAYOUTS["cifar10"].folder
    if (root / _COMPLETE).is_file():
        return folder
    split = load_mnist5k() if name == "mnist5k" else load_digits()
    x_train, x_test = _to_uint8(split.x_train), _to_uint8(split.x_test)
    pixels = x_train.double().div(255).transpose(0, 1).reshape(x_train.shape[1], -1)
    write_cifar_pickles(
        root,
        x_train,
        split.y_train,
        x_test,
        split.y_test,
        class_names=[str(i) for i in range(split.num_classes)],
        mean=tuple(pixels.mean(1).tolist()),
        std=tuple(pixels.std(1, correction=0).tolist()),
    )
    atomic_write(root / _COMPLETE, lambda f: f.write(f"{name} as CIFAR-10 pickles\n"), binary=False)
    return folder


def load_embedded(name: str = "mnist5k") -> ImageData:
    """The embedded split ``name`` read back through :func:`load_cifar` (no horizontal flip: these are digits)."""
    return dataclasses.replace(load_cifar(embedded_dataset(name), "cifar10"), name=name, flip=False)


def load_images(dataset: str, path: str | os.PathLike | None = None) -> ImageData:
    """The in-memory dataset of a run: CIFAR pickles from ``path`` (``--data``), or an embedded dataset.

    With ``path``, an embedded dataset name reads CIFAR-style pickles of another dataset there (no flip).
    """
    if dataset in _LAYOUTS:
        if path is None:
            title = _LAYOUTS[dataset].title
            raise UserError(f"{title} needs --data (the {title} python pickles); nothing is downloaded")
        return load_cifar(require_path(path, "--data", kind="dir"), kind=dataset)
    if path is not None:
        return dataclasses.replace(load_cifar(require_path(path, "--data", kind="dir")), flip=False)
    return load_embedded(dataset)


@dataclass
class ImageList:
    """Image paths relative to ``root`` with their labels; ``source`` names the list they come from."""

    root: Path
    paths: list[str]
    labels: np.ndarray
    source: str = "the image list"

    def __len__(self) -> int:
        return len(self.paths)

    def require_images(self, limit: int = 5) -> None:
        """A UserError naming how many listed images are missing on disk, and the first ``limit``."""
        require_images(self.root, self.paths, self.source, limit)


def read_key_list(path: str | os.PathLike) -> list[str]:
    """The non-blank lines of a Clothing1M key list (one relative image path per line)."""
    path = require_path(path, "key list", kind="file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError:
        raise UserError(f"key list {path} is not UTF-8 text: use the list from the dataset release") from None
    return [line.strip() for line in lines if line.strip()]


def _require_files(root: Path, names: list[str], dataset: str) -> None:
    missing = [name for name in names if not (root / name).is_file()]
    if missing:
        raise UserError(f"{root} lacks {', '.join(missing)}: point --data at the {dataset} folder of the release")


def load_clothing1m(root: str | os.PathLike) -> dict[str, ImageList]:
    """Clothing1M's noisy train split and clean val/test splits, from the official label and key lists."""
    root = require_path(root, "Clothing1M folder", kind="dir")
    splits = {
        "train": ("noisy_train_key_list.txt", "noisy_label_kv.txt"),
        "val": ("clean_val_key_list.txt", "clean_label_kv.txt"),
        "test": ("clean_test_key_list.txt", "clean_label_kv.txt"),
    }
    _require_files(root, sorted({name for pair in splits.values() for name in pair}), "Clothing1M")
    tables = {name: dict(read_image_list(root / name)) for name in ("noisy_label_kv.txt", "clean_label_kv.txt")}
    lists = {}
    for split, (key_file, label_file) in splits.items():
        keys, table = read_key_list(root / key_file), tables[label_file]
        absent = [key for key in keys if key not in table]
        if absent:
            raise UserError(
                f"{len(absent)} keys of {key_file} are absent from {label_file} (e.g. {', '.join(absent[:3])}): "
                "use the label and key lists of the same Clothing1M release"
            )
        labels = np.array([table[key] for key in keys], dtype=np.int64)
        lists[split] = ImageList(root, keys, labels, source=key_file)
    return lists


def load_webvision(root: str | os.PathLike, num_classes: int = 50) -> dict[str, ImageList]:
    """WebVision 1.0 Google train split and val split, restricted to the first ``num_classes`` classes."""
    root = require_path(root, "WebVision folder", kind="dir")
    if not 1 <= num_classes <= 1000:
        raise UserError(f"WebVision num_classes must lie in [1, 1000], got {num_classes}")
    _require_files(root, ["info/train_filelist_google.txt", "info/val_filelist.txt"], "WebVision")
    lists = {}
    for split, name, prefix in (
        ("train", "train_filelist_google.txt", ""),
        ("val", "val_filelist.txt", "val_images_256/"),
    ):
        kept = [(path, label) for path, label in read_image_list(root / "info" / name) if label < num_classes]
        paths = [prefix + path for path, _ in kept]
        lists[split] = ImageList(root, paths, np.array([label for _, label in kept], dtype=np.int64), f"info/{name}")
    return lists


class ImageListDataset(Dataset):
    """``(uint8 image (3, size, size), index)`` per entry: RGB, shorter side resized to ``size``, center crop."""

    def __init__(self, image_list: ImageList, size: int) -> None:
        if size < 1:
            raise UserError(f"image size must be at least 1, got {size}")
        self.image_list = image_list
        self.size = size

    def __len__(self) -> int:
        return len(self.image_list)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        image = open_image(self.image_list.root / self.image_list.paths[index])
        width, height = image.size
        scale = self.size / min(width, height)
        width, height = max(self.size, round(width * scale)), max(self.size, round(height * scale))
        image = image.resize((width, height), Image.Resampling.BILINEAR)
        left, top = round((width - self.size) / 2), round((height - self.size) / 2)
        image = image.crop((left, top, left + self.size, top + self.size))
        return torch.from_numpy(np.asarray(image).copy()).permute(2, 0, 1).contiguous(), index
