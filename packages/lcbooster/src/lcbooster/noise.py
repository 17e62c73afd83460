"""Synthetic label noise (DivideMix / LC-Booster protocols) and the two noise-file formats.

Both official protocols draw ⌊r·N⌋ noise indices from the whole training set. Symmetric noise gives each a
uniform label over all C classes, true class included (realised flip rate r·(C−1)/C); asymmetric noise maps
each noise index through a class transition (CIFAR-10: bird→airplane, cat→dog, deer→horse, dog→cat,
truck→automobile), so only samples of mapped classes change. ``per_class=True`` draws ⌊r·n_c⌋ indices in each
class instead.

Files: LC-Booster ``.npy`` int32 (2, N), row 0 the sample indices, row 1 the labels; DivideMix ``.json``, a list
of N ints in sample order.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np

from shared.checkpoint import atomic_write
from shared.errors import UserError, require_path

CIFAR10_ASYM_TRANSITION: dict[int, int] = {2: 0, 3: 5, 4: 7, 5: 3, 9: 1}

_MAKE_NOISE = "generate a noise file for this dataset with lcbooster-make-noise"


def check_noise_ratio(ratio: float) -> float:
    """``ratio`` as a float, or a UserError unless 0 ≤ ratio ≤ 1."""
    ratio = float(ratio)
    if not 0.0 <= ratio <= 1.0:
        raise UserError(f"noise ratio must lie in [0, 1], got {ratio}: pass e.g. 0.8 for 80% noise")
    return ratio


def _as_labels(labels: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise UserError(f"labels must be a 1-D integer array, got shape {labels.shape} of {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size and labels.min() < 0:
        raise UserError(f"labels must be non-negative, got {labels.min()}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise UserError(f"label {labels.max()} is outside [0, {num_classes}): pass the dataset's number of classes")
    return labels


def _count(ratio: float, n: int) -> int:
    return math.floor(ratio * n + 1e-9)  # int(r·N) as the official code, immune to 0.29*100 = 28.999…


def _noise_indices(labels: np.ndarray, ratio: float, rng: np.random.Generator, per_class: bool) -> np.ndarray:
    """⌊r·N⌋ indices drawn from all samples, or ⌊r·n_c⌋ in each class with ``per_class``."""
    if not per_class:
        return rng.choice(labels.size, _count(ratio, labels.size), replace=False)
    members = [np.flatnonzero(labels == c) for c in np.unique(labels)]
    picks = [rng.choice(m, _count(ratio, m.size), replace=False) for m in members]
    return np.concatenate(picks) if picks else np.zeros(0, dtype=np.int64)


def symmetric_noise(
    labels: np.ndarray,
    ratio: float,
    num_classes: int,
    seed: int = 0,
    *,
    include_true_class: bool = True,
    per_class: bool = False,
) -> np.ndarray:
    """Noisy copy of ``labels``: a fraction ``ratio`` of samples relabelled uniformly at random.

    The default is the official protocol (label drawn over all classes, true one included);
    ``include_true_class=False`` draws among the other C−1 classes, so every chosen sample flips.
    """
    ratio = check_noise_ratio(ratio)
    if num_classes < 2:
        raise UserError(f"symmetric noise needs at least 2 classes, got {num_classes}")
    labels = _as_labels(labels, num_classes)
    rng = np.random.default_rng(seed)
    index = _noise_indices(labels, ratio, rng, per_class)
    noisy = labels.copy()
    if include_true_class:
        noisy[index] = rng.integers(0, num_classes, index.size)
    else:
        noisy[index] = (labels[index] + rng.integers(1, num_classes, index.size)) % num_classes
    return noisy


def asymmetric_noise(
    labels: np.ndarray,
    ratio: float,
    transition: dict[int, int] = CIFAR10_ASYM_TRANSITION,
    seed: int = 0,
    *,
    per_class: bool = False,
) -> np.ndarray:
    """Noisy copy of ``labels``: noise indices drawn from all samples, mapped through ``transition``.

    Samples of classes absent from ``transition`` keep their label, so about r·(fraction in mapped classes)
    of the set changes and each mapped class flips a fraction ≈ r (exactly ⌊r·n_c⌋ with ``per_class``).
    """
    ratio = check_noise_ratio(ratio)
    labels = _as_labels(labels)
    if any(int(target) < 0 for target in transition.values()):
        raise UserError(f"class transition must map to non-negative classes, got {transition}")
    table = np.arange(int(labels.max(initial=-1)) + 1)
    for source, target in transition.items():
        if 0 <= int(source) < table.size:
            table[int(source)] = int(target)
    rng = np.random.default_rng(seed)
    index = _noise_indices(labels, ratio, rng, per_class)
    noisy = labels.copy()
    noisy[index] = table[labels[index]]
    return noisy


def draw_noise(
    labels: np.ndarray,
    mode: str,
    ratio: float,
    num_classes: int,
    seed: int = 0,
    *,
    include_true_class: bool = True,
    per_class: bool = False,
) -> np.ndarray:
    """Noisy labels of ``mode`` "sym" (:func:`symmetric_noise`) or "asym" (CIFAR-10's class pairs, 10 classes)."""
    if mode == "asym":
        if num_classes != 10:
            raise UserError("asymmetric noise is defined for 10 classes (the CIFAR-10 class pairs) only")
        return asymmetric_noise(labels, ratio, seed=seed, per_class=per_class)
    return symmetric_noise(
        labels, ratio, num_classes, seed=seed, include_true_class=include_true_class, per_class=per_class
    )


def write_noise_file(
    path: str | os.PathLike,
    clean: np.ndarray,
    num_classes: int,
    mode: str,
    ratio: float,
    seed: int = 0,
    *,
    include_true_class: bool = True,
    per_class: bool = False,
) -> dict:
    """Draw noise of ``mode`` over the ``clean`` labels (:func:`draw_noise`) and save it at ``path`` (``.npy`` or
    ``.json``), never over an existing file; returns the path, the number of labels and their accuracy."""
    ratio = check_noise_ratio(ratio)
    path = Path(path)
    if path.suffix not in (".npy", ".json"):
        raise UserError(f"--out {path} must end in .npy or .json (or pass --format)")
    if path.exists():
        raise UserError(f"{path} exists: noise files are never overwritten; choose another --out")
    labels = draw_noise(
        clean, mode, ratio, num_classes, seed, include_true_class=include_true_class, per_class=per_class
    )
    save_noisy_labels(path, labels)
    return {"out": str(path), "labels": int(labels.size), "label_accuracy": label_accuracy(labels, clean)}


def expected_label_accuracy(
    ratio: float,
    num_classes: int,
    kind: str = "sym",
    *,
    include_true_class: bool = True,
    labels: np.ndarray | None = None,
    transition: dict[int, int] | None = None,
) -> float:
    """Expected fraction of correct labels after :func:`symmetric_noise` or :func:`asymmetric_noise`.

    sym: 1 − r + r/C (1 − r without the true class). asym: 1 − r·f, with f the fraction of samples in classes
    the transition changes, counted in ``labels`` or, without them, assuming balanced classes.
    """
    ratio = check_noise_ratio(ratio)
    if kind == "sym":
        return 1.0 - ratio + (ratio / num_classes if include_true_class else 0.0)
    if kind != "asym":
        raise UserError(f"noise kind must be 'sym' or 'asym', got {kind!r}")
    mapped = [k for k, v in (CIFAR10_ASYM_TRANSITION if transition is None else transition).items() if k != v]
    if labels is None:
        fraction = sum(0 <= k < num_classes for k in mapped) / num_classes
    else:
        fraction = float(np.isin(_as_labels(labels), mapped).mean())
    return 1.0 - ratio * fraction


def label_accuracy(noisy: np.ndarray, clean: np.ndarray) -> float:
    """Fraction of samples whose noisy label equals the clean one."""
    noisy, clean = np.asarray(noisy), np.asarray(clean)
    if noisy.shape != clean.shape or noisy.size == 0:
        raise UserError(f"noisy labels {noisy.shape} and clean labels {clean.shape} must be the same non-empty shape")
    return float((noisy == clean).mean())


def save_noisy_labels(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write ``labels`` atomically: ``.npy`` = LC-Booster int32 (2, N), ``.json`` = DivideMix list of N ints."""
    path = Path(path)
    labels = _as_labels(labels)
    if path.suffix == ".npy":
        table = np.stack([np.arange(labels.size), labels]).astype(np.int32)
        return atomic_write(path, lambda f: np.save(f, table))
    if path.suffix == ".json":
        return atomic_write(path, lambda f: json.dump(labels.tolist(), f), binary=False)
    raise UserError(f"noise file must end in .npy (LC-Booster) or .json (DivideMix), got {path.name}")


def _read_npy(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(
            f"noise file {path} is not a readable .npy array ({type(exc).__name__}): {_MAKE_NOISE}"
        ) from exc
    if not isinstance(array, np.ndarray) or not np.issubdtype(array.dtype, np.integer):
        raise UserError(f"noise file {path} does not hold integer labels: {_MAKE_NOISE}")
    if array.ndim == 1:
        return array
    if array.ndim != 2 or array.shape[0] != 2:
        raise UserError(f"noise file {path} has shape {array.shape}, expected (2, N) or (N,): {_MAKE_NOISE}")
    index, values = array
    if not np.array_equal(np.sort(index), np.arange(index.size)):
        raise UserError(f"row 0 of noise file {path} is not a permutation of 0..N-1: {_MAKE_NOISE}")
    labels = np.empty_like(values)
    labels[index] = values
    return labels


def _read_json(path: Path) -> np.ndarray:
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"noise file {path} is not valid JSON ({type(exc).__name__}): {_MAKE_NOISE}") from exc
    if not isinstance(values, list) or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise UserError(f"noise file {path} is not a JSON list of integer labels: {_MAKE_NOISE}")
    return np.asarray(values, dtype=np.int64)


def load_noisy_labels(
    path: str | os.PathLike, num_samples: int | None = None, num_classes: int | None = None
) -> np.ndarray:
    """Read a ``.npy`` (LC-Booster (2, N), or plain (N,)) or ``.json`` (DivideMix) noise file, in sample order.

    ``num_samples`` and ``num_classes`` check the file against the dataset it is meant for.
    """
    path = require_path(path, "noise file", kind="file")
    if path.suffix == ".npy":
        labels = _read_npy(path)
    elif path.suffix == ".json":
        labels = _read_json(path)
    else:
        raise UserError(f"noise file must end in .npy (LC-Booster) or .json (DivideMix), got {path.name}")
    labels = labels.astype(np.int64)
    if num_samples is not None and labels.size != num_samples:
        raise UserError(
            f"noise file {path} holds {labels.size} labels but the dataset has {num_samples} training samples: "
            f"{_MAKE_NOISE}"
        )
    if labels.size and labels.min() < 0:
        raise UserError(f"noise file {path} holds the negative label {labels.min()}: {_MAKE_NOISE}")
    if num_classes is not None and labels.size and labels.max() >= num_classes:
        raise UserError(
            f"noise file {path} holds label {labels.max()}, outside [0, {num_classes}) for this dataset: {_MAKE_NOISE}"
        )
    return labels
