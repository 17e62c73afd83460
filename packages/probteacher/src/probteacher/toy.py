"""``toy-fog``: a synthetic clear-to-foggy detection pair, written as Pascal VOC folders (the official format).

Source images are 1-5 objects (a filled square, disk or triangle, 14-40 px, in a vivid random colour; or
with ``objects="digits"`` scikit-learn's 8x8 digits upsampled x3-x5, coloured, alpha = stroke intensity) on a
random crop (after a random rescale 0.5-1.5) of a texture or photo shipped inside the scikit-image and
scikit-learn wheels; objects overlap with pairwise IoU at most 0.3. Boxes are the tight extent of each
object's mask. Target images are drawn independently by the same generator and then fogged as Foggy
Cityscapes is (Sakaridis et al., IJCV 2018): I = J t + A (1 - t) with t = exp(-beta d), a depth proxy
d = d0 + delta (1 - y / H) + eta (eta: 8x8 Gaussian noise, sigma 0.2, upsampled bilinearly), a grey
atmospheric light A ~ U(0.75, 0.95), and beta solved per image so that the mean transmission equals the fog
level (light 0.6, medium 0.45, dense 0.35); then a Gaussian blur (sigma 0.8) and a 20% saturation drop.

``scale_shift`` s (the ``toy-fog-scale`` task, for anchor adaptation) multiplies every target object's size
by m ~ U(1 + 0.75 (s - 1), 1 + 1.25 (s - 1)), whose midpoint is s (s = 1.8 gives 1.6-2x); s = 1 leaves the
sizes unchanged. Everything is deterministic from ``seed``; source and target (and each split) use
independent random streams.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF
from PIL import Image

from probteacher.data import write_voc_xml
from shared.data import cache_dir, load_background_images, load_digits
from shared.errors import UserError

GENERATOR_VERSION = 1
TOY_CLASSES = ("square", "disk", "triangle")
DIGIT_CLASSES = tuple(str(d) for d in range(10))
OBJECT_KINDS = ("shapes", "digits")
FOG_LEVELS = {"light": 0.6, "medium": 0.45, "dense": 0.35}  # mean transmission
DEPTH_NEAR, DEPTH_RANGE, DEPTH_NOISE = 1.0, 1.0, 0.2  # d0, delta, sigma of eta
AIRLIGHT = (0.75, 0.95)
FOG_BLUR_SIGMA, FOG_SATURATION = 0.8, 0.8
MAX_IOU = 0.3
SHAPE_SIZES = (14, 40)
DIGIT_ZOOMS = (3, 4, 5)
PLACEMENT_TRIES = 32
NEWTON_STEPS = 4
_CHUNK = 64


def toy_classes(objects: str = "shapes") -> tuple[str, ...]:
    """The class names of the toy set: :data:`TOY_CLASSES` or, for digits, "0".."9"."""
    _check_objects(objects)
    return TOY_CLASSES if objects == "shapes" else DIGIT_CLASSES


def _check_objects(objects: str) -> None:
    if objects not in OBJECT_KINDS:
        raise UserError(f"unknown --objects {objects!r}: choose from {', '.join(OBJECT_KINDS)}")


def _scale_range(scale_shift: float) -> tuple[float, float]:
    return 1 + 0.75 * (scale_shift - 1), 1 + 1.25 * (scale_shift - 1)


def _vivid_colours(rng: np.random.Generator, n: int) -> np.ndarray:
    """Random colours stretched so that each spans a wide channel range (never a dull grey)."""
    raw = rng.uniform(size=(n, 3))
    span = raw.max(1, keepdims=True) - raw.min(1, keepdims=True)
    unit = (raw - raw.min(1, keepdims=True)) / np.maximum(span, 1e-6)
    low, high = rng.uniform(0.0, 0.3, (n, 1)), rng.uniform(0.7, 1.0, (n, 1))
    return (low + (high - low) * unit).astype(np.float32)


def _box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of xyxy boxes (m, 4) x (n, 4)."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: np.prod(x[:, 2:] - x[:, :2], axis=1)  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def _place(rng: np.random.Generator, sides: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Square layout boxes (xyxy) of the given sides with pairwise IoU <= MAX_IOU, and the indices placed.

    Each object tries PLACEMENT_TRIES random positions at once; an object with no valid position is dropped.
    """
    placed, kept = np.zeros((0, 4)), []
    for index, side in enumerate(sides):
        corners = rng.integers(0, size - side + 1, (PLACEMENT_TRIES, 2))
        candidates = np.concatenate([corners, corners + side], axis=1).astype(np.float64)
        ok = np.ones(PLACEMENT_TRIES, bool) if not kept else (_box_iou(candidates, placed) <= MAX_IOU).all(1)
        if ok.any():
            placed = np.concatenate([placed, candidates[ok.argmax()][None]])
            kept.append(index)
    return placed, np.asarray(kept, dtype=np.int64)


