"""timm's ImageNet training and evaluation transforms on torchvision building blocks, and Mixup/CutMix.

They reproduce the recipe of the paper (timm 0.5.4 ``create_transform`` and ``Mixup`` as the official
``train.py`` calls them); :func:`train_transform` and :func:`parse_rand_augment` say where they differ.
All randomness uses torch's global RNG, so a checkpoint's saved RNG state makes a resumed run exact.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF
from torch import Tensor
from torchvision.transforms import InterpolationMode

from shared.errors import UserError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

_RANDOM_INTERPOLATION = (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)  # timm's "random"
_MAX_LEVEL = 10  # timm's RandAugment magnitude scale: 0..10
_BINS_PER_LEVEL = 10  # torchvision magnitude bins per level: magnitude resolution 0.1


def check_in_chans(in_chans: int) -> None:
    if in_chans not in (1, 3):
        raise UserError(f"in_chans must be 1 (grayscale) or 3 (RGB), got {in_chans}")


def _channel_stats(
    mean: Sequence[float], std: Sequence[float], in_chans: int
) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Mean and std with one value per channel; a 3-value pair is averaged for ``in_chans=1``."""
    if len(mean) != len(std):
        raise UserError(f"mean {tuple(mean)} and std {tuple(std)} need the same number of values")
    if len(mean) == in_chans:
        return tuple(mean), tuple(std)
    if len(mean) == 1:
        return tuple(mean) * in_chans, tuple(std) * in_chans
    if in_chans == 1:
        return (sum(mean) / len(mean),), (sum(std) / len(std),)
    raise UserError(f"mean/std have {len(mean)} values but in_chans is {in_chans}: give 1 or {in_chans} values")


def _interpolations(name: str, *, allow_random: bool) -> tuple[InterpolationMode, ...]:
    if name == "random" and allow_random:
        return _RANDOM_INTERPOLATION
    try:
        return (InterpolationMode(name),)
    except ValueError:
        choices = [mode.value for mode in InterpolationMode] + (["random"] if allow_random else [])
        raise UserError(f"unknown interpolation {name!r}: choose from {', '.join(choices)}") from None


def _choice(options: Sequence):
    """One of ``options``, uniformly, from torch's RNG (none drawn for a single option)."""
    return options[0] if len(options) == 1 else options[int(torch.randint(len(options), ()))]


def _check_probability(value: float, name: str) -> None:
    if not 0.0 <= value <= 1.0:
        raise UserError(f"{name} must be a probability in [0, 1], got {value}")


class _RandomResizedCrop(T.RandomResizedCrop):
    """RandomResizedCrop whose interpolation is drawn per image among ``interpolations`` (timm's "random")."""

    def __init__(self, size: int, scale, ratio, interpolations: tuple[InterpolationMode, ...]) -> None:
        super().__init__(size, scale=scale, ratio=ratio, interpolation=interpolations[0])
        self.interpolations = interpolations

    def forward(self, img):
        top, left, height, width = self.get_params(img, self.scale, self.ratio)
        interpolation = _choice(self.interpolations)
        return TF.resized_crop(img, top, left, height, width, self.size, interpolation, antialias=self.antialias)

    def __repr__(self) -> str:
        modes = "|".join(mode.value for mode in self.interpolations)
        return f"RandomResizedCrop(size={self.size}, scale={self.scale}, ratio={self.ratio}, interpolation={modes})"


@dataclass(frozen=True)
class RandAugmentSpec:
    """A parsed timm RandAugment string (timm's defaults for the sections left out)."""

    num_ops: int = 2
    magnitude: float = 10.0
    magnitude_std: float = 0.0
    increasing: bool = False


def parse_rand_augment(spec: str) -> RandAugmentSpec:
    """Parse timm's ``rand-m{M}-mstd{S}-inc{0|1}[-n{N}]`` (sections after ``rand`` in any order, each optional).

    M is the magnitude in [0, 10] (default 10), S the std of its per-op noise (default 0), N the ops per
    image (default 2), inc whether the ops grow in severity with M (default 0). timm's other sections
    (``w``, ``mmax``, ``p``) and policies (``original``, ``v0``, ``augmix``) are not supported.
    """
    sections = spec.split("-")
    hint = "use timm's RandAugment form rand-m{M}-mstd{S}-inc{0|1}[-n{N}], e.g. rand-m9-mstd0.5-inc1"
    if sections[0] != "rand":
        raise UserError(f"unsupported auto-augment {spec!r}: {hint}")
    values: dict[str, float] = {}
    for section in sections[1:]:
        match = re.fullmatch(r"(mstd|m|n|inc)(\d+(?:\.\d+)?)", section)
        if match is None or match[1] in values:
            raise UserError(f"bad section {section!r} in auto-augment {spec!r}: {hint}")
        values[match[1]] = float(match[2])
    num_ops, increasing = values.get("n", 2.0), values.get("inc", 0.0)
    if not num_ops.is_integer() or increasing not in (0, 1) or values.get("m", 0.0) > _MAX_LEVEL:
        raise UserError(f"auto-augment {spec!r} out of range (n integer, m in [0, {_MAX_LEVEL}], inc 0 or 1): {hint}")
    return RandAugmentSpec(int(num_ops), values.get("m", float(_MAX_LEVEL)), values.get("mstd", 0.0), increasing == 1)


