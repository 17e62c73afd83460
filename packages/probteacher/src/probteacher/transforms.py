"""The official code's augmentations on tensors: weak view, strong view and scale-down paste.

Images are float (3, H, W) RGB in [0, 1]; targets are dicts whose ``"boxes"`` (n, 4) xyxy follow the image
(every other key, e.g. pseudo-label logits and variances, is passed through). Randomness comes only from the
``torch.Generator`` passed in (a CPU generator; the image may live on any device), so a view is a function of
the generator's state.

- weak view (both domains): random horizontal flip p 0.5, after the official ResizeShortestEdge when a size
  is given (the detector's own transform resizes otherwise);
- strong view (on the weak image, same geometry): ColorJitter(0.4, 0.4, 0.4, 0.1) p 0.8, RandomGrayscale
  p 0.2, Gaussian blur sigma ~ U(0.1, 2.0) p 0.5, Solarize(128) p 0.2;
- scale-down paste (the official ``PTrainer.resize``): shrink by r ~ U(0.5, 1.0), paste at the centre of a
  canvas of the original size filled with the mean pixel.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF


def _uniform(g: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand((), generator=g).item()


def _coin(g: torch.Generator, p: float) -> bool:
    return torch.rand((), generator=g).item() < p


def _with_boxes(target: dict[str, Any], boxes: torch.Tensor) -> dict[str, Any]:
    return {**target, "boxes": boxes}


def hflip(image: torch.Tensor, target: dict[str, Any]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Mirror the image left-right and its boxes (x -> W - x)."""
    width = image.shape[-1]
    boxes = target["boxes"]
    flipped = torch.stack([width - boxes[:, 2], boxes[:, 1], width - boxes[:, 0], boxes[:, 3]], dim=1)
    return image.flip(-1), _with_boxes(target, flipped)


def resize(image: torch.Tensor, target: dict[str, Any], size: tuple[int, int]) -> tuple[torch.Tensor, dict[str, Any]]:
    """Bilinear (antialiased) resize to ``size`` = (H, W), boxes scaled by the same factors."""
    height, width = image.shape[-2:]
    if (height, width) == tuple(size):
        return image, target
    out = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False, antialias=True)[0]
    scale = torch.tensor([size[1] / width, size[0] / height] * 2, dtype=target["boxes"].dtype)
    return out.clamp_(0, 1), _with_boxes(target, target["boxes"] * scale.to(target["boxes"].device))


def shortest_edge_size(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """detectron2's ResizeShortestEdge: the short side to ``short``, the long side at most ``max_size``."""
    scale = short / min(height, width)
    if max(height, width) * scale > max_size:
        scale = max_size / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def weak_view(
    image: torch.Tensor,
    target: dict[str, Any],
    g: torch.Generator,
    *,
    min_size: int | Sequence[int] | None = None,
    max_size: int = 1333,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The official weak augmentation: ResizeShortestEdge(min_size, max_size, "choice") then a flip p 0.5.

    ``min_size`` None keeps the size (the detector resizes); a sequence picks one size at random.
    """
    if min_size is not None:
        sizes = [min_size] if isinstance(min_size, int) else list(min_size)
        short = sizes[int(torch.randint(len(sizes), (), generator=g))]
        image, target = resize(image, target, shortest_edge_size(*image.shape[-2:], short, max_size))
    if _coin(g, 0.5):
        image, target = hflip(image, target)
    return image, target


def strong_view(image: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The official strong augmentation (photometric only, so boxes are unchanged).

    ColorJitter(brightness 0.4, contrast 0.4, saturation 0.4, hue 0.1) p 0.8 in a random order (as
    torchvision's), RandomGrayscale p 0.2, Gaussian blur with sigma ~ U(0.1, 2.0) p 0.5 (the official PIL
    blur's radius is its standard deviation; kernel 2*ceil(3 sigma)+1), Solarize at 0.5 (PIL's 128) p 0.2.
    """
    if _coin(g, 0.8):
        factors = [_uniform(g, 0.6, 1.4), _uniform(g, 0.6, 1.4), _uniform(g, 0.6, 1.4), _uniform(g, -0.1, 0.1)]
        ops = (TF.adjust_brightness, TF.adjust_contrast, TF.adjust_saturation, TF.adjust_hue)
        for k in torch.randperm(4, generator=g).tolist():
            image = ops[k](image, factors[k])
    if _coin(g, 0.2):
        image = TF.rgb_to_grayscale(image, num_output_channels=3)
    if _coin(g, 0.5):
        sigma = _uniform(g, 0.1, 2.0)
        kernel = 2 * math.ceil(3 * sigma) + 1
        image = TF.gaussian_blur(image, [kernel, kernel], [sigma, sigma])
    if _coin(g, 0.2):
        image = TF.solarize(image, 0.5)
    return image


def scale_down_paste(
    image: torch.Tensor,
    target: dict[str, Any],
    g: torch.Generator,
    ratio_range: tuple[float, float] = (0.5, 1.0),
    fill: float | Sequence[float] | torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, Any]]:
    """The official ``PTrainer.resize``: shrink by r ~ U(ratio_range), paste at the centre of the same canvas.

    The image is resized bilinearly to (floor(rH), floor(rW)) and pasted at offset ((H - h) // 2,
    (W - w) // 2) of an H x W canvas filled with ``fill`` (default: the image's per-channel mean, the
    official "pixel mean"). Boxes are scaled by the exact resize factors (w/W, h/H), which equal r up to the
    floor, and shifted by the offset; only ``"boxes"`` changes, so pseudo-label dicts work too.
    """
    height, width = image.shape[-2:]
    r = _uniform(g, *ratio_range)
    new_h, new_w = max(1, math.floor(r * height)), max(1, math.floor(r * width))
    if fill is None:
        fill = image.mean(dim=(-2, -1))
    fill = torch.as_tensor(fill, dtype=image.dtype, device=image.device).reshape(-1, 1, 1)
    canvas = fill.expand_as(image).clone()
    top, left = (height - new_h) // 2, (width - new_w) // 2
    small = F.interpolate(image[None], size=(new_h, new_w), mode="bilinear", align_corners=False)[0]
    canvas[:, top : top + new_h, left : left + new_w] = small
    boxes = target["boxes"]
    scale = torch.tensor([new_w / width, new_h / height] * 2, dtype=boxes.dtype, device=boxes.device)
    shift = torch.tensor([left, top] * 2, dtype=boxes.dtype, device=boxes.device)
    return canvas, _with_boxes(target, boxes * scale + shift)
