"""``synthetic-faces``: procedural, identity-labelled faces, written in the real formats and read back by them.

No PyPI wheel ships an identity-labelled face set, so the offline default is drawn here with numpy
distance fields. An identity is a fixed draw of face shape, skin, eyes, irises, brows, nose, mouth and
hair (seeded by the identity's number alone); each image adds nuisance: expression (mouth curvature,
eye openness), pose (shift, rotation, scale), illumination (gain and a linear gradient) and pixel noise.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facemae.data import RecordIOWriter, write_image_folder, write_verification_bin
from shared.checkpoint import save_json
from shared.errors import UserError

__all__ = ["SyntheticSplit", "draw_face", "synthetic_faces", "synthetic_pairs", "write_synthetic_faces"]

SETTINGS_FILE = "synthetic-faces.json"
_PAIR_PHOTOS = 1_000_000  # pair images take photo numbers of their own, apart from the identity sets
_BACKGROUND = np.array([0.45, 0.47, 0.52])
_LIGHT_SKIN, _DARK_SKIN = np.array([0.96, 0.80, 0.69]), np.array([0.42, 0.28, 0.20])
_IRIS = np.array([[0.35, 0.22, 0.12], [0.25, 0.45, 0.75], [0.30, 0.50, 0.30], [0.45, 0.45, 0.48]])
_HAIR = np.array([[0.08, 0.07, 0.07], [0.35, 0.22, 0.12], [0.85, 0.72, 0.45], [0.65, 0.28, 0.12], [0.7, 0.7, 0.7]])


def identity_parameters(identity: int, seed: int = 0) -> dict[str, np.ndarray]:
    """The fixed look of one identity (face coordinates: x right, y down, the face within [-1, 1])."""
    rng = np.random.default_rng([seed, identity, 0])
    skin = _LIGHT_SKIN + rng.uniform() * (_DARK_SKIN - _LIGHT_SKIN) + rng.uniform(-0.04, 0.04, 3)
    hair = _HAIR[rng.integers(len(_HAIR))] + rng.uniform(-0.05, 0.05, 3)
    eye_y = rng.uniform(-0.15, -0.02)
    return {
        "face_axes": np.array([rng.uniform(0.52, 0.66), rng.uniform(0.68, 0.82)]),
        "skin": skin,
        "eye_spacing": rng.uniform(0.20, 0.30),
        "eye_y": eye_y,
        "eye_size": rng.uniform(0.08, 0.11),
        "iris": _IRIS[rng.integers(len(_IRIS))] + rng.uniform(-0.05, 0.05, 3),
        "brow": np.array([rng.uniform(0.025, 0.06), rng.uniform(-0.25, 0.25), rng.uniform(0.08, 0.12)]),
        "nose_length": rng.uniform(0.12, 0.25),
        "mouth": np.array([rng.uniform(0.12, 0.24), eye_y + rng.uniform(0.35, 0.45)]),
        "hair": hair,
        # hair: width and height relative to the face, lowest point, fringe line
        "hair_shape": np.array(
            [rng.uniform(1.0, 1.15), rng.uniform(1.05, 1.25), rng.uniform(-0.2, 0.5), rng.uniform(-0.55, -0.35)]
        ),
    }


def nuisance_parameters(rng: np.random.Generator) -> dict[str, np.ndarray]:
    """One image's expression, pose and illumination."""
    light_angle = rng.uniform(0, 2 * np.pi)
    return {
        "smile": rng.uniform(-0.3, 0.3),
        "openness": rng.uniform(0.6, 1.0),
        "shift": rng.uniform(-2, 2, 2),
        "rotation": np.deg2rad(rng.uniform(-6, 6)),
        "scale": rng.uniform(0.95, 1.05),
        "gain": rng.uniform(0.8, 1.2),
        "gradient": rng.uniform(0, 0.25) * np.array([np.cos(light_angle), np.sin(light_angle)]),
    }


def _fill(canvas: np.ndarray, alpha: np.ndarray, colour: np.ndarray) -> None:
    canvas += alpha[..., None] * (colour - canvas)