class NoisyRandAugment(torch.nn.Module):
    """torchvision's RandAugment with timm's per-op magnitude noise and per-op probability.

    Each of ``num_ops`` ops is chosen uniformly (with replacement) among torchvision's 14 RandAugment ops and
    applied with probability ``op_prob``; its magnitude is drawn from N(magnitude, magnitude_std), clipped to
    [0, 10], at a resolution of 0.1. Geometric ops fill with ``fill`` and interpolate with one of
    ``interpolations`` drawn per op.
    """

    def __init__(
        self,
        num_ops: int = 2,
        magnitude: float = 9.0,
        magnitude_std: float = 0.0,
        op_prob: float = 0.5,
        interpolations: tuple[InterpolationMode, ...] = _RANDOM_INTERPOLATION,
        fill: list[int] | None = None,
    ) -> None:
        super().__init__()
        self.num_ops = num_ops
        self.magnitude = magnitude
        self.magnitude_std = magnitude_std
        self.op_prob = op_prob
        self.interpolations = interpolations
        self.fill = fill

    def forward(self, img):
        for _ in range(self.num_ops):
            if self.op_prob < 1.0 and float(torch.rand(())) > self.op_prob:
                continue
            magnitude = self.magnitude
            if self.magnitude_std > 0:
                magnitude = float(torch.normal(magnitude, self.magnitude_std, ()))
            magnitude = min(float(_MAX_LEVEL), max(0.0, magnitude))
            op = T.RandAugment(
                num_ops=1,
                magnitude=round(magnitude * _BINS_PER_LEVEL),
                num_magnitude_bins=_MAX_LEVEL * _BINS_PER_LEVEL + 1,
                interpolation=_choice(self.interpolations),
                fill=self.fill,
            )
            img = op(img)
        return img

    def extra_repr(self) -> str:
        modes = "|".join(mode.value for mode in self.interpolations)
        return (
            f"num_ops={self.num_ops}, magnitude={self.magnitude}, magnitude_std={self.magnitude_std}, "
            f"op_prob={self.op_prob}, interpolation={modes}, fill={self.fill}"
        )


