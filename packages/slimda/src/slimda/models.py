"""The weight-sharing model bank of Slimmable Domain Adaptation: slimmable layers, backbones and heads.

A sub-network ("architecture") uses the *first* ``round(c·w)`` output channels of every layer; its inputs follow
the previous layer (universally-slimmable style; unverified against the paper). An :class:`Arch` holds one width
multiplier per *group*:

- ``resnet50``: 5 groups, ``stem-stage1-stage2-stage3-stage4``;
- ``resnet18``: 4 groups, ``stage1-…-stage4``; the stem follows stage 1 because layer1's blocks have identity
  shortcuts, whose residual sum needs the stem and stage-1 widths equal;
- ``slimcnn``: 4 groups, one per conv block (our tiny CNN for the embedded data).

``SlimResNet`` carries torchvision's state_dict key names (``conv1``, ``bn1``, ``layer{1-4}.{i}.conv1``,
``…downsample.0``), so an ImageNet ``resnet50`` state_dict loads by name (:func:`load_torchvision_weights`).
The heads (:class:`TriClassifier`) are SymNets' ``fc`` (Cs ⊕ Ct, 2K outputs) and SlimDA's added ``fc_aux``
(Ca, K outputs), slimmable on their input side only.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from shared.checkpoint import describe_mismatch, load_checkpoint, unwrap_state_dict
from shared.errors import UserError


def channels(full: int, width: float) -> int:
    """Channels of a layer with ``full`` channels at width multiplier ``width``: round half up, at least 1."""
    return max(1, math.floor(full * width + 0.5))


@dataclass(frozen=True)
class Arch:
    """One architecture of the bank: a width multiplier per group (see the module docstring)."""

    widths: tuple[float, ...]

    def __post_init__(self) -> None:
        if not self.widths or any(not 0.0 < w <= 1.0 for w in self.widths):
            raise UserError(f"architecture {self.widths} needs every width multiplier in (0, 1]")

    @classmethod
    def uniform(cls, width: float, groups: int) -> Arch:
        return cls((float(width),) * groups)

    @classmethod
    def parse(cls, text: str, groups: int) -> Arch:
        """``"0.5"`` (uniform) or ``"0.5-0.5-0.25-0.25-0.25"`` (one multiplier per group)."""
        try:
            widths = tuple(float(part) for part in str(text).split("-"))
        except ValueError:
            raise UserError(f"architecture {text!r} is not a width like 0.5 or w1-w2-...-w{groups}") from None
        if len(widths) == 1:
            widths = widths * groups
        if len(widths) != groups:
            raise UserError(f"architecture {text!r} has {len(widths)} widths; this model has {groups} groups")
        return cls(widths)

    @property
    def is_uniform(self) -> bool:
        return len(set(self.widths)) == 1

    def __str__(self) -> str:
        return f"{self.widths[0]:g}" if self.is_uniform else "-".join(f"{w:g}" for w in self.widths)


class SlimmableConv2d(nn.Conv2d):
    """``nn.Conv2d`` whose forward uses the weight prefix ``[:out, :in]`` (in = the input's channels)."""

    def __init__(self, *args, group: int = 0, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.group = group
        self.active_out = self.out_channels

    def set_width(self, width: float) -> None:
        self.active_out = channels(self.out_channels, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight[: self.active_out, : x.shape[1]]
        bias = None if self.bias is None else self.bias[: self.active_out]
        return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)


class SlimmableBatchNorm2d(nn.BatchNorm2d):
    """Batch norm with shared affine parameters and running statistics sliced to the input's channels.

    Running statistics are meaningless across widths: they are reset and re-estimated per architecture
    before evaluation (:func:`slimda.bn.recalibrate_bn`); training uses batch statistics.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm2d
                factor = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or self.running_mean is None
        return F.batch_norm(
            x,
            None if self.running_mean is None else self.running_mean[:c],
            None if self.running_var is None else self.running_var[:c],
            self.weight[:c],
            self.bias[:c],
            use_batch_stats,
            factor,
            self.eps,
        )


class SlimmableLinear(nn.Linear):
    """``nn.Linear`` slimmable on its input side: the forward uses ``weight[:, :in]``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight[:, : x.shape[1]], self.bias)


def _conv(cin: int, cout: int, kernel: int, stride: int, group: int) -> SlimmableConv2d:
    return SlimmableConv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False, group=group)


