"""Backbones of the official KF configs, returning tuples of stage feature maps.

Every backbone's ``forward`` returns a tuple with one tensor per entry of its ``out_indices`` (the mmcls
convention) and exposes ``stage_channels`` (channels of every selectable index). Attribute names make
``state_dict`` keys equal those of the official checkpoints (``cls/mmcls/models/backbones/`` of
github.com/Adamdad/KnowledgeFactor), so released weights load by name. Layers keep PyTorch's default
initialisation, as the official KF students do. Pure PyTorch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence

import torch
from torch import nn

from shared.errors import UserError


def _check_indices(out_indices: Sequence[int], num: int) -> tuple[int, ...]:
    indices = tuple(int(i) for i in out_indices)
    if not indices or any(i not in range(num) for i in indices) or list(indices) != sorted(set(indices)):
        raise ValueError(f"out_indices must be increasing values in range({num}), got {tuple(out_indices)}")
    return indices


# ---------------------------------------------------------------------------------------------------------------
# Wide ResNet (CIFAR)
# ---------------------------------------------------------------------------------------------------------------
class WideBasicBlock(nn.Module):
    """Pre-activation block: BN → LeakyReLU → Conv3×3(stride) → BN → LeakyReLU → Conv3×3, plus shortcut."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, leaky: float = 0.1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(in_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.relu = nn.LeakyReLU(leaky, inplace=True)
        self.downsample = None
        if stride != 1 or in_channels != out_channels:  # projection of the raw (not pre-activated) input
            self.downsample = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv1(self.relu(self.bn1(x)))
        out = self.conv2(self.relu(self.bn2(out)))
        return out + (x if self.downsample is None else self.downsample(x))


class WideResNetCIFAR(nn.Module):
    """WRN-``depth``-``widen`` for 32×32 inputs (official ``WideResNet_CIFAR``).

    Stem Conv3×3 (16 channels, no BN), three stages of ``(depth - 4) / 6`` pre-activation blocks with widths
    ``16·widen·{1, 2, 4}`` and strides 1/2/2, and a final ``bn1`` + LeakyReLU on the last stage. WRN-28-2:
    1,466,768 parameters, 168 state_dict keys, outputs (32,32,32), (64,16,16), (128,8,8) at 32×32.

    Returned maps, by ``official_intermediate_activation``:

    * ``False`` (default): the function the teacher was trained with (``out_indices=(2,)``) is kept whatever
      is requested. Index 2 returns ``LeakyReLU(bn1(stage3))``; indices 0 and 1 return the raw stage outputs
      (the pre-activation residual stream), and what feeds the next stage is unchanged.
    * ``True``: the official forward, bit for bit. Each requested intermediate output is LeakyReLU-ed in place
      and this activated tensor feeds the next stage, so with ``out_indices=(0, 1, 2)`` the network computes
      a different function from the trained one. ``out_indices`` must then end with 2.
    """

    def __init__(
        self,
        depth: int = 28,
        widen: int = 2,
        out_indices: Sequence[int] = (2,),
        leaky: float = 0.1,
        official_intermediate_activation: bool = False,
        in_channels: int = 3,
    ) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n + 4, got {depth}")
        blocks = (depth - 4) // 6
        self.stage_channels = tuple(16 * widen * 2**i for i in range(3))
        self.out_indices = _check_indices(out_indices, 3)
        if official_intermediate_activation and self.out_indices[-1] != 2:
            raise ValueError("official_intermediate_activation applies bn1 to out_indices[-1], which must be 2")
        self.official_intermediate_activation = official_intermediate_activation
        self.conv1 = nn.Conv2d(in_channels, 16, 3, 1, 1, bias=False)
        channels = 16
        for i, (width, stride) in enumerate(zip(self.stage_channels, (1, 2, 2), strict=True)):
            layer = [
                WideBasicBlock(channels if j == 0 else width, width, stride if j == 0 else 1, leaky)
                for j in range(blocks)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            channels = width
        self.bn1 = nn.BatchNorm2d(channels)
        self.relu = nn.LeakyReLU(leaky, inplace=True)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i in range(3):
            x = getattr(self, f"layer{i + 1}")(x)
            if i not in self.out_indices:
                continue
            if i == 2:
                x = self.relu(self.bn1(x))
            elif self.official_intermediate_activation:
                x = self.relu(x)  # in place: the activated map also feeds the next stage (official quirk)
            outs.append(x)
        return tuple(outs)


# ---------------------------------------------------------------------------------------------------------------
# ResNet (ImageNet and CIFAR stems)
# ---------------------------------------------------------------------------------------------------------------
def _downsample(in_channels: int, out_channels: int, stride: int) -> nn.Sequential | None:
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))