def render_face(look: dict, nuisance: dict, size: int, rng: np.random.Generator) -> np.ndarray:
    """One face as a float (size, size, 3) image in [0, 1]; edges are anti-aliased over one pixel."""
    pixel = (np.arange(size) + 0.5) / size * 2 - 1
    py, px = np.meshgrid(pixel, pixel, indexing="ij")
    dx, dy = px - nuisance["shift"][0] * 2 / size, py - nuisance["shift"][1] * 2 / size
    cos, sin = np.cos(nuisance["rotation"]), np.sin(nuisance["rotation"])
    x, y = (cos * dx + sin * dy) / nuisance["scale"], (-sin * dx + cos * dy) / nuisance["scale"] - 0.05
    width = 2.0 / size

    def soft(distance: np.ndarray) -> np.ndarray:  # signed distance (negative inside) -> coverage
        return np.clip(0.5 - distance / width, 0.0, 1.0)

    def ellipse(cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return soft((np.hypot((x - cx) / a, (y - cy) / b) - 1) * min(a, b))

    def segment(p0: np.ndarray, p1: np.ndarray, thickness: float) -> np.ndarray:
        d = p1 - p0
        t = np.clip(((x - p0[0]) * d[0] + (y - p0[1]) * d[1]) / (d @ d), 0, 1)
        return soft(np.hypot(x - p0[0] - t * d[0], y - p0[1] - t * d[1]) - thickness / 2)

    canvas = np.broadcast_to(_BACKGROUND, (size, size, 3)).copy()
    (fa, fb), (hw, hh, bottom, fringe) = look["face_axes"], look["hair_shape"]
    _fill(canvas, ellipse(0, -0.08, fa * hw, fb * hh) * soft(y - bottom), look["hair"])
    _fill(canvas, ellipse(0, 0, fa, fb) * soft(fringe - y), look["skin"])  # the hair shows above the fringe
    r, eye_y = look["eye_size"], look["eye_y"]
    for side in (-1, 1):
        cx = side * look["eye_spacing"]
        eye = ellipse(cx, eye_y, r, 0.6 * r * nuisance["openness"])
        _fill(canvas, eye, np.array([0.95, 0.95, 0.95]))
        _fill(canvas, eye * ellipse(cx, eye_y, 0.45 * r, 0.45 * r), look["iris"])
        thickness, angle, gap = look["brow"]
        tilt = np.array([np.cos(angle), side * np.sin(angle)]) * r
        centre = np.array([cx, eye_y - gap - 0.03])
        _fill(canvas, segment(centre - tilt, centre + tilt, thickness), 0.8 * look["hair"])
    top = eye_y + 0.08
    _fill(canvas, segment(np.array([0, top]), np.array([0, top + look["nose_length"]]), 0.04), 0.8 * look["skin"])
    half, mouth_y = look["mouth"]
    curve = mouth_y + nuisance["smile"] * ((x / half) ** 2 - 0.5) * half
    lips = soft(np.abs(y - curve) - 0.025) * soft(np.abs(x) - half)
    _fill(canvas, lips, look["skin"] * np.array([0.75, 0.42, 0.42]))
    light = nuisance["gain"] * (1 + nuisance["gradient"][0] * px + nuisance["gradient"][1] * py)
    canvas = canvas * light[..., None] + rng.normal(0, 0.02, canvas.shape)
    return np.clip(canvas, 0.0, 1.0)


def _to_pixels(images: list[np.ndarray]) -> torch.Tensor:
    return torch.from_numpy(np.round(np.stack(images) * 255).astype(np.uint8)).permute(0, 3, 1, 2).contiguous()


def draw_face(identity: int, index: int, size: int, seed: int = 0) -> np.ndarray:
    """Image ``index`` of ``identity``: the identity's look with that image's own nuisance draw."""
    rng = np.random.default_rng([seed, identity, index + 1])
    return render_face(identity_parameters(identity, seed), nuisance_parameters(rng), size, rng)


def synthetic_faces(
    identities: Sequence[int], per_identity: int, size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``per_identity`` faces of each identity: uint8 (N, 3, size, size) and labels 0..len(identities)-1
    (the position of the identity in ``identities``), grouped by identity."""
    images = [draw_face(identity, k, size, seed) for identity in identities for k in range(per_identity)]
    labels = torch.arange(len(identities)).repeat_interleave(per_identity)
    return _to_pixels(images), labels


def synthetic_pairs(
    identities: Sequence[int], pairs: int = 1200, folds: int = 10, size: int = 64, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Verification pairs in the LFW layout: ``folds`` contiguous folds, each its same pairs then its different
    pairs (half and half). Returns uint8 (2 * pairs, 3, size, size) images and the (pairs,) is-same flags."""
    if pairs % (2 * folds) or len(identities) < 2:
        raise ValueError(f"need pairs divisible by {2 * folds} and two identities, got {pairs}, {len(identities)}")
    rng = np.random.default_rng([seed, 1])
    issame = np.tile(np.repeat([True, False], pairs // folds // 2), folds)
    images = []
    for number, same in enumerate(issame):
        first, second = rng.choice(len(identities), 2, replace=False)
        for side, who in enumerate((first, first if same else second)):
            images.append(draw_face(identities[who], _PAIR_PHOTOS + 2 * number + side, size, seed))
    return _to_pixels(images), torch.from_numpy(issame)


@dataclass(frozen=True)
class SyntheticSplit:
    """Where :func:`write_synthetic_faces` put each part."""

    root: Path
    source_folder: Path
    source_rec: Path
    target_folder: Path
    target_rec: Path
    pairs: Path


def _split_paths(root: Path) -> SyntheticSplit:
    return SyntheticSplit(
        root,
        source_folder=root / "source",
        source_rec=root / "source_rec" / "train.rec",
        target_folder=root / "target",
        target_rec=root / "target_rec" / "train.rec",
        pairs=root / "synthetic_pairs.bin",
    )


def write_synthetic_faces(
    root: str | os.PathLike,
    size: int = 64,
    seed: int = 0,
    source: tuple[int, int] = (100, 20),
    target: tuple[int, int] = (60, 20),
    pair_identities: int = 40,
    pairs: int = 1200,
) -> SyntheticSplit:
    """Write the ``synthetic-faces`` default into ``root`` (once: an existing complete copy is reused).

    ``source`` (identities, images each) trains FaceMAE, ``target`` is the set it releases (identities
    disjoint from the source), both as identity folders and as RecordIO packs; ``pairs`` verification
    pairs of ``pair_identities`` further identities go to ``synthetic_pairs.bin``. The files appear at
    once: everything is written into a temporary folder that is then renamed. ``synthetic-faces.json`` records
    the settings; a folder made with other settings is refused.
    """
    root = Path(root)
    settings = {
        "size": size,
        "seed": seed,
        "source": list(source),
        "target": list(target),
        "pair_identities": pair_identities,
        "pairs": pairs,
    }
    if root.is_dir():
        return _reuse(root, settings)
    staging = root.with_name(f".{root.name}.{os.getpid()}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    parts = _split_paths(staging)
    sets = [
        (source, 0, parts.source_folder, parts.source_rec),
        (target, source[0], parts.target_folder, parts.target_rec),
    ]
    try:
        for (count, per_identity), first, folder, rec in sets:
            identities = list(range(first, first + count))
            images, labels = synthetic_faces(identities, per_identity, size, seed)
            write_image_folder(folder, images, labels, [f"id{i:05d}" for i in identities])
            with RecordIOWriter(rec.parent, size, num_classes=count) as writer:
                for image, label in zip(images, labels.tolist(), strict=True):
                    writer.write(image, label)
        first = source[0] + target[0]
        images, issame = synthetic_pairs(list(range(first, first + pair_identities)), pairs, size=size, seed=seed)
        write_verification_bin(parts.pairs, list(images), issame.tolist())
        save_json(staging / SETTINGS_FILE, settings)
        root.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, root)
    except OSError:
        if not root.is_dir():  # else another process finished the same data first
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return _reuse(root, settings)


def _reuse(root: Path, settings: dict) -> SyntheticSplit:
    """The split already in ``root``, if it was made with ``settings``."""
    path = root / SETTINGS_FILE
    found = json.loads(path.read_text()) if path.is_file() else None
    if found != settings:
        raise UserError(
            f"{root} does not hold synthetic faces made with {settings} (found {found}): "
            "choose another folder or delete this one"
        )
    return _split_paths(root)