def _shape_alpha(layout: torch.Tensor, kinds: torch.Tensor, size: int) -> torch.Tensor:
    """Binary masks (n, size, size) of squares (0), disks (1) and triangles (2) filling their layout boxes."""
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    xs, ys = centres.view(1, 1, -1), centres.view(1, -1, 1)
    x0, y0, x1, y1 = (layout[:, i].view(-1, 1, 1) for i in range(4))
    inside = (xs >= x0) & (xs < x1) & (ys >= y0) & (ys < y1)
    cx, cy, half = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    disk = (xs - cx) ** 2 + (ys - cy) ** 2 <= half**2
    triangle = inside & ((xs - cx).abs() <= (ys - y0) * half / (y1 - y0))  # apex up, base at the bottom
    kind = kinds.view(-1, 1, 1)
    return torch.where(kind == 0, inside, torch.where(kind == 1, disk, triangle)).float()


def _digit_alpha(layout: torch.Tensor, glyphs: torch.Tensor, size: int) -> torch.Tensor:
    """Digit glyphs (n, 1, 8, 8) stretched bilinearly over their layout boxes: alpha (n, size, size)."""
    centres = torch.arange(size, dtype=torch.float32) + 0.5
    x0, y0, x1, y1 = (layout[:, i].view(-1, 1) for i in range(4))
    u = (centres.view(1, -1) - x0) / (x1 - x0) * 2 - 1  # (n, size)
    v = (centres.view(1, -1) - y0) / (y1 - y0) * 2 - 1
    grid = torch.stack(torch.broadcast_tensors(u[:, None, :], v[:, :, None]), dim=-1)
    return F.grid_sample(glyphs, grid, mode="bilinear", padding_mode="zeros", align_corners=False)[:, 0]


def _composite(background: torch.Tensor, alpha: torch.Tensor, colours: torch.Tensor) -> torch.Tensor:
    """Objects painted in order (the last on top): bg * prod(1 - a_i) + sum_i c_i a_i prod_{j>i} (1 - a_j)."""
    through = torch.cumprod((1 - alpha).flip(0), 0).flip(0)  # prod_{j >= i}
    above = torch.cat([through[1:], torch.ones_like(through[:1])])  # prod_{j > i}
    paint = torch.einsum("nc,nhw->chw", colours, alpha * above)
    return background * through[0] + paint


def _tight_boxes(alpha: torch.Tensor) -> torch.Tensor:
    """xyxy extent (exclusive ends, in pixels) of each mask alpha > 0."""
    mask = alpha > 0
    rows, cols = mask.any(2), mask.any(1)
    size_y, size_x = rows.shape[1], cols.shape[1]
    y0, y1 = rows.float().argmax(1), size_y - rows.flip(1).float().argmax(1)
    x0, x1 = cols.float().argmax(1), size_x - cols.flip(1).float().argmax(1)
    return torch.stack([x0, y0, x1, y1], dim=1).float()


class _Renderer:
    """Draws one domain's images: backgrounds, objects and their boxes."""

    def __init__(
        self,
        size: int,
        objects: str,
        scale_shift: float,
        backgrounds: list[torch.Tensor],
        glyphs: tuple[torch.Tensor, torch.Tensor] | None,
    ) -> None:
        self.size, self.objects, self.backgrounds, self.glyphs = size, objects, backgrounds, glyphs
        self.scale_range = _scale_range(scale_shift)

    def background(self, rng: np.random.Generator) -> torch.Tensor:
        image = self.backgrounds[rng.integers(len(self.backgrounds))]
        side = min(round(self.size / rng.uniform(0.5, 1.5)), *image.shape[1:])
        top, left = rng.integers(0, image.shape[1] - side + 1), rng.integers(0, image.shape[2] - side + 1)
        crop = image[None, :, top : top + side, left : left + side]
        resized = F.interpolate(crop, size=(self.size, self.size), mode="bilinear", antialias=side > self.size)
        return resized[0].clamp(0, 1)

    def __call__(self, rng: np.random.Generator) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
        n = int(rng.integers(1, 6))
        if self.objects == "shapes":
            base = rng.integers(SHAPE_SIZES[0], SHAPE_SIZES[1] + 1, n)
            kinds = rng.integers(0, len(TOY_CLASSES), n)
        else:
            base = 8 * rng.choice(DIGIT_ZOOMS, n)
            picks = rng.integers(0, len(self.glyphs[0]), n)
            kinds = self.glyphs[1][picks].numpy()
        sides = np.minimum(np.round(base * rng.uniform(*self.scale_range, n)), self.size).astype(np.int64)
        layout, kept = _place(rng, sides, self.size)
        colours = torch.from_numpy(_vivid_colours(rng, len(kept)))
        background = self.background(rng)
        layout_t = torch.from_numpy(layout).float()
        if self.objects == "shapes":
            alpha = _shape_alpha(layout_t, torch.from_numpy(kinds[kept]), self.size)
        else:
            alpha = _digit_alpha(layout_t, self.glyphs[0][picks[kept]], self.size)
        image = _composite(background, alpha, colours)
        return image, _tight_boxes(alpha).numpy(), kinds[kept].astype(np.int64) + 1