class BasicBlock(nn.Module):
    """torchvision's ``BasicBlock`` (two 3×3 convs), slimmable, every conv at its stage's width."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int, group: int) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 3, stride, group)
        self.bn1 = SlimmableBatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, 1, group)
        self.bn2 = SlimmableBatchNorm2d(planes)
        self.downsample = _downsample(inplanes, planes, stride, group)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ``Bottleneck`` (ResNet v1.5: stride on the 3×3), slimmable at its stage's width."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int, group: int) -> None:
        super().__init__()
        self.conv1 = _conv(inplanes, planes, 1, 1, group)
        self.bn1 = SlimmableBatchNorm2d(planes)
        self.conv2 = _conv(planes, planes, 3, stride, group)
        self.bn2 = SlimmableBatchNorm2d(planes)
        self.conv3 = _conv(planes, planes * 4, 1, 1, group)
        self.bn3 = SlimmableBatchNorm2d(planes * 4)
        self.downsample = _downsample(inplanes, planes * 4, stride, group)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


def _downsample(inplanes: int, outplanes: int, stride: int, group: int) -> nn.Sequential | None:
    if stride == 1 and inplanes == outplanes:
        return None
    conv = SlimmableConv2d(inplanes, outplanes, 1, stride=stride, bias=False, group=group)
    return nn.Sequential(conv, SlimmableBatchNorm2d(outplanes))


class SlimResNet(nn.Module):
    """torchvision's ResNet as a slimmable backbone (no ``fc``: the heads live in :class:`TriClassifier`)."""

    def __init__(self, block: type[BasicBlock | Bottleneck], layers: Sequence[int]) -> None:
        super().__init__()
        stage_offset = 1 if block is Bottleneck else 0  # resnet18: the stem follows stage 1 (group 0)
        self.num_groups = 4 + stage_offset
        self.conv1 = SlimmableConv2d(3, 64, 7, stride=2, padding=3, bias=False, group=0)
        self.bn1 = SlimmableBatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = 64
        for index, (planes, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            stride = 1 if index == 0 else 2
            blocks = []
            for i in range(count):
                blocks.append(block(inplanes, planes, stride if i == 0 else 1, index + stage_offset))
                inplanes = planes * block.expansion
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.feature_dim = inplanes
        for m in self.modules():  # torchvision's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return torch.flatten(self.avgpool(x), 1)


class SlimCNN(nn.Module):
    """A tiny slimmable CNN for the embedded data: four 3×3 conv → BN → ReLU blocks (stride 2 in blocks 2–4), GAP."""

    def __init__(self, widths: Sequence[int] = (32, 64, 128, 256), in_chans: int = 3) -> None:
        super().__init__()
        blocks, cin = [], in_chans
        for index, cout in enumerate(widths):
            conv = _conv(cin, cout, 3, 1 if index == 0 else 2, index)
            blocks.append(nn.Sequential(conv, SlimmableBatchNorm2d(cout), nn.ReLU(inplace=True)))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.num_groups = len(widths)
        self.feature_dim = cin

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x).mean(dim=(2, 3))


class HeadOutputs(NamedTuple):
    """Logits of Cs, Ct and Ca, and the folded K-way distribution q_k = P_k + P_{K+k} of Cs ⊕ Ct."""

    cs: torch.Tensor
    ct: torch.Tensor
    ca: torch.Tensor
    folded: torch.Tensor


