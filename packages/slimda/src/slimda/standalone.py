"""A plain deployable model for one architecture exported from a SlimDA model bank.

This file imports only torch: the export copies it as ``model.py`` beside ``arch.json`` and ``weights.pt``, and
``load(folder)`` rebuilds the network where slimda is not installed. Layers and state_dict keys are torchvision's
(``conv1``, ``layer1.0.conv1``, ``layer1.0.downsample.0``, ``fc``), every stage with its own channel counts.

``arch.json`` describes the network::

    {"model": "resnet50" | "resnet18" | "slimcnn", "num_classes": K, "in_chans": 3,
     "channels": {"stem": C, "mid": [4 ints], "out": [4 ints]}   # resnets: 3×3-conv and block-output widths
              or {"features": [one int per conv block]}}          # slimcnn
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn


def _conv_bn(cin: int, cout: int, kernel: int, stride: int) -> tuple[nn.Conv2d, nn.BatchNorm2d]:
    return nn.Conv2d(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout)


class BasicBlock(nn.Module):
    """torchvision's two-3×3 block with explicit channels ``cin → mid → cout``."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, mid, 3, stride)
        self.conv2, self.bn2 = _conv_bn(mid, cout, 3, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet v1.5 bottleneck (stride on the 3×3) with explicit channels ``cin → mid → cout``."""

    def __init__(self, cin: int, mid: int, cout: int, stride: int, downsample: bool) -> None:
        super().__init__()
        self.conv1, self.bn1 = _conv_bn(cin, mid, 1, 1)
        self.conv2, self.bn2 = _conv_bn(mid, mid, 3, stride)
        self.conv3, self.bn3 = _conv_bn(mid, cout, 1, 1)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = nn.Sequential(*_conv_bn(cin, cout, 1, stride)) if downsample else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """torchvision's ResNet with per-stage channel counts: ``mid[s]`` inside the blocks, ``out[s]`` between."""

    def __init__(
        self,
        block: type[BasicBlock | Bottleneck],
        depths: tuple[int, ...],
        stem: int,
        mid: list[int],
        out: list[int],
        num_classes: int,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, stem, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        cin = stem
        for index, (depth, width, cout) in enumerate(zip(depths, mid, out, strict=True)):
            stride = 1 if index == 0 else 2
            # torchvision's rule at full width: a stage's first block has a projection shortcut when it changes
            # resolution or, for bottlenecks (64 → 256 in stage 1), channels
            blocks = [block(cin, width, cout, stride, stride != 1 or block is Bottleneck)]
            blocks += [block(cout, width, cout, 1, False) for _ in range(depth - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(torch.flatten(self.avgpool(x), 1))


class SmallCNN(nn.Module):
    """SlimDA's small CNN: 3×3 conv → BN → ReLU blocks (stride 2 after the first), global average pool, ``fc``."""

    def __init__(self, features: list[int], num_classes: int, in_chans: int = 3) -> None:
        super().__init__()
        blocks, cin = [], in_chans
        for index, cout in enumerate(features):
            blocks.append(nn.Sequential(*_conv_bn(cin, cout, 3, 1 if index == 0 else 2), nn.ReLU(inplace=True)))
            cin = cout
        self.features = nn.Sequential(*blocks)
        self.fc = nn.Linear(cin, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x).mean(dim=(2, 3)))


RESNETS = {"resnet18": (BasicBlock, (2, 2, 2, 2)), "resnet50": (Bottleneck, (3, 4, 6, 3))}


def build(description: dict) -> nn.Module:
    """The untrained network that ``description`` (the content of ``arch.json``) describes."""
    channels, num_classes = description["channels"], description["num_classes"]
    in_chans = description.get("in_chans", 3)
    if description["model"] == "slimcnn":
        return SmallCNN(channels["features"], num_classes, in_chans)
    if description["model"] in RESNETS:
        block, depths = RESNETS[description["model"]]
        return ResNet(block, depths, channels["stem"], channels["mid"], channels["out"], num_classes, in_chans)
    raise ValueError(
        f"arch.json names model {description['model']!r}; this file builds {sorted(RESNETS)} and 'slimcnn'"
    )


def load(folder: str | Path) -> nn.Module:
    """The exported network in ``folder`` (``arch.json`` + ``weights.pt``), with its weights, in eval mode."""
    folder = Path(folder)
    model = build(json.loads((folder / "arch.json").read_text()))
    model.load_state_dict(torch.load(folder / "weights.pt", map_location="cpu", weights_only=True))
    return model.eval()
