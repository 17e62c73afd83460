"""Letterboxing to the network's square input and back, and binarisation of the predicted probabilities.

``letterbox`` is the official ``ResizeAndPad(S, S)`` transform on tensors: scale by min(S/h, S/w) keeping the
aspect ratio (images bicubic, masks nearest), then zero-pad to S×S with the content centred.
``unletterbox`` inverts it for a prediction: crop the content region and resize it bilinearly to H×W, which
is the TBVS evaluation's "resize the S×S map by s = max(H/S, W/S), then centre-crop H×W" up to rounding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LetterboxParams:
    """Geometry of one letterbox: original (height, width), square ``size``, resized content and its offset."""

    height: int
    width: int
    size: int
    new_height: int
    new_width: int
    top: int
    left: int

    @classmethod
    def compute(cls, height: int, width: int, size: int) -> LetterboxParams:
        """scale = min(size/height, size/width); the padding is split evenly, the odd pixel at the bottom/right."""
        scale = min(size / height, size / width)
        new_h = min(size, max(1, round(height * scale)))
        new_w = min(size, max(1, round(width * scale)))
        return cls(height, width, size, new_h, new_w, (size - new_h) // 2, (size - new_w) // 2)


def _resize(x: torch.Tensor, hw: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize (N, C, H, W) ``x`` keeping its dtype (integer images are rounded and clamped)."""
    if tuple(x.shape[-2:]) == hw:
        return x
    y = x.float() if not x.is_floating_point() else x
    if mode == "image":
        y = F.interpolate(y, size=hw, mode="bicubic", align_corners=False, antialias=True)
    else:
        y = F.interpolate(y, size=hw, mode="nearest-exact")
    if x.dtype == torch.bool:
        return y > 0.5
    if not x.is_floating_point():
        info = torch.iinfo(x.dtype)
        y = y.round().clamp(info.min, info.max)
    return y.to(x.dtype)


def letterbox(x: torch.Tensor, size: int, *, mode: str = "image") -> tuple[torch.Tensor, LetterboxParams]:
    """Resize (C, H, W) or (N, C, H, W) ``x`` into a zero-padded ``size``×``size`` square (``ResizeAndPad``).

    ``mode="image"`` resizes bicubically (antialiased, like PIL's BICUBIC), ``mode="mask"`` with nearest
    neighbour so label values are kept. Returns the letterboxed tensor (same rank and dtype) and the
    :class:`LetterboxParams` that :func:`unletterbox` needs.
    """
    if mode not in ("image", "mask"):
        raise ValueError(f"mode must be 'image' or 'mask', not {mode!r}")
    if x.dim() not in (3, 4):
        raise ValueError(f"expected (C, H, W) or (N, C, H, W), got shape {tuple(x.shape)}")
    batched = x.dim() == 4
    xb = x if batched else x[None]
    params = LetterboxParams.compute(xb.shape[-2], xb.shape[-1], size)
    content = _resize(xb, (params.new_height, params.new_width), mode)
    out = xb.new_zeros((*xb.shape[:2], size, size))
    out[..., params.top : params.top + params.new_height, params.left : params.left + params.new_width] = content
    return (out if batched else out[0]), params


def unletterbox(
    prob: torch.Tensor,
    params: LetterboxParams | tuple[int, int] | Sequence[LetterboxParams | tuple[int, int]],
    *,
    method: str = "crop",
) -> torch.Tensor | list[torch.Tensor]:
    """Map (N, C, S, S) predictions back to the original frame.

    ``params`` is a :class:`LetterboxParams` or an original ``(height, width)``, shared by the batch (returns
    an (N, C, H, W) tensor), or a sequence of them, one per sample (returns a list of (C, H_i, W_i) tensors).
    ``method="crop"``: crop the letterboxed content and resize it bilinearly to H×W (the exact inverse).
    ``method="official"``: ``resize_and_crop`` of the release's ``a2d_test.py``, bilinear resize of the whole
    S×S map by s = max(H/S, W/S) to round(S·s), then a centre crop of H×W (off by up to a pixel).
    """
    if method not in ("crop", "official"):
        raise ValueError(f"method must be 'crop' or 'official', not {method!r}")
    if prob.dim() != 4 or prob.shape[-1] != prob.shape[-2]:
        raise ValueError(f"expected square (N, C, S, S) predictions, got shape {tuple(prob.shape)}")
    size = prob.shape[-1]

    def as_params(p: LetterboxParams | tuple[int, int]) -> LetterboxParams:
        if isinstance(p, LetterboxParams):
            if p.size != size:
                raise ValueError(f"letterbox size {p.size} does not match the {size}×{size} prediction")
            return p
        return LetterboxParams.compute(int(p[0]), int(p[1]), size)

    def crop_resize(x: torch.Tensor, p: LetterboxParams) -> torch.Tensor:
        if method == "official":
            side = round(size * max(p.height / size, p.width / size))
            full = F.interpolate(x.float(), size=(side, side), mode="bilinear", align_corners=False)
            top, left = (side - p.height) // 2, (side - p.width) // 2
            return full[..., top : top + p.height, left : left + p.width]
        crop = x[..., p.top : p.top + p.new_height, p.left : p.left + p.new_width]
        if crop.shape[-2:] == (p.height, p.width):
            return crop
        return F.interpolate(crop.float(), size=(p.height, p.width), mode="bilinear", align_corners=False)

    single = isinstance(params, LetterboxParams) or (len(params) == 2 and all(isinstance(v, int) for v in params))
    if single:
        return crop_resize(prob, as_params(params))
    if len(params) != prob.shape[0]:
        raise ValueError(f"{prob.shape[0]} predictions but {len(params)} letterbox parameters")
    return [crop_resize(prob[i : i + 1], as_params(p))[0] for i, p in enumerate(params)]


def binarize(prob: torch.Tensor, mode: str = "relative", threshold: float = 0.5) -> torch.Tensor:
    """Binary masks from probabilities of shape (N, ...): one sample per leading index.

    ``relative`` (the TBVS evaluation): prob > threshold · (per-sample max of prob); ``absolute``:
    prob > threshold.
    """
    if mode == "absolute":
        return prob > threshold
    if mode != "relative":
        raise ValueError(f"binarize mode must be 'relative' or 'absolute', not {mode!r}")
    peak = prob.reshape(prob.shape[0], -1).amax(1) if prob.numel() else prob.new_zeros(prob.shape[0])
    return prob > threshold * peak.reshape(-1, *([1] * (prob.dim() - 1)))
