"""Networks of LC-Booster / DivideMix (PreAct ResNet, ResNet-50), the CPU reproduction's small CNN, :func:`build_model`.

``PreActResNet`` follows DivideMix's ``PreResNet.py`` so its checkpoints load by name (``conv1``, ``bn1``,
``layer{1-4}.{i}.{bn1,conv1,bn2,conv2,shortcut.0}``, ``linear``). LC-Booster's ``models/preresnet.py`` is the same
network with the classifier named ``fc``; :func:`from_official_preresnet` maps either release's state_dict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from shared.checkpoint import describe_mismatch, load_checkpoint, unwrap_state_dict
from shared.errors import UserError

IdentityShortcut = Literal["preact", "input"]


def conv3x3(in_planes: int, planes: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """Pre-activation basic block: BN→ReLU→conv3×3→BN→ReLU→conv3×3, plus a shortcut.

    The 1×1 conv shortcut (stride ≠ 1 or width change) reads the pre-activated input, as both official
    repos do. Both also add the *identity* shortcut to the pre-activated input (``identity_shortcut="preact"``,
    the default), unlike the textbook pre-act ResNet (``"input"``, the raw block input). The papers state no rule;
    both cases are read from the official code (``PreResNet.py``, ``models/preresnet.py``).
    """

    def __init__(self, in_planes: int, planes: int, stride: int = 1, identity_shortcut: IdentityShortcut = "preact"):
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.conv1 = conv3x3(in_planes, planes, stride)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False))
        self.shortcut_from_input = identity_shortcut == "input" and len(self.shortcut) == 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        shortcut = self.shortcut(x if self.shortcut_from_input else out)
        out = self.conv1(out)
        out = self.conv2(F.relu(self.bn2(out)))
        return out + shortcut


class PreActResNet(nn.Module):
    """PreAct ResNet for 32×32 inputs (DivideMix ``ResNet(PreActBlock, ...)``, LC-Booster ``PreResNet``).

    Stem conv3×3 (stride 1) → BN → ReLU; four stages of widths 64/128/256/512, strides 1/2/2/2; **no** final
    BN+ReLU before pooling (a quirk of both repos, kept). Global average pooling equals the official
    ``avg_pool2d(·, 4)`` at 32×32 and also works at 28×28.
    """

    def __init__(
        self,
        num_blocks: Sequence[int],
        num_classes: int = 10,
        in_chans: int = 3,
        identity_shortcut: IdentityShortcut = "preact",
    ):
        super().__init__()
        if identity_shortcut not in ("preact", "input"):
            raise ValueError(f"identity_shortcut must be 'preact' or 'input', got {identity_shortcut!r}")
        self.conv1 = conv3x3(in_chans, 64)
        self.bn1 = nn.BatchNorm2d(64)
        in_planes = 64
        for i, (planes, n, stride) in enumerate(zip((64, 128, 256, 512), num_blocks, (1, 2, 2, 2), strict=True)):
            blocks = []
            for s in [stride] + [1] * (n - 1):
                blocks.append(PreActBlock(in_planes, planes, s, identity_shortcut))
                in_planes = planes
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(512, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(torch.flatten(F.adaptive_avg_pool2d(out, 1), 1))


def preact_resnet18(num_classes: int = 10, in_chans: int = 3, identity_shortcut: IdentityShortcut = "preact"):
    """PreAct ResNet-18 [2,2,2,2]: 11,171,274 parameters for 10 classes, 11,217,444 for 100 (as released)."""
    return PreActResNet((2, 2, 2, 2), num_classes, in_chans, identity_shortcut)


def preact_resnet34(num_classes: int = 10, in_chans: int = 3, identity_shortcut: IdentityShortcut = "preact"):
    """PreAct ResNet-34 [3,4,6,3] = LC-Booster ``PreResNet(34)`` (DivideMix's ``ResNet34`` is post-activation)."""
    return PreActResNet((3, 4, 6, 3), num_classes, in_chans, identity_shortcut)


def from_official_preresnet(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map a DivideMix or LC-Booster PreResNet state_dict to :class:`PreActResNet` keys.

    Strips the ``module.`` prefix of ``DataParallel`` checkpoints and renames LC-Booster's ``fc.*`` to ``linear.*``.
    """
    out = {}
    for key, value in state_dict.items():
        key = key.removeprefix("module.")
        out["linear." + key[3:] if key.startswith("fc.") else key] = value
    return out


class ConvBlock(nn.Module):
    """conv3×3 (padding 1) → BN → ReLU."""

    def __init__(self, in_chans: int, out_chans: int):
        super().__init__()
        self.conv = nn.Conv2d(in_chans, out_chans, kernel_size=3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_chans)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class SmallCNN(nn.Module):
    """The CPU-reproduction network for 8×8 or 28×28 digits: three conv blocks, GAP, ``fc``.

    A 2×2 max-pool follows each of the first two blocks while the map is at least 2 pixels wide
    (28→14→7, 8→4→2).
    """

    def __init__(self, in_chans: int = 1, num_classes: int = 10, widths: Sequence[int] = (32, 64, 128)):
        super().__init__()
        chans = (in_chans, *widths)
        self.blocks = nn.ModuleList(ConvBlock(chans[i], chans[i + 1]) for i in range(len(widths)))
        self.fc = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i < len(self.blocks) - 1 and min(x.shape[-2:]) >= 2:
                x = F.max_pool2d(x, 2)
        return self.fc(x.mean(dim=(2, 3)))


def small_cnn(num_classes: int = 10, in_chans: int = 1) -> SmallCNN:
    """:class:`SmallCNN` with widths 32-64-128."""
    return SmallCNN(in_chans, num_classes)


def resnet50(num_classes: int, weights: str | Path | None = None) -> nn.Module:
    """torchvision ResNet-50 with a new ``fc`` (DivideMix's ``Train_clothing1M.py``); nothing is downloaded.

    ``weights``: a local torchvision ImageNet state_dict file (or a dict holding it under ``state_dict`` or
    ``model``). Every key but ``fc.*`` must match by name and shape; ``fc`` keeps its fresh initialisation.
    """
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    if weights is not None:
        model.load_state_dict(_backbone_state(model, weights))
    return model


def _backbone_state(model: nn.Module, path: str | Path) -> dict[str, torch.Tensor]:
    """The file's tensors for every non-``fc`` key of ``model`` plus the model's own ``fc``; UserError otherwise."""
    loaded = unwrap_state_dict(load_checkpoint(path), source=f"weights file {path}")
    given = {k: v for k, v in loaded.items() if not k.startswith("fc.")}
    own = model.state_dict()
    problem = describe_mismatch(given, {k: v for k, v in own.items() if not k.startswith("fc.")})
    if problem:
        raise UserError(
            f"weights file {path} does not match torchvision ResNet-50: {problem}; pass a torchvision ResNet-50 "
            "ImageNet state_dict"
        )
    return given | {k: v for k, v in own.items() if k.startswith("fc.")}


MODELS: dict[str, Callable[..., nn.Module]] = {
    "preact_resnet18": preact_resnet18,
    "preact_resnet34": preact_resnet34,
    "small_cnn": small_cnn,
    "resnet50": resnet50,
}


def build_model(name: str, num_classes: int, in_chans: int = 3, weights: str | Path | None = None) -> nn.Module:
    """The network ``name`` of :data:`MODELS`; ``weights`` (a local ImageNet state_dict) only for ``resnet50``."""
    if name not in MODELS:
        raise UserError(f"unknown model {name!r}: choose one of {', '.join(MODELS)}")
    if name == "resnet50":
        if in_chans != 3:
            raise UserError(f"resnet50 takes 3-channel images, the data has {in_chans}: use small_cnn or preact_*")
        return resnet50(num_classes, weights)
    if weights is not None:
        raise UserError(f"ImageNet weights are only for resnet50, not {name}: drop the weights file")
    return MODELS[name](num_classes=num_classes, in_chans=in_chans)
