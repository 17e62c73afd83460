"""Batched weak/strong augmentation of image tensors on their own device (LC-Booster's and DivideMix's views).

Every function takes a (B, C, H, W) batch (uint8 unless said otherwise) and draws per-sample randomness from
torch's RNG on the batch's device, or from ``generator``, so seeded runs are reproducible. Nothing loops over
samples and nothing waits on the device: RandAugmentMC and AutoAugment look up each sample's op and magnitude
as a row of parameters and apply every op of a step to the whole batch at once (see :func:`_apply_ops`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import torch
import torch.nn.functional as F
from torchvision.transforms.v2 import functional as TF

from shared.errors import UserError

#: The ops of RandAugmentMC and AutoAugment.
OPS = (
    "Identity", "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Invert", "Posterize",
    "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
)  # fmt: skip
# The kernel that computes each op in :func:`_apply_ops` (0: threshold and bit mask, identity at the defaults).
_POINTWISE, _BRIGHTNESS, _CONTRAST, _COLOR, _SHARPNESS, _AUTOCONTRAST, _EQUALIZE, _AFFINE = range(8)
_KERNEL = {"Identity": _POINTWISE, "Invert": _POINTWISE, "Posterize": _POINTWISE, "Solarize": _POINTWISE}
_KERNEL |= {"Brightness": _BRIGHTNESS, "Contrast": _CONTRAST, "Color": _COLOR, "Sharpness": _SHARPNESS}
_KERNEL |= {"AutoContrast": _AUTOCONTRAST, "Equalize": _EQUALIZE}
_KERNEL |= dict.fromkeys(("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY"), _AFFINE)

#: FixMatch's ``fixmatch_augment_pool`` (the RandAugmentMC of LC-Booster's ``randaugment.py``), in its order.
RAND_AUGMENT_POOL = (
    "AutoContrast", "Brightness", "Color", "Contrast", "Equalize", "Identity", "Posterize",
    "Rotate", "Sharpness", "ShearX", "ShearY", "Solarize", "TranslateX", "TranslateY",
)  # fmt: skip
_RAND_AUGMENT_SIGNED = ("Rotate", "ShearX", "ShearY", "TranslateX", "TranslateY")

#: AutoAugment's CIFAR-10 policy (Cubuk et al. 2019; torchvision ``AutoAugmentPolicy.CIFAR10``, LC-Booster
#: ``CIFAR10Policy``): 25 sub-policies of two (op, probability, magnitude bin 0..9) steps.
AUTOAUGMENT_CIFAR10 = (
    (("Invert", 0.1, 7), ("Contrast", 0.2, 6)),
    (("Rotate", 0.7, 2), ("TranslateX", 0.3, 9)),
    (("Sharpness", 0.8, 1), ("Sharpness", 0.9, 3)),
    (("ShearY", 0.5, 8), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.5, 8), ("Equalize", 0.9, 2)),
    (("ShearY", 0.2, 7), ("Posterize", 0.3, 7)),
    (("Color", 0.4, 3), ("Brightness", 0.6, 7)),
    (("Sharpness", 0.3, 9), ("Brightness", 0.7, 9)),
    (("Equalize", 0.6, 5), ("Equalize", 0.5, 1)),
    (("Contrast", 0.6, 7), ("Sharpness", 0.6, 5)),
    (("Color", 0.7, 7), ("TranslateX", 0.5, 8)),
    (("Equalize", 0.3, 7), ("AutoContrast", 0.4, 8)),
    (("TranslateY", 0.4, 3), ("Sharpness", 0.2, 6)),
    (("Brightness", 0.9, 6), ("Color", 0.2, 8)),
    (("Solarize", 0.5, 2), ("Invert", 0.0, 3)),
    (("Equalize", 0.2, 0), ("AutoContrast", 0.6, 0)),
    (("Equalize", 0.2, 8), ("Equalize", 0.6, 4)),
    (("Color", 0.9, 9), ("Equalize", 0.6, 6)),
    (("AutoContrast", 0.8, 4), ("Solarize", 0.2, 8)),
    (("Brightness", 0.1, 3), ("Color", 0.7, 0)),
    (("Solarize", 0.4, 5), ("AutoContrast", 0.9, 3)),
    (("TranslateY", 0.9, 9), ("TranslateY", 0.7, 9)),
    (("AutoContrast", 0.9, 2), ("Solarize", 0.8, 3)),
    (("Equalize", 0.8, 8), ("Invert", 0.1, 3)),
    (("TranslateY", 0.7, 9), ("AutoContrast", 0.9, 1)),
)
_ENHANCE = ("Brightness", "Color", "Contrast", "Sharpness")

STRONG_AUGS = ("rand", "auto", "digits", "none")
PAD_MODES = ("reflect", "constant")


@lru_cache
def _const(values: tuple[float, ...], device: torch.device) -> torch.Tensor:
    """A small float32 constant, made once per device: a fresh host→device copy would wait for the device."""
    return torch.tensor(values, dtype=torch.float32, device=device)


def normalize(x: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """(x/255 − mean)/std for uint8 images, (x − mean)/std for float images in [0, 1]; float32 out."""
    if len(mean) != x.shape[1] or len(std) != x.shape[1]:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} channels, the images {x.shape[1]}")
    x = x.float() if x.is_floating_point() else x.float().div_(255)
    return (x - _const(tuple(mean), x.device).view(1, -1, 1, 1)) / _const(tuple(std), x.device).view(1, -1, 1, 1)


def random_crop(
    x: torch.Tensor, padding: int, mode: str = "reflect", *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """torchvision ``RandomCrop(H, padding, padding_mode=mode)`` per sample: an H×W window of the padded image.

    ``mode`` is ``"reflect"`` (LC-Booster) or ``"constant"`` (zeros, DivideMix); offsets are uniform in 0..2·padding.
    """
    if mode not in PAD_MODES:
        raise ValueError(f"pad mode must be one of {PAD_MODES}, got {mode!r}")
    if padding == 0:
        return x
    b, c, h, w = x.shape
    padded = F.pad(x, (padding,) * 4, mode=mode)
    offset = torch.randint(2 * padding + 1, (b, 2), generator=generator, device=x.device)
    rows = offset[:, :1] + torch.arange(h, device=x.device)
    cols = offset[:, 1:] + torch.arange(w, device=x.device)
    padded = padded.gather(2, rows.view(b, 1, h, 1).expand(b, c, h, padded.shape[-1]))
    return padded.gather(3, cols.view(b, 1, 1, w).expand(b, c, h, w))


def random_flip(x: torch.Tensor, p: float = 0.5, *, generator: torch.Generator | None = None) -> torch.Tensor:
    """Horizontal flip of each sample with probability ``p``."""
    flip = torch.rand(x.shape[0], generator=generator, device=x.device) < p
    return torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)


def cutout(
    x: torch.Tensor, size: int, fill: float | None = None, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """FixMatch's ``CutoutAbs(img, size)`` per sample: a grey square around a uniform random centre.

    As there, the corner is (⌊max(0, c − size/2)⌋) per axis and PIL's rectangle includes both corners, so the
    patch is size+1 pixels wide, cut off only at the right and bottom borders. ``fill`` defaults to FixMatch's
    grey: 127 for uint8, 0.5 for float images.
    """
    b, _, h, w = x.shape
    if fill is None:
        fill = 0.5 if x.is_floating_point() else 127
    centre = torch.rand(b, 2, generator=generator, device=x.device) * _const((w, h), x.device)
    start = (centre - size / 2).clamp(min=0).floor()
    cols, rows = torch.arange(w, device=x.device), torch.arange(h, device=x.device)
    in_cols = (cols >= start[:, :1]) & (cols <= start[:, :1] + size)
    in_rows = (rows >= start[:, 1:]) & (rows <= start[:, 1:] + size)
    return x.masked_fill(in_rows[:, None, :, None] & in_cols[:, None, None, :], fill)


def apply_op(x: torch.Tensor, name: str, value: float = 0.0, fill: float = 0) -> torch.Tensor:
    """Op ``name`` of :data:`OPS` on every image of a uint8 batch, at its final ``value`` (enhance factor,
    degrees, shear tangent, pixels, bits or threshold), as the torchvision.transforms.v2 function of that name
    (``adjust_brightness``, ``adjust_saturation`` for Color, ``rotate``, ``affine`` for shears and translations,
    ...). Geometric ops sample the nearest pixel (PIL's default) and put ``fill`` outside the image.
    """
    _require_uint8(x)
    row = torch.tensor(_op_row(name, value, *x.shape[-2:]), device=x.device)
    return _apply_ops(x, row.expand(x.shape[0], -1), fill)


def _inverse_affine(angle: float, translate: Sequence[float], shear: Sequence[float], centre: Sequence[float]):
    """torchvision's inverse affine matrix at scale 1 (``_get_inverse_affine_matrix``), with the same arithmetic.

    Maps output to input pixel coordinates, both relative to the image centre; ``angle`` clockwise, degrees.
    """
    rot, sx, sy = math.radians(angle), math.radians(shear[0]), math.radians(shear[1])
    (cx, cy), (tx, ty) = centre, translate
    a = math.cos(rot - sy) / math.cos(sy)
    b = -math.cos(rot - sy) * math.tan(sx) / math.cos(sy) - math.sin(rot)
    c = math.sin(rot - sy) / math.cos(sy)
    d = -math.sin(rot - sy) * math.tan(sx) / math.cos(sy) + math.cos(rot)
    m = [d, -b, 0.0, -c, a, 0.0]
    m[2] += m[0] * (-cx - tx) + m[1] * (-cy - ty)
    m[5] += m[3] * (-cx - tx) + m[4] * (-cy - ty)
    m[2] += cx
    m[5] += cy
    return m


def _op_row(name: str, value: float, height: int, width: int) -> list[float]:
    """[kernel, enhance factor f, 1 − f, solarize threshold, posterize bit mask, inverse affine θ (6)].

    The defaults (f = 1, threshold 256, mask 255, θ = identity) leave an image unchanged; Invert is Solarize at 0.
    """
    if name not in OPS:
        raise ValueError(f"unknown op {name!r}: choose one of {', '.join(OPS)}")
    factor, threshold, keep = 1.0, 256.0, 255
    theta = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    if name in _ENHANCE:
        factor = value
    elif name == "Solarize":
        threshold = value
    elif name == "Invert":
        threshold = 0.0
    elif name == "Posterize":
        keep = ((1 << int(value)) - 1) << (8 - int(value))
    elif name == "Rotate":  # v2 rotate: counter-clockwise about the centre
        theta = _inverse_affine(-(value % 360), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    elif name in ("ShearX", "ShearY"):  # PIL's shear (1, v, 0, 0, 1, 0) = shear by atan(v) about the top-left corner
        angle = math.degrees(math.atan(value))
        shear = (angle, 0.0) if name == "ShearX" else (0.0, angle)
        theta = _inverse_affine(0.0, (0.0, 0.0), shear, (-0.5 * width, -0.5 * height))
    elif name in ("TranslateX", "TranslateY"):
        theta = _inverse_affine(0.0, (value, 0.0) if name == "TranslateX" else (0.0, value), (0.0, 0.0), (0.0, 0.0))
    return [float(_KERNEL[name]), factor, 1.0 - factor, threshold, float(keep), *theta]


def _apply_ops(x: torch.Tensor, params: torch.Tensor, fill: float) -> torch.Tensor:
    """Apply to each image of a uint8 batch the op of its row of ``params`` (:func:`_op_row`), all at once.

    Each op's result is computed for the whole batch by torchvision.transforms.v2's formulas with per-sample
    parameters and selected per sample: a fixed number of kernels whatever the mix of ops, and no host sync.
    """
    b, c, h, w = x.shape
    kernel, factor, rest = (params[:, i].view(b, 1, 1, 1) for i in range(3))
    xf = x.float()
    # Solarize / Invert / Posterize: identities at the default threshold and mask
    out = torch.where(x >= params[:, 3].view(b, 1, 1, 1), 255 - x, x) & params[:, 4].to(torch.uint8).view(b, 1, 1, 1)
    # Brightness, Color, Contrast: blend with black, the grey image, the mean grey level
    grey = TF.rgb_to_grayscale(x).float() if c == 3 else xf
    degenerate = torch.where(kernel == _CONTRAST, grey.mean(dim=(1, 2, 3), keepdim=True), 0.0)
    if c == 3:
        degenerate = torch.where(kernel == _COLOR, grey, degenerate)
    blended = (xf * factor + degenerate * rest).clamp_(0, 255).to(torch.uint8)
    last = _COLOR if c == 3 else _CONTRAST  # Color leaves grey images unchanged, as PIL
    out = torch.where((kernel >= _BRIGHTNESS) & (kernel <= last), blended, out)
    if h > 2 and w > 2:  # Sharpness: blend the interior with a 3×3 smoothing, as v2 adjust_sharpness
        smooth = _const((1, 1, 1, 1, 5, 1, 1, 1, 1), x.device).view(3, 3) / 13
        blurred = F.conv2d(xf, smooth.expand(c, 1, 3, 3), groups=c).round_()
        sharp = xf.clone()
        inner = sharp[..., 1:-1, 1:-1]
        inner.add_((blurred - inner) * rest)
        out = torch.where(kernel == _SHARPNESS, sharp.clamp_(0, 255).to(torch.uint8), out)
    out = torch.where(kernel == _AUTOCONTRAST, TF.autocontrast(x), out)
    out = torch.where(kernel == _EQUALIZE, TF.equalize(x), out)
    return torch.where(kernel == _AFFINE, _warp(xf, params[:, 5:].view(b, 2, 3), fill), out)


def _warp(xf: torch.Tensor, theta: torch.Tensor, fill: float) -> torch.Tensor:
    """Nearest-neighbour affine warp with one inverse matrix per image, ``fill`` outside (v2 ``affine``)."""
    b, c, h, w = xf.shape
    xs = torch.linspace((1.0 - w) * 0.5, (w - 1.0) * 0.5, w, device=xf.device)
    ys = torch.linspace((1.0 - h) * 0.5, (h - 1.0) * 0.5, h, device=xf.device)
    base = torch.stack([xs.expand(h, w), ys[:, None].expand(h, w), torch.ones(h, w, device=xf.device)], -1)
    scale = _const((0.5 * w, 0.5 * h), xf.device)
    grid = base.view(1, h * w, 3).expand(b, -1, -1).bmm(theta.transpose(1, 2) / scale).view(b, h, w, 2)
    inside = torch.ones(b, 1, h, w, device=xf.device)
    warped = F.grid_sample(torch.cat([xf, inside], 1), grid, mode="nearest", align_corners=False)
    return torch.where(warped[:, c:] < 0.5, fill, warped[:, :c]).round_().to(torch.uint8)


def fixmatch_magnitude(name: str, level: int, height: int, width: int) -> float:
    """FixMatch's value of RandAugmentMC op ``name`` at level v (``PARAMETER_MAX`` = 10), before the random sign.

    Enhance factors v·0.9/10 + 0.05; Posterize int(v·4/10) + 4 bits; Rotate int(v·30/10)°; shear v·0.3/10;
    Solarize threshold 256 − int(v·256/10); translation int(v·0.3/10 · side) pixels.
    """
    if name in _ENHANCE:
        return level * 0.9 / 10 + 0.05
    if name == "Posterize":
        return int(level * 4 / 10) + 4
    if name == "Rotate":
        return int(level * 30 / 10)
    if name in ("ShearX", "ShearY"):
        return level * 0.3 / 10
    if name == "Solarize":
        return 256 - int(level * 256 / 10)
    if name in ("TranslateX", "TranslateY"):
        return int(level * 0.3 / 10 * (width if name == "TranslateX" else height))
    return 0.0


def autoaugment_magnitude(name: str, level: int, sign: int, height: int, width: int) -> float:
    """Value of AutoAugment op ``name`` at bin ``level`` (0..9), as LC-Booster's ``CIFAR10Policy`` maps it."""
    t = level / 9
    if name in _ENHANCE:
        return 1 + sign * 0.9 * t
    if name in ("ShearX", "ShearY"):
        return sign * 0.3 * t
    if name in ("TranslateX", "TranslateY"):
        return sign * 150 / 331 * t * (width if name == "TranslateX" else height)
    if name == "Rotate":
        return sign * 30 * t
    if name == "Posterize":
        return round(8 - 4 * t)
    if name == "Solarize":
        return 256 - 256 * t
    return 0.0


@lru_cache
def _rand_augment_table(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Op rows: 0 = Identity, 1 + (op·10 + level)·2 + positive = op of the pool at that level and sign."""
    rows = [_op_row("Identity", 0.0, height, width)]
    for name in RAND_AUGMENT_POOL:
        sign = -1 if name in _RAND_AUGMENT_SIGNED else 1
        for level in range(10):
            value = fixmatch_magnitude(name, level, height, width)
            rows += [_op_row(name, sign * value, height, width), _op_row(name, value, height, width)]
    return torch.tensor(rows, device=device)


@lru_cache
def _auto_augment_table(height: int, width: int, device: torch.device) -> torch.Tensor:
    """Op rows: 0 = Identity, 1 + (policy·2 + step)·2 + positive = that step of the sub-policy with that sign."""
    rows = [_op_row("Identity", 0.0, height, width)]
    for policy in AUTOAUGMENT_CIFAR10:
        for name, _, level in policy:
            rows += [
                _op_row(name, autoaugment_magnitude(name, level, sign, height, width), height, width)
                for sign in (-1, 1)
            ]
    return torch.tensor(rows, device=device)


def _require_uint8(x: torch.Tensor) -> None:
    if x.dtype != torch.uint8 or x.ndim != 4:
        raise TypeError(f"expected a uint8 (B, C, H, W) batch, got {x.dtype} of shape {tuple(x.shape)}")


def rand_augment_mc(
    x: torch.Tensor,
    n: int = 2,
    m: int = 10,
    *,
    cutout_size: int | None = None,
    fill: float = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """FixMatch's ``RandAugmentMC(n, m)`` (LC-Booster's ``randaugment.py``) on a uint8 batch.

    Per sample and step: an op drawn with replacement from :data:`RAND_AUGMENT_POOL`, a level v uniform in
    1..m−1 (``np.random.randint(1, m)``), applied with probability 0.5, signed ops negated with probability 0.5.
    Then ``CutoutAbs`` of side ``cutout_size`` (default int(0.5·side): 16 px at 32×32, as FixMatch; 0 turns it off).
    ``fill`` = 0 is the black that LC-Booster's copy of FixMatch's PyTorch port leaves outside rotated, sheared
    and translated images (PIL's default; FixMatch's TensorFlow code fills grey 128).
    """
    _require_uint8(x)
    if not 2 <= m <= 10:
        raise ValueError(f"m must be in 2..10 (levels are drawn from 1..m-1), got {m}")
    b, _, h, w = x.shape
    table = _rand_augment_table(h, w, x.device)
    rand = {"generator": generator, "device": x.device}
    ops = torch.randint(len(RAND_AUGMENT_POOL), (b, n), **rand)
    levels = torch.randint(1, m, (b, n), **rand)
    active = torch.rand(b, n, **rand) < 0.5
    positive = torch.rand(b, n, **rand) < 0.5
    codes = torch.where(active, 1 + (ops * 10 + levels) * 2 + positive, 0)
    for step in range(n):
        x = _apply_ops(x, table[codes[:, step]], fill)
    size = int(0.5 * min(h, w)) if cutout_size is None else cutout_size
    return cutout(x, size, generator=generator) if size else x


def auto_augment_cifar(x: torch.Tensor, *, fill: float = 128, generator: torch.Generator | None = None) -> torch.Tensor:
    """AutoAugment with the CIFAR-10 policy on a uint8 batch, as LC-Booster's ``CIFAR10Policy``.

    Per sample: a uniform sub-policy of :data:`AUTOAUGMENT_CIFAR10`, each of its two steps applied with its
    probability, signed magnitudes negated with probability 0.5; geometric ops fill grey 128. Differs from the
    PIL original only in nearest (not bicubic) sampling for shears.
    """
    _require_uint8(x)
    b, _, h, w = x.shape
    table = _auto_augment_table(h, w, x.device)
    prob = _const(tuple(p for policy in AUTOAUGMENT_CIFAR10 for _, p, _ in policy), x.device).view(-1, 2)
    rand = {"generator": generator, "device": x.device}
    policy = torch.randint(len(AUTOAUGMENT_CIFAR10), (b,), **rand)
    active = torch.rand(b, 2, **rand) < prob[policy]
    positive = torch.rand(b, 2, **rand) < 0.5
    codes = torch.where(active, 1 + (policy[:, None] * 2 + torch.arange(2, device=x.device)) * 2 + positive, 0)
    for step in range(2):
        x = _apply_ops(x, table[codes[:, step]], fill)
    return x


def jitter(
    x: torch.Tensor, brightness: float = 0.4, contrast: float = 0.4, *, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Per-sample brightness then contrast factors uniform in [max(0, 1 − s), 1 + s] on float images in [0, 1].

    ColorJitter's ranges and formulas (contrast blends with the mean grey level), in a fixed order.
    """
    u = torch.rand(x.shape[0], 2, generator=generator, device=x.device, dtype=x.dtype)

    def factor(strength: float, draw: torch.Tensor) -> torch.Tensor:
        low = max(0.0, 1 - strength)
        return (low + (1 + strength - low) * draw).view(-1, 1, 1, 1)

    x = (x * factor(brightness, u[:, 0])).clamp(0, 1)
    grey = TF.rgb_to_grayscale(x) if x.shape[1] == 3 else x
    mean = grey.mean(dim=(1, 2, 3), keepdim=True)
    return (mean + factor(contrast, u[:, 1]) * (x - mean)).clamp(0, 1)


@dataclass(frozen=True)
class Views:
    """Weak, strong and test views of a uint8 batch as normalised float tensors.

    - weak: flip (when ``flip``) → random crop (``padding``, ``pad_mode``) → normalise. LC-Booster flips
      first, DivideMix crops first; both orders give the same distribution.
    - strong: the weak flip and crop, then ``strong_aug`` = ``"rand"`` RandAugmentMC(2, 10), ``"auto"``
      AutoAugment CIFAR-10, ``"digits"`` or ``"none"`` nothing; then Cutout of side ``cutout`` (when set);
      ``"digits"`` ends with brightness/contrast :func:`jitter`; then normalise.
    - test: normalise only.
    """

    mean: Sequence[float]
    std: Sequence[float]
    padding: int = 4
    flip: bool = True
    pad_mode: str = "reflect"
    strong_aug: str = "rand"
    cutout: int | None = 16

    def __post_init__(self) -> None:
        if self.strong_aug not in STRONG_AUGS:
            raise UserError(f"unknown strong augmentation {self.strong_aug!r}: choose one of {', '.join(STRONG_AUGS)}")
        if self.pad_mode not in PAD_MODES:
            raise UserError(f"unknown padding mode {self.pad_mode!r}: choose one of {', '.join(PAD_MODES)}")
        if len(self.mean) != len(self.std):
            raise UserError(f"mean has {len(self.mean)} channels but std {len(self.std)}: give one value per channel")

    @classmethod
    def for_cifar(
        cls, mean: Sequence[float], std: Sequence[float], strong: str = "rand", pad_mode: str = "reflect"
    ) -> Views:
        """CIFAR: flip, crop 32 with padding 4; Cutout 16 px with ``"rand"`` (FixMatch's RandAugmentMC)."""
        return cls(mean, std, 4, True, pad_mode, strong, 16 if strong == "rand" else None)

    @classmethod
    def for_digits(cls, mean: Sequence[float], std: Sequence[float], image_size: int) -> Views:
        """Digits: no flip; translate ±1 px and Cutout 2 px at 8×8, ±2 px and 8 px at 28×28; jitter."""
        return cls(mean, std, max(1, image_size // 14), False, "constant", "digits", max(2, image_size * 2 // 7))

    def _geometry(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        if self.flip:
            x = random_flip(x, generator=generator)
        return random_crop(x, self.padding, self.pad_mode, generator=generator)

    def weak(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        return normalize(self._geometry(x, generator), self.mean, self.std)

    def strong(self, x: torch.Tensor, *, generator: torch.Generator | None = None) -> torch.Tensor:
        x = self._geometry(x, generator)
        if self.strong_aug == "rand":
            x = rand_augment_mc(x, 2, 10, cutout_size=0, generator=generator)
        elif self.strong_aug == "auto":
            x = auto_augment_cifar(x, generator=generator)
        if self.cutout:
            x = cutout(x, self.cutout, generator=generator)
        if self.strong_aug == "digits":
            x = jitter(x.float().div_(255), generator=generator)
        return normalize(x, self.mean, self.std)

    def test(self, x: torch.Tensor) -> torch.Tensor:
        return normalize(x, self.mean, self.std)