def _separable_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur (kernel 2 ceil(3 sigma) + 1, reflect padding, as torchvision's) as two 1-D passes.

    Each pass is a sum of shifted slices, several times faster on a CPU than a depthwise convolution.
    """
    radius = math.ceil(3 * sigma)
    taps = torch.exp(-0.5 * (torch.arange(-radius, radius + 1, dtype=torch.float64) / sigma) ** 2)
    taps = (taps / taps.sum()).tolist()
    height, width = images.shape[-2:]
    padded = F.pad(images, (radius, radius, radius, radius), mode="reflect")
    rows = padded[..., :width] * taps[0]
    for k, tap in enumerate(taps[1:], start=1):
        rows.add_(padded[..., k : k + width], alpha=tap)
    out = rows[..., :height, :] * taps[0]
    for k, tap in enumerate(taps[1:], start=1):
        out.add_(rows[..., k : k + height, :], alpha=tap)
    return out


def apply_fog(images: torch.Tensor, level: float, rng: np.random.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Fog a batch (B, 3, H, W) in [0, 1]; returns the fogged images and the transmission maps (B, H, W).

    t = exp(-beta d) with d = d0 + delta (1 - y / H) + eta, beta solved per image (Newton's method from the
    Jensen bound, which approaches the root from below) so that mean(t) = ``level``; I = J t + A (1 - t) with
    A ~ U(0.75, 0.95); then a Gaussian blur (sigma 0.8) and a 20% saturation drop.
    """
    batch, _, height, width = images.shape
    noise = torch.from_numpy(rng.normal(0.0, DEPTH_NOISE, (batch, 1, 8, 8)).astype(np.float32))
    eta = F.interpolate(noise, size=(height, width), mode="bilinear", align_corners=False)[:, 0]
    rows = 1 - torch.arange(height, dtype=torch.float32) / height
    depth = (DEPTH_NEAR + DEPTH_RANGE * rows.view(1, -1, 1) + eta).clamp_min(0.05)
    beta = -math.log(level) / depth.mean(dim=(1, 2), keepdim=True)
    for _ in range(NEWTON_STEPS):
        t = torch.exp(-beta * depth)
        beta = beta + (t.mean(dim=(1, 2), keepdim=True) - level) / (depth * t).mean(dim=(1, 2), keepdim=True)
    t = torch.exp(-beta * depth)
    airlight = torch.from_numpy(rng.uniform(*AIRLIGHT, (batch, 1, 1, 1)).astype(np.float32))
    foggy = images * t[:, None] + airlight * (1 - t[:, None])
    return TF.adjust_saturation(_separable_blur(foggy, FOG_BLUR_SIGMA), FOG_SATURATION).clamp(0, 1), t


def _write_image(folder: Path, image_id: str, pixels: np.ndarray, boxes, labels, classes) -> None:
    Image.fromarray(pixels).save(folder / "JPEGImages" / f"{image_id}.png", compress_level=1)
    height, width = pixels.shape[:2]
    write_voc_xml(folder / "Annotations" / f"{image_id}.xml", f"{image_id}.png", width, height, boxes, labels, classes)


def make_toy_fog(
    out_dir: str | os.PathLike,
    *,
    n_source_train: int = 1500,
    n_target_train: int = 1500,
    n_test: int = 300,
    size: int = 128,
    objects: str = "shapes",
    fog_level: str = "dense",
    scale_shift: float = 1.0,
    seed: int = 0,
    workers: int = 4,
) -> dict[str, Any]:
    """Write ``out_dir/source`` (clear) and ``out_dir/target`` (foggy) VOC folders; return the summary.

    Splits: source ``train`` (``n_source_train``) and ``test`` (``n_test``); target ``train``
    (``n_target_train``, used unlabelled by the method but written with annotations) and ``test``
    (``n_test``). PNG images, complete XMLs, ``meta.json`` (the returned summary) written last.
    ``workers`` threads encode the files.
    """
    _check_objects(objects)
    if fog_level not in FOG_LEVELS:
        raise UserError(f"unknown --fog-level {fog_level!r}: choose from {', '.join(FOG_LEVELS)}")
    if min(n_source_train, n_target_train, n_test) < 1:
        raise UserError("the toy set needs at least one image in every split: raise the image counts")
    if size < 64:
        raise UserError(f"--size must be at least 64 pixels for 14-40 px objects, got {size}")
    base = SHAPE_SIZES[1] if objects == "shapes" else 8 * DIGIT_ZOOMS[-1]
    highest = 1 + (0.8 * size / base - 1) / 1.25  # the largest target object stays within 80% of the image
    if not 0.5 <= scale_shift <= highest:
        raise UserError(f"--scale-shift {scale_shift} is outside [0.5, {highest:.2f}] for {size} px images")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} is not empty: choose a new folder or delete it")
    start = time.perf_counter()
    classes = toy_classes(objects)
    digits = load_digits() if objects == "digits" else None
    backgrounds = list(load_background_images().values())
    plan = [
        ("source", "train", n_source_train),
        ("source", "test", n_test),
        ("target", "train", n_target_train),
        ("target", "test", n_test),
    ]
    summary: dict[str, Any] = {
        "generator": "probteacher.toy",
        "version": GENERATOR_VERSION,
        "seed": seed,
        "size": size,
        "objects": objects,
        "classes": list(classes),
        "fog_level": fog_level,
        "mean_transmission_asked": FOG_LEVELS[fog_level],
        "scale_shift": scale_shift,
        "target_scale_range": list(_scale_range(scale_shift)),
        "splits": {},
    }
    transmission = []
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        for stream, (domain, split, count) in enumerate(plan):
            folder = out / domain
            for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
                (folder / sub).mkdir(parents=True, exist_ok=True)
            glyphs = None
            if digits is not None:
                glyphs = (digits.x_train, digits.y_train) if split == "train" else (digits.x_test, digits.y_test)
            render = _Renderer(size, objects, scale_shift if domain == "target" else 1.0, backgrounds, glyphs)
            rng = np.random.default_rng([seed, stream])
            ids = [f"{split}_{i:05d}" for i in range(count)]
            objects_per_class = np.zeros(len(classes), np.int64)
            jobs = []
            for first in range(0, count, _CHUNK):
                drawn = [render(rng) for _ in ids[first : first + _CHUNK]]
                images = torch.stack([image for image, _, _ in drawn])
                if domain == "target":
                    images, t = apply_fog(images, FOG_LEVELS[fog_level], rng)
                    transmission.append(t.mean(dim=(1, 2)))
                pixels = (images * 255).round_().to(torch.uint8).permute(0, 2, 3, 1).numpy()
                for image_id, array, (_, boxes, labels) in zip(ids[first:], pixels, drawn, strict=False):
                    objects_per_class += np.bincount(labels - 1, minlength=len(classes))
                    jobs.append(pool.submit(_write_image, folder, image_id, array, boxes, labels, classes))
            for job in jobs:
                job.result()
            (folder / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(f"{i}\n" for i in ids))
            summary["splits"][f"{domain}/{split}"] = {
                "images": count,
                "objects": int(objects_per_class.sum()),
                "per_class": dict(zip(classes, objects_per_class.tolist(), strict=True)),
            }
    summary["mean_transmission"] = round(float(torch.cat(transmission).mean()), 4)
    summary["seconds"] = round(time.perf_counter() - start, 2)
    (out / "meta.json").write_text(json.dumps(summary, indent=1))
    return summary


