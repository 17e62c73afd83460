"""Backbones and the ROI box head of the Probabilistic Teacher detector.

- ``vgg16``: the official backbone, VGG-16 conv1_1 ... conv5_3 with ReLU and no pool5 (torchvision's
  ``features[:30]``: stride 16, 512 channels). Layer indices 0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28 are
  the convolutions, so the keys ``features.{i}.weight/bias`` of torchvision's VGG-16 and of the official
  ``vgg16_caffe.pth`` load directly. The official code freezes the first two blocks (``FREEZE_AT 2``). Caffe
  weights expect BGR inputs in [0, 255] minus the Caffe mean (the detector's "caffe" normalisation).
- ``tiny``: 4 conv blocks (16-32-64-128 channels, two 3x3 conv + ReLU each, 2x2 max-pool after the first three: stride
  8), no batch norm, for the CPU toy experiments.
- ``resnet50-fpn``: torchvision's ``resnet_fpn_backbone`` (ResNet-50, frozen batch norm, FPN levels "0".."3" and
  "pool"), an extension beyond the paper.

Weights come only from a local file (``torch.load(weights_only=True)``); nothing is ever downloaded.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn
from torchvision.models.detection.backbone_utils import resnet_fpn_backbone
from torchvision.models.detection.faster_rcnn import TwoMLPHead
from torchvision.models.vgg import cfgs, make_layers

from shared.errors import UserError

__all__ = [
    "BACKBONES",
    "BACKBONE_STRIDES",
    "BOX_HEAD_DIMS",
    "FEATURE_NAMES",
    "TinyBackbone",
    "VGG16Conv5",
    "box_head",
    "build_backbone",
    "load_state_dict_file",
]

BACKBONES = ("tiny", "vgg16", "resnet50-fpn")
BACKBONE_STRIDES: dict[str, tuple[int, ...]] = {"tiny": (8,), "vgg16": (16,), "resnet50-fpn": (4, 8, 16, 32, 64)}
FEATURE_NAMES: dict[str, tuple[str, ...]] = {
    "tiny": ("0",),
    "vgg16": ("0",),
    "resnet50-fpn": ("0", "1", "2", "3", "pool"),
}
BOX_HEAD_DIMS = {"tiny": 256, "vgg16": 1024, "resnet50-fpn": 1024}
DEFAULT_FREEZE_BLOCKS = {"tiny": 0, "vgg16": 2, "resnet50-fpn": 2}

VGG_BLOCK_ENDS = (0, 5, 10, 17, 24, 30)  # features[:VGG_BLOCK_ENDS[k]] = the first k blocks (pool4 included)


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a local state_dict (optionally wrapped in {"state_dict": ...} or {"model": ...}) safely."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"backbone weights file {path} not found: give an existing local .pth file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises several types for corrupt/unsafe files
        raise UserError(
            f"cannot read backbone weights {path} ({type(err).__name__}): need a torch state_dict"
        ) from None
    for wrapper in ("state_dict", "model"):
        if isinstance(state, Mapping) and isinstance(state.get(wrapper), Mapping):
            state = state[wrapper]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"backbone weights {path} is not a state_dict of tensors")
    return dict(state)


def _load_matching(module: nn.Module, state: Mapping[str, torch.Tensor], path: str | Path, prefixes: tuple[str, ...]):
    """Load every key ``module`` needs from ``state``, found under the first prefix that provides them all."""
    needed = module.state_dict()
    for prefix in prefixes:
        if all(prefix + k in state for k in needed):
            picked = {k: state[prefix + k] for k in needed}
            bad = [k for k, v in picked.items() if v.shape != needed[k].shape]
            if bad:
                raise UserError(
                    f"backbone weights {path}: shape mismatch for {bad[0]} "
                    f"({tuple(picked[bad[0]].shape)} vs {tuple(needed[bad[0]].shape)}); use weights of this backbone"
                )
            module.load_state_dict(picked)
            return
    missing = next(k for k in needed if prefixes[0] + k not in state)
    raise UserError(f"backbone weights {path} lack key {prefixes[0] + missing!r}: use weights of this backbone")


class TinyBackbone(nn.Module):
    """4 conv blocks (16-32-64-128) of ``convs_per_block`` 3x3 conv + ReLU, 2x2 max-pool after blocks 1-3
    (stride 8), no normalisation layer (as VGG: a per-image normalisation would undo much of a contrast shift
    such as fog). Two convs per block give a 76-pixel receptive field, enough for the 64-pixel anchors; the
    narrow first blocks keep a CPU step cheap."""

    def __init__(self, channels: tuple[int, ...] = (16, 32, 64, 128), convs_per_block: int = 2) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        in_ch = 3
        for i, ch in enumerate(channels):
            for _ in range(convs_per_block):
                layers += [nn.Conv2d(in_ch, ch, 3, padding=1), nn.ReLU(inplace=True)]
                in_ch = ch
            if i < len(channels) - 1:
                layers.append(nn.MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.out_channels = in_ch
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # channels-last: oneDNN's convolutions on these narrow layers run 1.4x faster forward + backward (CPU)
        return self.features(x.contiguous(memory_format=torch.channels_last))


class VGG16Conv5(nn.Module):
    """VGG-16 ``features[:30]`` (conv5_3 + ReLU, pool5 dropped): stride 16, 512 channels. Initialised as
    torchvision's VGG (Kaiming normal, zero bias) when no weights are given."""

    def __init__(self) -> None:
        super().__init__()
        self.features = make_layers(cfgs["D"], batch_norm=False)[:30]
        self.out_channels = 512
        for m in self.features:
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def build_backbone(name: str, *, weights: str | Path | None = None, freeze_blocks: int | None = None) -> nn.Module:
    """Build backbone ``name`` (one of ``BACKBONES``) with attribute ``out_channels``.

    ``tiny``/``vgg16`` return one feature map, ``resnet50-fpn`` an OrderedDict ("0".."3", "pool").
    ``weights``: a local state_dict: torchvision VGG-16 or the official ``vgg16_caffe.pth`` (keys
    ``features.{i}.*``, classifier keys ignored), torchvision ResNet-50 (``conv1.*``, ``layer*.*``; ``fc`` ignored),
    or this backbone's own state_dict. ``freeze_blocks``: leading blocks without gradients (default: 2 for vgg16
    as the official FREEZE_AT 2, 2 for resnet50-fpn = torchvision's trainable_layers 3, 0 for tiny).
    """
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    freeze = DEFAULT_FREEZE_BLOCKS[name] if freeze_blocks is None else freeze_blocks
    state = load_state_dict_file(weights) if weights is not None else None
    if name == "resnet50-fpn":
        if not 0 <= freeze <= 5:
            raise UserError(f"freeze_blocks for resnet50-fpn must be in 0..5, got {freeze}")
        net = resnet_fpn_backbone(backbone_name="resnet50", weights=None, trainable_layers=5 - freeze)
        if state is not None:
            _load_matching(net.body, state, weights, ("", "body.", "backbone.body."))
            if all(("fpn." + k) in state for k in net.fpn.state_dict()):
                net.fpn.load_state_dict({k: state["fpn." + k] for k in net.fpn.state_dict()})
        return net
    net = TinyBackbone() if name == "tiny" else VGG16Conv5()
    if state is not None:
        _load_matching(net.features, state, weights, ("features.", ""))
    n_blocks = 4 if name == "tiny" else 5
    if not 0 <= freeze <= n_blocks:
        raise UserError(f"freeze_blocks for {name} must be in 0..{n_blocks}, got {freeze}")
    frozen = freeze * 3 if name == "tiny" else VGG_BLOCK_ENDS[freeze]
    net.features[:frozen].requires_grad_(False)
    return net


def box_head(name: str, out_channels: int, pooled: int = 7, dim: int | None = None) -> TwoMLPHead:
    """torchvision's ``TwoMLPHead`` (flatten -> FC -> ReLU -> FC -> ReLU) on ``pooled x pooled`` ROI features;
    ``dim`` defaults to 1024 (the official VGG head) or 256 for ``tiny``."""
    if name not in BACKBONES:
        raise UserError(f"unknown backbone {name!r}: choose one of {', '.join(BACKBONES)}")
    return TwoMLPHead(out_channels * pooled * pooled, BOX_HEAD_DIMS[name] if dim is None else dim)
