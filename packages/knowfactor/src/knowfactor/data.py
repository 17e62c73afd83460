"""Multi-task datasets: readers for the paper's on-disk formats and the embedded offline defaults.

Every loader returns a :class:`MultiTaskData`: tensors in memory, labels (N, n_tasks) int64, one column per
task. Real formats: CIFAR-10 python pickles (:func:`load_cifar10`), ImageNet-style class folders
(:func:`load_image_folder`), the dSprites ``.npz`` (:func:`load_dsprites`) and the 3dshapes ``.h5``
(:func:`load_shapes3d`), each with the official split (for dSprites and 3dshapes, that of
``cls/mmcls/datasets/disentangle_data/`` in github.com/Adamdad/KnowledgeFactor). Embedded:
:func:`digits_multitask`, :func:`mnist_one_vs_rest` and :func:`dsprites_embedded` (a procedural dSprites-lite
written as the real ``.npz`` layout by :func:`write_synthetic_dsprites` and read back by :func:`load_dsprites`).
:func:`load_multitask` picks the reader of a dataset by name.
"""

from __future__ import annotations

import os
import pickle
import tempfile
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.transforms import functional as TF

from knowfactor.transforms import IDENTITY, PIPELINES, Pipeline
from shared.data import cache_dir, class_folders, list_image_folder, load_digits, load_mnist5k, open_image
from shared.errors import UserError, require_path

SPLIT_SEED = 42  # dSprites: np.random.seed(42) permutation; Shapes3D with shuffle_split=True
TRAIN_FRACTION = 0.7  # dSprites and Shapes3D: first 70% train, last 30% test

CIFAR10_FOLDER = "cifar-10-batches-py"
CIFAR10_TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR10_TEST_FILE = "test_batch"
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")

DSPRITES_FILE = "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
# latents_classes columns 1..5 (column 0 is the constant colour) and their class counts.
DSPRITES_TASKS = {"shape": 3, "scale": 6, "orientation": 40, "posX": 32, "posY": 32}
DSPRITES_SHAPES = ("square", "ellipse", "heart")

SHAPES3D_TASKS = ("floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation")

DIGITS_TASKS = ("digit", "parity", "ge5", "prime", "loops")
_PRIMES = (2, 3, 5, 7)
_LOOPS = (1, 0, 0, 0, 1, 0, 1, 0, 2, 1)  # closed loops of digit 0..9, as classes: {1,2,3,5,7}=0, {0,4,6,9}=1, {8}=2


@dataclass(frozen=True)
class MultiTaskData:
    """Images and per-task class labels with a fixed train/test split.

    ``y_*`` is int64 (N, n_tasks): column t holds the class index of task ``task_names[t]`` in
    ``range(task_classes[t])``. Single-task data has one column. ``x_test`` is ready for the network (the test
    pipeline applied); ``x_train`` is what ``pipeline.train_batch`` takes (uint8 pixels where it normalises).
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    task_names: list[str]
    task_classes: list[int]
    pipeline: Pipeline = IDENTITY

    @property
    def num_tasks(self) -> int:
        return len(self.task_names)


def select_tasks(data: MultiTaskData, names: list[str] | tuple[str, ...]) -> MultiTaskData:
    """The same data restricted to the tasks ``names``, in that order."""
    unknown = [n for n in names if n not in data.task_names]
    if unknown:
        raise UserError(f"unknown task(s) {unknown} for {data.name}: available tasks are {data.task_names}")
    if not names or len(set(names)) != len(names):
        raise UserError(f"choose one or more distinct tasks of {data.name} from {data.task_names}, got {list(names)}")
    cols = [data.task_names.index(n) for n in names]
    return replace(
        data,
        y_train=data.y_train[:, cols],
        y_test=data.y_test[:, cols],
        task_names=list(names),
        task_classes=[data.task_classes[c] for c in cols],
    )


def _one_vs_rest(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(N,) class indices -> (N, K) binary labels, column k = "is class k" (the official ``np.eye(K)[y]``)."""
    return F.one_hot(labels, num_classes).long()