def train_transform(
    img_size: int,
    *,
    auto_augment: str | None = "rand-m9-mstd0.5-inc1",
    hflip: float = 0.5,
    scale: tuple[float, float] = (0.08, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
    interpolation: str = "random",
    re_prob: float = 0.25,
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    in_chans: int = 3,
) -> T.Compose:
    """timm's ImageNet training pipeline on a PIL image: crop, flip, RandAugment, tensor, normalize, erase.

    RandomResizedCrop (``interpolation="random"`` draws bilinear or bicubic per image), RandomHorizontalFlip
    (``hflip``), RandAugment from ``auto_augment`` (None or "" for none), ToTensor, Normalize, RandomErasing
    (``re_prob``, one box, per-pixel N(0, 1) values: timm's pixel mode). ``in_chans=1`` converts to grayscale
    first (a 3-value mean/std is then averaged).

    The RandAugment string (see :func:`parse_rand_augment`) maps onto :class:`NoisyRandAugment`: N ops per
    image, each applied with probability 0.5 (as timm) at a magnitude drawn from N(M, S) clipped to [0, 10];
    magnitude 10 is each op's maximum (shear 0.3, translate 150/331 of the size (timm 0.45), rotate 30
    degrees, brightness/color/contrast/sharpness factor 1 +- 0.9, solarize threshold 0); geometric ops fill
    with the mean pixel and use the crop's interpolation, as timm. Differences from timm 0.5.4: torchvision's
    op set has Identity and lacks Invert and SolarizeAdd (14 ops, timm 15); Posterize keeps 8 down to 4 bits
    as M grows (timm's PosterizeIncreasing 4 down to 0); torchvision's ops are timm's "increasing" variants,
    so inc0 gives the same ops as inc1 (so does timm 0.5.4, which parses inc with ``bool`` on the string).
    Without RandAugment timm would add ColorJitter(0.4); this pipeline does not.
    """
    check_in_chans(in_chans)
    _check_probability(hflip, "hflip")
    _check_probability(re_prob, "re_prob")
    mean, std = _channel_stats(mean, std, in_chans)
    interpolations = _interpolations(interpolation, allow_random=True)
    steps: list = [T.Grayscale(1)] if in_chans == 1 else []
    steps.append(_RandomResizedCrop(img_size, scale, ratio, interpolations))
    if hflip > 0:
        steps.append(T.RandomHorizontalFlip(hflip))
    if auto_augment:
        spec = parse_rand_augment(auto_augment)
        fill = [min(255, round(255 * m)) for m in mean]
        steps.append(
            NoisyRandAugment(
                spec.num_ops, spec.magnitude, spec.magnitude_std, op_prob=0.5, interpolations=interpolations, fill=fill
            )
        )
    steps += [T.ToTensor(), T.Normalize(mean, std)]
    if re_prob > 0:
        steps.append(T.RandomErasing(p=re_prob, value="random"))
    return T.Compose(steps)


def eval_transform(
    img_size: int,
    *,
    crop_pct: float = 0.9,
    interpolation: str = "bicubic",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    in_chans: int = 3,
) -> T.Compose:
    """timm's evaluation pipeline: resize the short side to ``floor(img_size / crop_pct)``, center-crop, normalize."""
    check_in_chans(in_chans)
    if not 0.0 < crop_pct <= 1.0:
        raise UserError(f"crop_pct must be in (0, 1], got {crop_pct}")
    mean, std = _channel_stats(mean, std, in_chans)
    (mode,) = _interpolations(interpolation, allow_random=False)
    steps: list = [T.Grayscale(1)] if in_chans == 1 else []
    steps += [
        T.Resize(math.floor(img_size / crop_pct), interpolation=mode),
        T.CenterCrop(img_size),
        T.ToTensor(),
        T.Normalize(mean, std),
    ]
    return T.Compose(steps)


def smooth_one_hot(y: Tensor, num_classes: int, smoothing: float = 0.0) -> Tensor:
    """One-hot targets with timm's label smoothing: off value ``smoothing / num_classes``, on value
    ``1 - smoothing + off``."""
    off = smoothing / num_classes
    targets = torch.full((y.shape[0], num_classes), off, dtype=torch.float32, device=y.device)
    return targets.scatter_(1, y.long().view(-1, 1), 1.0 - smoothing + off)


class MixupCutmix:
    """timm's Mixup/CutMix in batch mode, with label smoothing.

    With probability ``prob`` a batch is mixed with its reverse (``x.flip(0)``): by CutMix with probability
    ``switch_prob`` when both alphas are positive, else by the one whose alpha is positive. The weight
    ``lam ~ Beta(alpha, alpha)``; CutMix pastes one box of area about ``1 - lam`` (timm's ``rand_bbox``)
    and sets ``lam`` to the exact share of the image it left. Targets are
    ``lam * smooth_one_hot(y) + (1 - lam) * smooth_one_hot(y.flip(0))``; with both alphas 0 they are only
    smoothed. Draws from torch's global RNG.
    """

    def __init__(
        self,
        num_classes: int,
        mixup_alpha: float = 0.8,
        cutmix_alpha: float = 1.0,
        prob: float = 1.0,
        switch_prob: float = 0.5,
        label_smoothing: float = 0.1,
    ) -> None:
        if num_classes < 1:
            raise UserError(f"num_classes must be at least 1, got {num_classes}")
        if mixup_alpha < 0 or cutmix_alpha < 0:
            raise UserError(f"mixup and cutmix alphas must be >= 0, got {mixup_alpha} and {cutmix_alpha}")
        _check_probability(prob, "mixup prob")
        _check_probability(switch_prob, "mixup switch prob")
        if not 0.0 <= label_smoothing < 1.0:
            raise UserError(f"label smoothing must be in [0, 1), got {label_smoothing}")
        self.num_classes = num_classes
        self.mixup_alpha = mixup_alpha
        self.cutmix_alpha = cutmix_alpha
        self.prob = prob
        self.switch_prob = switch_prob
        self.label_smoothing = label_smoothing

    def _draw(self) -> tuple[float, bool]:
        """The batch's ``lam`` and whether it is cut rather than blended (timm's draw order)."""
        if (self.mixup_alpha == 0 and self.cutmix_alpha == 0) or float(torch.rand(())) >= self.prob:
            return 1.0, False
        if self.mixup_alpha > 0 and self.cutmix_alpha > 0:
            use_cutmix = float(torch.rand(())) < self.switch_prob
        else:
            use_cutmix = self.cutmix_alpha > 0
        alpha = self.cutmix_alpha if use_cutmix else self.mixup_alpha
        return float(torch.distributions.Beta(alpha, alpha).sample()), use_cutmix

    def __call__(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """Mixed images (B, C, H, W) and soft targets (B, num_classes); ``x`` is left unchanged."""
        if x.ndim != 4 or y.shape != (x.shape[0],):
            raise ValueError(f"expected x (B, C, H, W) and y (B,), got {tuple(x.shape)} and {tuple(y.shape)}")
        lam, use_cutmix = self._draw()
        if lam < 1.0 and use_cutmix:
            height, width = x.shape[-2:]
            cut_h, cut_w = int(height * math.sqrt(1.0 - lam)), int(width * math.sqrt(1.0 - lam))
            cy, cx = int(torch.randint(height, ())), int(torch.randint(width, ()))
            top, bottom = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, height)
            left, right = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, width)
            x_mixed = x.clone()
            x_mixed[..., top:bottom, left:right] = x.flip(0)[..., top:bottom, left:right]
            lam = 1.0 - (bottom - top) * (right - left) / (height * width)
        elif lam < 1.0:
            x_mixed = x * lam + x.flip(0) * (1.0 - lam)
        else:
            x_mixed = x
        targets = smooth_one_hot(y, self.num_classes, self.label_smoothing)
        return x_mixed, targets * lam + targets.flip(0) * (1.0 - lam)