class BasicBlock(nn.Module):
    """ResNet basic block (torchvision/mmcls names ``conv1, bn1, conv2, bn2, downsample``)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, width, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """ResNet bottleneck, stride on the 3×3 conv (torchvision/mmcls "pytorch" style)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int = 1) -> None:
        super().__init__()
        out_channels = width * self.expansion
        self.conv1 = nn.Conv2d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, out_channels, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


RESNET_ARCHS: dict[int, tuple[type[BasicBlock] | type[Bottleneck], tuple[int, ...]]] = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNet(nn.Module):
    """ImageNet ResNet body (7×7 s2 stem + max-pool, no ``fc``), keys identical to torchvision's.

    Index ``i`` in ``out_indices`` returns ``layer{i+1}``. R18: 11,176,512 parameters (120 keys), outputs
    64/128/256/512 channels at strides 4/8/16/32; R50: 23,508,032 (318 keys), 256/512/1024/2048 channels.
    """

    def __init__(self, depth: int = 18, out_indices: Sequence[int] = (3,), in_channels: int = 3) -> None:
        super().__init__()
        if depth not in RESNET_ARCHS:
            raise ValueError(f"ResNet depth must be one of {sorted(RESNET_ARCHS)}, got {depth}")
        block, blocks = RESNET_ARCHS[depth]
        self.stage_channels = tuple(64 * 2**i * block.expansion for i in range(4))
        self.out_indices = _check_indices(out_indices, 4)
        self._make_stem(in_channels)
        channels = 64
        for i, (num, stride) in enumerate(zip(blocks, (1, 2, 2, 2), strict=True)):
            layer = [
                block(channels if j == 0 else self.stage_channels[i], 64 * 2**i, stride if j == 0 else 1)
                for j in range(num)
            ]
            self.add_module(f"layer{i + 1}", nn.Sequential(*layer))
            channels = self.stage_channels[i]

    def _make_stem(self, in_channels: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        outs = []
        for i in range(4):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


class ResNetCIFAR(ResNet):
    """ResNet with a 3×3 stride-1 stem and no max-pool (mmcls ``ResNet_CIFAR``), for 32×32 inputs.

    ResNet18_CIFAR: 11,168,832 parameters, 120 keys; indices 0..3 give (64,32,32), (128,16,16), (256,8,8),
    (512,4,4) at 32×32.
    """

    def _make_stem(self, in_channels: int) -> None:
        self.conv1 = nn.Conv2d(in_channels, 64, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.Identity()


# ---------------------------------------------------------------------------------------------------------------
# MobileNetV2 (mmcls layout)
# ---------------------------------------------------------------------------------------------------------------
def make_divisible(value: float, divisor: int = 8, min_ratio: float = 0.9) -> int:
    """mmcls ``make_divisible``: nearest multiple of ``divisor`` (≥ divisor), never below ``min_ratio·value``."""
    new = max(divisor, int(value + divisor / 2) // divisor * divisor)
    return new + divisor if new < min_ratio * value else new


class ConvBNAct(nn.Sequential):
    """Bias-free conv → BN → optional ReLU6 (mmcv ``ConvModule`` keys ``conv.*``, ``bn.*``)."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: int = 1, stride: int = 1, groups: int = 1, act: bool = True
    ) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, groups=groups, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        if act:
            self.activate = nn.ReLU6(inplace=True)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: [1×1 expand] → 3×3 depthwise(stride) → 1×1 linear, residual when shapes allow.

    With ``expand_ratio == 1`` the expansion is omitted, so ``conv`` holds 2 modules instead of 3.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int) -> None:
        super().__init__()
        self.use_res_connect = stride == 1 and in_channels == out_channels
        hidden = round(in_channels * expand_ratio)
        layers = [ConvBNAct(in_channels, hidden)] if expand_ratio != 1 else []
        layers += [ConvBNAct(hidden, hidden, 3, stride, groups=hidden), ConvBNAct(hidden, out_channels, act=False)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """MobileNetV2 with mmcls names: ``conv1``, ``layer1..layer7`` (inverted residuals), ``conv2`` (1×1).

    Index ``i`` in ``out_indices`` is ``layer{i+1}`` for i = 0..6 and ``conv2`` for i = 7. ``conv2`` has 1280
    channels when ``widen <= 1`` (else ``1280·widen``). ``cifar_stem=True`` is the official
    ``MobileNetV2_CIFAR``: stride-1 stem and stride-1 ``layer3`` (32×32 input → 4×4 at index 7).
    ×1.0: 2,223,872 parameters, 312 keys; ×0.5: 687,680.
    """

    # (expand ratio t, channels c, blocks n, stride s) of layer1..layer7
    arch_settings = (
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    )

    def __init__(
        self, widen: float = 1.0, out_indices: Sequence[int] = (7,), cifar_stem: bool = False, in_channels: int = 3
    ) -> None:
        super().__init__()
        self.out_indices = _check_indices(out_indices, 8)
        channels = make_divisible(32 * widen)
        self.conv1 = ConvBNAct(in_channels, channels, 3, 1 if cifar_stem else 2)
        stage_channels = []
        for i, (t, c, n, s) in enumerate(self.arch_settings):
            stride = 1 if cifar_stem and i == 2 else s
            out = make_divisible(c * widen)
            blocks = [InvertedResidual(channels if j == 0 else out, out, stride if j == 0 else 1, t) for j in range(n)]
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
            stage_channels.append(out)
            channels = out
        last = int(1280 * widen) if widen > 1.0 else 1280
        self.conv2 = ConvBNAct(channels, last)
        self.stage_channels = (*stage_channels, last)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        x = self.conv1(x)
        outs = []
        for i, name in enumerate([f"layer{k}" for k in range(1, 8)] + ["conv2"]):
            x = getattr(self, name)(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


# ---------------------------------------------------------------------------------------------------------------
# Disentanglement encoders (64×64)
# ---------------------------------------------------------------------------------------------------------------
class SimpleConv64(nn.Module):
    """Six Conv4×4 s2 (C→32→32→64→128→256→256, ReLU) → flatten → Linear(256 → latent), for 64×64 inputs.

    Keys ``main.{0,2,4,6,8,10,13}.*`` as in the official ``SimpleConv64`` (``disentangle.py``). Returns
    ``(latent_vector,)``: one (B, latent) "stage". 1,756,938 parameters with 1 input channel, 1,757,962 with 3.
    ``widths`` narrows the six convolutions (ours, for CPU-scale runs).
    """

    OUTPUTS = 1  # selectable outputs, for out_indices

    def __init__(
        self,
        in_channels: int = 1,
        latent: int = 10,
        widths: Sequence[int] = (32, 32, 64, 128, 256, 256),
        out_indices: Sequence[int] = (0,),
    ) -> None:
        super().__init__()
        if len(widths) != 6:
            raise ValueError(f"SimpleConv64 has six convolutions, got widths {tuple(widths)}")
        layers: list[nn.Module] = []
        for c_in, c_out in zip((in_channels, *widths[:-1]), widths, strict=True):
            layers += [nn.Conv2d(c_in, c_out, 4, 2, 1), nn.ReLU(inplace=True)]
        self.main = nn.Sequential(*layers, nn.Flatten(), nn.Linear(widths[-1], self._linear_out(latent)))
        self.latent = latent
        self.out_indices = _check_indices(out_indices, self.OUTPUTS)
        self.stage_channels: tuple[int, ...] = (latent,) * self.OUTPUTS

    @staticmethod
    def _linear_out(latent: int) -> int:
        return latent

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return (self.main(x),)


class SimpleGaussianConv64(SimpleConv64):
    """:class:`SimpleConv64` whose Linear gives ``2·latent`` values: μ and log σ² of q(z | x).

    Its outputs are ``(z, mu, logvar)`` (those of ``out_indices``, default all) with ``z = μ + σ·ε`` in training
    mode and ``z = μ`` in eval mode (the official code samples in both modes and returns ``((mu, logvar), z)``).
    1,759,508 parameters with 1 input channel.
    """

    OUTPUTS = 3

    def __init__(
        self,
        in_channels: int = 1,
        latent: int = 10,
        widths: Sequence[int] = (32, 32, 64, 128, 256, 256),
        out_indices: Sequence[int] = (0, 1, 2),
    ) -> None:
        super().__init__(in_channels, latent, widths, out_indices)

    @staticmethod
    def _linear_out(latent: int) -> int:
        return 2 * latent

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        mu, logvar = self.main(x).chunk(2, dim=1)
        z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
        return tuple(out for i, out in enumerate((z, mu, logvar)) if i in self.out_indices)


# ---------------------------------------------------------------------------------------------------------------
# Tiny CNN for CPU demos (ours, not from the paper)
# ---------------------------------------------------------------------------------------------------------------
class TinyCNN(nn.Module):
    """Three stages of Conv3×3-BN-ReLU-Conv3×3-BN-ReLU for 32×32 inputs; stages 2-3 start with stride 2.

    Ours, for the CPU demo; not an architecture of the paper. Default widths
    (32, 64, 128): 287,456 parameters, outputs (32,32,32), (64,16,16), (128,8,8) at 32×32.
    """

    def __init__(
        self, in_channels: int = 3, widths: Sequence[int] = (32, 64, 128), out_indices: Sequence[int] = (0, 1, 2)
    ) -> None:
        super().__init__()
        self.stage_channels = tuple(widths)
        self.out_indices = _check_indices(out_indices, len(widths))
        channels = in_channels
        for i, width in enumerate(widths):
            self.add_module(
                f"layer{i + 1}",
                nn.Sequential(
                    nn.Conv2d(channels, width, 3, 1 if i == 0 else 2, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(width, width, 3, 1, 1, bias=False),
                    nn.BatchNorm2d(width),
                    nn.ReLU(inplace=True),
                ),
            )
            channels = width

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for i in range(len(self.stage_channels)):
            x = getattr(self, f"layer{i + 1}")(x)
            if i in self.out_indices:
                outs.append(x)
        return tuple(outs)


# ---------------------------------------------------------------------------------------------------------------
# Registry
# ---------------------------------------------------------------------------------------------------------------
BACKBONES: dict[str, Callable[..., nn.Module]] = {
    "wrn28_2": functools.partial(WideResNetCIFAR, depth=28, widen=2),
    "resnet18_cifar": functools.partial(ResNetCIFAR, depth=18),
    "resnet18": functools.partial(ResNet, depth=18),
    "resnet50": functools.partial(ResNet, depth=50),
    "mobilenetv2": functools.partial(MobileNetV2, widen=1.0),
    "mobilenetv2_x0.5": functools.partial(MobileNetV2, widen=0.5),
    "mobilenetv2_cifar": functools.partial(MobileNetV2, widen=1.0, cifar_stem=True),
    "mobilenetv2_x0.5_cifar": functools.partial(MobileNetV2, widen=0.5, cifar_stem=True),
    "simpleconv64": SimpleConv64,
    "simplegaussianconv64": SimpleGaussianConv64,
    "tiny_cnn": TinyCNN,
}


def build_backbone(name: str, **kwargs) -> nn.Module:
    """Build the backbone registered as ``name`` in :data:`BACKBONES`; ``kwargs`` override its defaults."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}; choose one of {', '.join(BACKBONES)}")
    return BACKBONES[name](**kwargs)


def feature_channels(backbone: nn.Module, out_indices: Sequence[int] | None = None) -> list[int]:
    """Channels of the maps ``backbone`` returns for ``out_indices`` (default: its own ``out_indices``)."""
    indices = backbone.out_indices if out_indices is None else out_indices
    return [backbone.stage_channels[i] for i in indices]