def toy_dataset_key(
    *,
    n_source_train: int = 1500,
    n_target_train: int = 1500,
    n_test: int = 300,
    size: int = 128,
    objects: str = "shapes",
    fog_level: str = "dense",
    scale_shift: float = 1.0,
    seed: int = 0,
) -> str:
    """A folder name that changes with every generation parameter and with :data:`GENERATOR_VERSION`."""
    return (
        f"toy-fog-v{GENERATOR_VERSION}-{objects}-{fog_level}-x{scale_shift:g}-{size}px-"
        f"{n_source_train}-{n_target_train}-{n_test}-seed{seed}"
    )


def cached_toy_fog(*, workers: int = 4, **params: Any) -> Path:
    """The toy set for ``params`` (those of :func:`make_toy_fog`) under ``shared.data.cache_dir``, made once.

    Generated into a temporary sibling folder and renamed into place, so an interrupted or concurrent
    generation never leaves a half-written set behind.
    """
    folder = cache_dir("probteacher", toy_dataset_key(**params))
    if (folder / "meta.json").is_file():
        return folder
    partial = folder.with_name(f"{folder.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        make_toy_fog(partial, workers=workers, **params)
        try:
            partial.rename(folder)
        except OSError:  # another process finished first
            if not (folder / "meta.json").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return folder