class TriClassifier(nn.Module):
    """OSTC heads (Fig. 2 of the paper): ``fc`` = Cs ⊕ Ct (SymNets' single 2K-way linear), ``fc_aux`` = Ca (K-way)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.fc = SlimmableLinear(in_features, 2 * num_classes)
        self.fc_aux = SlimmableLinear(in_features, num_classes)

    def forward(self, features: torch.Tensor) -> HeadOutputs:
        z = self.fc(features)
        k = self.num_classes
        return HeadOutputs(z[:, :k], z[:, k:], self.fc_aux(features), fold(z, k))


def fold(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """q_k(x) = P_k(x) + P_{K+k}(x) with P = softmax over the 2K logits of Cs ⊕ Ct (SymNets' folded prediction)."""
    p = z.softmax(dim=1)
    return p[:, :num_classes] + p[:, num_classes:]


KNOWLEDGE_HEADS = ("folded", "ct", "cs", "mean_cs_ct")


def knowledge(outputs: HeadOutputs, head: str = "folded") -> torch.Tensor:
    """π_a(x), the class distribution an architecture contributes to SEED's ensemble and to UPEM (unverified)."""
    if head == "folded":
        return outputs.folded
    if head == "mean_cs_ct":
        return 0.5 * (outputs.cs.softmax(dim=1) + outputs.ct.softmax(dim=1))
    if head in ("ct", "cs"):
        return getattr(outputs, head).softmax(dim=1)
    raise UserError(f"unknown knowledge head {head!r}: choose from {KNOWLEDGE_HEADS}")


BACKBONES = {
    "resnet50": lambda: SlimResNet(Bottleneck, (3, 4, 6, 3)),
    "resnet18": lambda: SlimResNet(BasicBlock, (2, 2, 2, 2)),
    "slimcnn": SlimCNN,
}


class ModelBank(nn.Module):
    """Shared weights Θ of every architecture: a slimmable backbone and the tri-classifier heads."""

    def __init__(self, backbone: str, num_classes: int) -> None:
        super().__init__()
        if backbone not in BACKBONES:
            raise UserError(f"unknown backbone {backbone!r}: choose from {sorted(BACKBONES)}")
        self.backbone_name = backbone
        self.backbone = BACKBONES[backbone]()
        self.heads = TriClassifier(self.backbone.feature_dim, num_classes)
        self.num_classes = num_classes
        self.num_groups = self.backbone.num_groups
        self.arch = self.full_arch()

    def full_arch(self) -> Arch:
        return Arch.uniform(1.0, self.num_groups)

    def parse_arch(self, text: str | float) -> Arch:
        return Arch.parse(str(text), self.num_groups)

    def set_arch(self, arch: Arch) -> ModelBank:
        """Select the sub-network ``arch`` for the following forwards."""
        if len(arch.widths) != self.num_groups:
            raise UserError(
                f"architecture {arch} has {len(arch.widths)} widths; {self.backbone_name} has {self.num_groups} groups"
            )
        for module in self.slimmable_convs():
            module.set_width(arch.widths[module.group])
        self.arch = arch
        return self

    def slimmable_convs(self) -> Iterator[SlimmableConv2d]:
        return (m for m in self.modules() if isinstance(m, SlimmableConv2d))

    def feature_dim(self, arch: Arch | None = None) -> int:
        """Width of the pooled feature at ``arch``: round(C·w_last)."""
        return channels(self.backbone.feature_dim, (arch or self.arch).widths[-1])

    def forward(self, x: torch.Tensor) -> HeadOutputs:
        return self.heads(self.backbone(x))

    def backbone_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def head_parameters(self) -> list[nn.Parameter]:
        return list(self.heads.parameters())


def load_torchvision_weights(bank: ModelBank, path: Path) -> None:
    """Load an ImageNet torchvision ``resnet18``/``resnet50`` state_dict into the backbone, by name.

    The classifier (``fc.*``) is dropped: SlimDA's heads are new layers. Accepts a plain state_dict or one
    under ``"state_dict"``/``"model"``, with or without a ``module.`` prefix.
    """
    if bank.backbone_name == "slimcnn":
        raise UserError("--weights loads torchvision ResNet weights; the slimcnn backbone has none (drop --weights)")
    loaded = unwrap_state_dict(load_checkpoint(path), source=f"{path} (torchvision {bank.backbone_name} weights)")
    state = {k: v for k, v in loaded.items() if not k.startswith("fc.")}
    problem = describe_mismatch(state, bank.backbone.state_dict())
    if problem:
        raise UserError(f"{path} does not match torchvision {bank.backbone_name} key names and shapes: {problem}")
    bank.backbone.load_state_dict(state)