def _split_rows(perm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n_train = int(len(perm) * TRAIN_FRACTION)
    return perm[:n_train], perm[n_train:]


# --- CIFAR-10 ------------------------------------------------------------------------------------------------


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    try:
        with path.open("rb") as f:
            entry = pickle.load(f, encoding="bytes")
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, ImportError) as exc:
        raise UserError(
            f"{path} is not a CIFAR python pickle ({exc}): use the files of cifar-10-python.tar.gz"
        ) from exc
    if not isinstance(entry, dict) or b"data" not in entry:
        raise UserError(f"{path} has no b'data' entry: it is not a CIFAR-10 batch")
    if b"labels" not in entry:
        kind = "a CIFAR-100 pickle (b'fine_labels')" if b"fine_labels" in entry else "not a CIFAR-10 batch"
        raise UserError(f"{path} is {kind}: this reader needs CIFAR-10 (cifar-10-python.tar.gz)")
    images = np.asarray(entry[b"data"])
    labels = np.asarray(entry[b"labels"], dtype=np.int64)
    if images.dtype != np.uint8:
        raise UserError(f"{path}: data must be uint8 0-255 as in cifar-10-python.tar.gz, got {images.dtype}")
    if images.ndim != 2 or images.shape[1] != 3 * 32 * 32 or len(images) != len(labels):
        raise UserError(
            f"{path}: data must be (N, 3072) with N labels, got {images.shape} and {labels.shape[0]} labels"
        )
    if labels.size and (labels.min() < 0 or labels.max() >= 10):
        raise UserError(f"{path}: CIFAR-10 labels must lie in 0..9, got {labels.min()}..{labels.max()}")
    return images, labels


def load_cifar10(root: Path) -> MultiTaskData:
    """CIFAR-10 from its python pickles: ``root/cifar-10-batches-py/`` or that folder itself.

    Reads ``data_batch_1..5`` (train) and ``test_batch`` (test) without an md5 check; one task "class" with 10
    classes. Training images uint8 (N, 3, 32, 32) for the train pipeline; test images normalised with the
    release's CIFAR-10 mean and std on 0-255 values (:data:`knowfactor.transforms.PIPELINES`).
    """
    root = require_path(root, "CIFAR-10 folder", kind="dir")
    folder = root / CIFAR10_FOLDER if (root / CIFAR10_FOLDER).is_dir() else root
    parts = {}
    for split, files in (("train", CIFAR10_TRAIN_FILES), ("test", (CIFAR10_TEST_FILE,))):
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise UserError(f"{folder} lacks {missing}: point --data at the extracted cifar-10-python.tar.gz")
        batches = [_read_cifar_batch(folder / f) for f in files]
        images = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([b[1] for b in batches])
        parts[split] = (torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels)[:, None])
    (x_train, y_train), (x_test, y_test) = parts["train"], parts["test"]
    pipeline = PIPELINES["cifar10"]
    return MultiTaskData("cifar10", x_train, y_train, pipeline.normalise(x_test), y_test, ["class"], [10], pipeline)


def cifar10_one_vs_rest(data: MultiTaskData) -> MultiTaskData:
    """The official ``CIFAR10_MultiTask``: 10 binary tasks "is_<class>" derived from the 10-way label."""
    if data.task_classes != [10]:
        raise UserError(f"cifar10_one_vs_rest needs single-task 10-class data, got tasks {data.task_names}")
    return replace(
        data,
        name=f"{data.name}-one-vs-rest",
        y_train=_one_vs_rest(data.y_train[:, 0], 10),
        y_test=_one_vs_rest(data.y_test[:, 0], 10),
        task_names=[f"is_{c}" for c in CIFAR10_CLASSES],
        task_classes=[2] * 10,
    )


# --- ImageNet-style folders ------------------------------------------------------------------------------------


def _read_image_split(folder: Path, classes: list[str], resize: int, crop: int) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 RGB images of ``folder`` resized (short side, bilinear) and centre-cropped, and their labels."""
    items, _ = list_image_folder(folder, classes=classes)
    images = [TF.center_crop(TF.resize(TF.pil_to_tensor(open_image(path)), resize), crop) for path, _ in items]
    return torch.stack(images), torch.tensor([label for _, label in items], dtype=torch.long)[:, None]


def load_image_folder(root: Path) -> MultiTaskData:
    """An ImageNet-style folder: ``root/train/<class>/*`` and ``root/val/<class>/*`` (or ``test``).

    Classes are the sorted folder names of ``train`` (the test split gets their labels); images are loaded into
    memory as RGB. Test images go through the release's test pipeline (Resize 256, CenterCrop 224, Normalize);
    training images are kept as uint8 resized to 256 (short side) and centre-cropped to 256 x 256, from which the
    train pipeline draws its RandomResizedCrop. Meant for subsets: the whole split sits in memory.
    """
    root = require_path(root, "image folder", kind="dir")
    train_dir = root / "train"
    test_dir = next((root / n for n in ("val", "test") if (root / n).is_dir()), None)
    if not train_dir.is_dir() or test_dir is None:
        raise UserError(f"{root} is not an ImageFolder dataset: it needs train/<class>/ and val/<class>/ (or test/)")
    classes = class_folders(train_dir)
    if not classes:
        raise UserError(f"{train_dir} has no class folders: expected train/<class>/<image>")
    extra = sorted(set(class_folders(test_dir)) - set(classes))
    if extra:
        raise UserError(f"{test_dir} has classes absent from {train_dir}: {extra}")
    pipeline = PIPELINES["imagenet"]
    x_train, y_train = _read_image_split(train_dir, classes, pipeline.test_resize, pipeline.test_resize)
    x_test, y_test = _read_image_split(test_dir, classes, pipeline.test_resize, pipeline.test_crop)
    x_test = pipeline.normalise(x_test)
    return MultiTaskData(root.name, x_train, y_train, x_test, y_test, ["class"], [len(classes)], pipeline)


# --- dSprites ---------------------------------------------------------------------------------------------------


def load_dsprites(path: Path, tasks: tuple[str, ...] = tuple(DSPRITES_TASKS)) -> MultiTaskData:
    """dSprites from its ``.npz``: ``imgs`` (N, 64, 64) 0/1 and ``latents_classes`` (N, 6).

    Tasks are ``latents_classes`` columns 1..5 (shape 3, scale 6, orientation 40, posX 32, posY 32), of which
    ``tasks`` keeps some, in that order. Official split: the permutation of ``np.random.seed(42)``, first 70%
    train, last 30% test. Images (x − 0.5)/0.5, float32 (N, 1, H, W) -- the full file needs ~12 GB as float.
    """
    path = require_path(path, "dSprites file", kind="file")
    unknown = [t for t in tasks if t not in DSPRITES_TASKS]
    if unknown or not tasks:
        raise UserError(f"unknown dSprites task(s) {unknown or list(tasks)}: choose from {list(DSPRITES_TASKS)}")
    try:
        npz = np.load(path, allow_pickle=False)
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc}): use {DSPRITES_FILE}") from exc
    if not isinstance(npz, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is a single .npy array, not a dSprites .npz archive: use {DSPRITES_FILE}")
    try:
        with npz:
            missing = [k for k in ("imgs", "latents_classes") if k not in npz.files]
            if missing:
                raise UserError(f"{path} lacks {missing}: it is not a dSprites npz ({DSPRITES_FILE})")
            imgs, latents = npz["imgs"], npz["latents_classes"]
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
        raise UserError(f"{path} is not a readable .npz ({exc}): use {DSPRITES_FILE}") from exc
    if imgs.ndim != 3 or imgs.shape[1] != imgs.shape[2]:
        raise UserError(f"{path}: 'imgs' must be (N, H, H), got {imgs.shape}")
    if imgs.size and (imgs.min() < 0 or imgs.max() > 1):
        raise UserError(
            f"{path}: 'imgs' must hold 0/1 pixels, got values {imgs.min()}..{imgs.max()} (0-255 images? divide by 255)"
        )
    if latents.shape != (len(imgs), 6):
        raise UserError(f"{path}: 'latents_classes' must be ({len(imgs)}, 6), got {latents.shape}")
    columns = [1 + list(DSPRITES_TASKS).index(t) for t in tasks]
    labels = latents[:, columns].astype(np.int64)
    counts = np.array([DSPRITES_TASKS[t] for t in tasks])
    if labels.size and ((labels < 0).any() or (labels >= counts).any()):
        raise UserError(
            f"{path}: 'latents_classes' out of range for tasks {list(tasks)} with classes {counts.tolist()}"
        )
    train, test = _split_rows(np.random.RandomState(SPLIT_SEED).permutation(len(imgs)))

    def images(rows: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(imgs[rows]).float().unsqueeze(1) - 0.5) / 0.5

    y = torch.from_numpy(labels)
    return MultiTaskData(
        "dsprites", images(train), y[train], images(test), y[test], list(tasks), counts.tolist(), PIPELINES["dsprites"]
    )


def _sprite_mask(kind: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Inside-test of shape ``kind`` (0 square, 1 ellipse, 2 heart) at sprite-frame coordinates in radius units."""
    if kind == 0:
        return np.maximum(np.abs(u), np.abs(v)) <= 0.7
    if kind == 1:
        return u**2 + (2.0 * v) ** 2 <= 1.0
    hx, hy = 1.2 * u, 0.15 - 1.2 * v  # heart curve (x² + y² − 1)³ ≤ x² y³, tip pointing down
    return (hx**2 + hy**2 - 1) ** 3 <= hx**2 * hy**3


def _rasterise_sprites(
    shape: np.ndarray, radius: np.ndarray, angle: np.ndarray, cx: np.ndarray, cy: np.ndarray, size: int
) -> np.ndarray:
    """Binary (n, size, size) uint8 sprites of kind ``shape`` (0/1/2), ``radius`` in pixels, rotated by ``angle``,
    centred at pixel (cx, cy); vectorised over the batch, one pass per shape."""
    grid = np.arange(size, dtype=np.float32) + 0.5
    imgs = np.zeros((len(shape), size, size), dtype=np.uint8)
    for kind in range(len(DSPRITES_SHAPES)):
        rows = np.flatnonzero(shape == kind)
        if not rows.size:
            continue
        dx = grid[None, None, :] - cx[rows, None, None]
        dy = grid[None, :, None] - cy[rows, None, None]
        cos, sin = np.cos(angle[rows])[:, None, None], np.sin(angle[rows])[:, None, None]
        r = radius[rows, None, None]
        imgs[rows] = _sprite_mask(kind, (cos * dx + sin * dy) / r, (cos * dy - sin * dx) / r)
    return imgs


def write_synthetic_dsprites(path: Path, n: int = 4000, seed: int = 0, size: int = 64) -> Path:
    """Write a procedural dSprites-lite (ours) in the real ``.npz`` layout; returns ``path``.

    ``n`` sprites with uniformly drawn factors: shape {square, ellipse, heart}, scale (6 values in [0.5, 1]),
    orientation (40 values in [0, 2π)), posX/posY (32 values each), drawn white on black at ``size`` x ``size``.
    Saved like the original: ``imgs`` uint8 0/1, ``latents_classes`` int64 [color=0, shape, scale, orientation,
    posX, posY] and ``latents_values`` float64 (color 1, shape 1..3, then the factor values). The file is
    written atomically.
    """
    if n < 1 or size < 8:
        raise UserError(f"synthetic dSprites needs n >= 1 and size >= 8, got n={n}, size={size}")
    rng = np.random.default_rng(seed)
    counts = list(DSPRITES_TASKS.values())
    classes = np.zeros((n, 6), dtype=np.int64)
    classes[:, 1:] = rng.integers(0, counts, size=(n, len(counts)))
    scales = np.linspace(0.5, 1.0, 6)
    angles = np.linspace(0.0, 2 * np.pi, 40, endpoint=False)
    positions = np.linspace(0.0, 1.0, 32)
    shape, scale, angle = classes[:, 1], scales[classes[:, 2]], angles[classes[:, 3]]
    pos_x, pos_y = positions[classes[:, 4]], positions[classes[:, 5]]
    values = np.stack([np.ones(n), shape + 1.0, scale, angle, pos_x, pos_y], axis=1)
    margin, radius = 0.22 * size, 0.16 * size  # keeps the largest sprite inside the frame
    imgs = _rasterise_sprites(
        shape,
        (radius * scale).astype(np.float32),
        angle.astype(np.float32),
        (margin + pos_x * (size - 2 * margin)).astype(np.float32),
        (margin + pos_y * (size - 2 * margin)).astype(np.float32),
        size,
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez_compressed(f, imgs=imgs, latents_classes=classes, latents_values=values)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


# --- Shapes3D -------------------------------------------------------------------------------------------------


def load_shapes3d(path: Path, shuffle_split: bool = False) -> MultiTaskData:
    """3dshapes from its ``.h5``: ``images`` (N, 64, 64, 3) uint8 and ``labels`` (N, 6) float.

    Each factor's values are mapped to class indices in sorted order (floor hue 10, wall hue 10, object hue 10,
    scale 8, shape 4, orientation 15 on the real file). Official split: first 70% rows train, last 30% test, no
    shuffle (test floor hues are then unseen in training); ``shuffle_split=True`` first permutes the rows with
    seed 42. Images (x − 127)/127, float32 (N, 3, H, W).
    """
    path = require_path(path, "3dshapes file", kind="file")
    try:
        import h5py
    except ImportError as exc:
        raise UserError("reading 3dshapes .h5 needs h5py: pip install 'reprozoo-knowfactor[h5]'") from exc
    try:
        with h5py.File(path, "r") as f:
            missing = [k for k in ("images", "labels") if k not in f]
            if missing:
                raise UserError(f"{path} lacks datasets {missing}: it is not 3dshapes.h5")
            images, values = f["images"][()], f["labels"][()]
    except OSError as exc:
        raise UserError(f"{path} is not a readable HDF5 file ({exc}): use 3dshapes.h5") from exc
    if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
        raise UserError(f"{path}: 'images' must be (N, H, W, 3) uint8, got {images.shape} {images.dtype}")
    if values.shape != (len(images), len(SHAPES3D_TASKS)):
        raise UserError(f"{path}: 'labels' must be ({len(images)}, 6), got {values.shape}")
    uniques = [np.unique(col, return_inverse=True) for col in values.T]
    labels = torch.from_numpy(np.stack([inverse.reshape(-1) for _, inverse in uniques], axis=1).astype(np.int64))
    rows = np.random.RandomState(SPLIT_SEED).permutation(len(images)) if shuffle_split else np.arange(len(images))
    train, test = _split_rows(rows)

    def to_tensor(r: np.ndarray) -> torch.Tensor:
        return (torch.from_numpy(images[r]).permute(0, 3, 1, 2).float() - 127.0) / 127.0

    classes = [len(u) for u, _ in uniques]
    return MultiTaskData(
        "shapes3d",
        to_tensor(train),
        labels[train],
        to_tensor(test),
        labels[test],
        list(SHAPES3D_TASKS),
        classes,
        PIPELINES["shapes3d"],
    )


# --- Embedded defaults ------------------------------------------------------------------------------------------


def _three_channels(x: torch.Tensor) -> torch.Tensor:
    """Grey [0, 1] (N, 1, H, W) -> (N, 3, H, W) normalised (x − 0.5)/0.5."""
    return ((x - 0.5) / 0.5).repeat(1, 3, 1, 1)


def _digit_tasks(digit: torch.Tensor) -> torch.Tensor:
    """The five digits tasks (ours) from the digit label: digit, parity, ≥ 5, prime, loop class."""
    primes = torch.isin(digit, torch.tensor(_PRIMES))
    loops = torch.tensor(_LOOPS)[digit]
    return torch.stack([digit, digit % 2, (digit >= 5).long(), primes.long(), loops], dim=1)


def digits_multitask(size: int = 32) -> MultiTaskData:
    """scikit-learn's 8x8 digits (embedded, 1,442/355 split) upsampled to ``size``, 3 channels, (x − 0.5)/0.5,
    with the tasks digit (10), parity (2), ge5 (2), prime (2), loops (3: {1,2,3,5,7} / {0,4,6,9} / {8})."""
    d = load_digits(size)
    return MultiTaskData(
        "digits-multitask",
        _three_channels(d.x_train),
        _digit_tasks(d.y_train),
        _three_channels(d.x_test),
        _digit_tasks(d.y_test),
        list(DIGITS_TASKS),
        [10, 2, 2, 2, 3],
        PIPELINES["digits"],
    )


def mnist_one_vs_rest(size: int = 32) -> MultiTaskData:
    """MNIST-5k (embedded, 4,000/1,000 split) at ``size``, 3 channels, (x − 0.5)/0.5: task 0 "digit" (10 classes),
    tasks 1..10 "is_0".."is_9" (binary one-vs-rest, as the official ``*_MultiTask`` datasets)."""
    d = load_mnist5k(size)

    def labels(y: torch.Tensor) -> torch.Tensor:
        return torch.cat([y[:, None], _one_vs_rest(y, 10)], dim=1)

    return MultiTaskData(
        "mnist5k-one-vs-rest",
        _three_channels(d.x_train),
        labels(d.y_train),
        _three_channels(d.x_test),
        labels(d.y_test),
        ["digit"] + [f"is_{k}" for k in range(10)],
        [10] + [2] * 10,
        PIPELINES["mnist"],
    )


def dsprites_embedded(n: int = 4000, seed: int = 0) -> MultiTaskData:
    """The dSprites-lite of :func:`write_synthetic_dsprites`, cached under ``$XDG_CACHE_HOME/reprozoo`` and read
    back through :func:`load_dsprites` (official seed-42 70/30 split)."""
    path = cache_dir("knowfactor", f"dsprites-{n}-{seed}") / DSPRITES_FILE
    if not path.is_file():
        write_synthetic_dsprites(path, n=n, seed=seed)
    return replace(load_dsprites(path), name="dsprites-lite")


# --- By name ------------------------------------------------------------------------------------------------------

#: The datasets of the settings: read from ``path`` in their real format, or embedded (no ``path``).
FILE_DATASETS = ("cifar10", "imagenet", "shapes3d")
EMBEDDED_DATASETS = ("mnist", "digits")


def load_multitask(
    dataset: str, path: Path | None = None, *, tasks: Sequence[str] | None = None, image_size: int | None = None
) -> MultiTaskData:
    """The dataset ``dataset`` of a setting, read from ``path`` (its real format) or its embedded default.

    ``dsprites`` reads the official ``.npz`` at ``path``, or without it the embedded dSprites-lite; ``mnist`` and
    ``digits`` are embedded only; ``cifar10`` (its pickles), ``imagenet`` (an ImageFolder) and
    ``shapes3d`` (its ``.h5``) need ``path``. ``tasks`` keeps those tasks, in that order; ``image_size``
    resizes the images (area interpolation).
    """
    if dataset in FILE_DATASETS and path is None:
        raise UserError(f"the {dataset} dataset needs --data (its files); nothing is downloaded")
    if dataset in EMBEDDED_DATASETS and path is not None:
        raise UserError(f"the {dataset} data is embedded and reads no files: leave out --data {path}")
    if dataset == "dsprites":
        data = load_dsprites(require_path(path, "--data")) if path else dsprites_embedded()
    elif dataset == "mnist":
        data = mnist_one_vs_rest(size=28)
    elif dataset == "digits":
        data = digits_multitask(size=32)
    elif dataset == "cifar10":
        data = load_cifar10(require_path(path, "--data", kind="dir"))
    elif dataset == "shapes3d":
        data = load_shapes3d(require_path(path, "--data", kind="file"))
    elif dataset == "imagenet":
        data = load_image_folder(require_path(path, "--data", kind="dir"))
    else:
        raise UserError(
            f"unknown dataset {dataset!r}: choose one of dsprites, {', '.join(EMBEDDED_DATASETS + FILE_DATASETS)}"
        )
    if tasks is not None:
        data = select_tasks(data, list(tasks))
    if image_size and data.x_train.shape[-1] != image_size:
        size = (image_size, image_size)
        data = replace(
            data,
            x_train=F.interpolate(data.x_train, size=size, mode="area"),
            x_test=F.interpolate(data.x_test, size=size, mode="area"),
        )
    return data
