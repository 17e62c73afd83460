"""The TBVS network (Zhao et al., "Modeling Motion with Multi-Modal Features for Text-Based Video
Segmentation", CVPR 2022), as the official ``model/network.py`` builds it, text encoder excluded.

An RGB backbone (dilated ResNet-101) and a flow backbone (ResNet-34, output stride 16) read the T frames and
their optical-flow images; ASPP + coordinates give the stride-16 RGB and flow maps; the multi-modal video
transformer mixes them with the projected word features; three decoder blocks (language-guided feature
fusion, LGFF) at strides 16, 8, 4 and a head segment the annotated (last) frame; the alignment heads give the
vision/flow/sentence similarity maps of the multi-modal alignment loss.

The text encoder is passed in: ``TBVSNet.forward`` takes its token features (n, L, text_dim), CLS at 0.
Architecture sizes live in ``ARCHS`` (``paper``, ``small``, ``demo``), the ablation ladder in ``VARIANTS``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

from tbvs.layers import (
    ASPP,
    AlignmentHead,
    FuseFeature,
    LanguageGuidedFusion,
    LanguageProjection,
    MultiModalVideoTransformer,
    PlainFusion,
    append_coords,
    coord_map,
)

__all__ = [
    "ARCHS",
    "VARIANTS",
    "ResNet",
    "TBVSArch",
    "TBVSNet",
    "TBVSOutput",
    "TinyBackbone",
    "build_arch",
    "coord_map",
    "create_model",
    "resnet34_os16",
    "resnet101_dilated",
    "variant_overrides",
]


# --------------------------------------------------------------------------------------------- backbones
class BasicBlock(nn.Module):
    """torchvision's ResNet basic block (keys conv1, bn1, conv2, bn2, downsample.0/1); ``dilation`` on conv1."""

    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class Bottleneck(nn.Module):
    """torchvision's ResNet bottleneck (v1.5: stride on the 3x3 conv), ``dilation`` on the 3x3 conv."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, dilation: int = 1, downsample=None) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class ResNet(nn.Module):
    """A ResNet trunk without pooling head, returning the outputs of layer1..layer4 (a list of 4 maps).

    ``strides`` are the per-layer strides and ``dilations[i]`` the per-block dilations of layer i+1, so both
    torchvision's ``replace_stride_with_dilation`` and the official flow ResNet's first-block-only dilation
    can be expressed. State-dict keys are torchvision's (``conv1``, ``bn1``, ``layer1.0.conv1`` ...), so an
    ImageNet torchvision ``.pth`` loads by name (its ``fc`` is ignored).
    """

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: Sequence[int],
        strides: Sequence[int],
        dilations: Sequence[Sequence[int]],
        in_chans: int = 3,
        init_mode: str = "fan_out",
    ) -> None:
        super().__init__()
        self.inplanes = 64
        self.conv1 = nn.Conv2d(in_chans, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        for i, planes in enumerate((64, 128, 256, 512)):
            self.add_module(f"layer{i + 1}", self._make_layer(block, planes, layers[i], strides[i], dilations[i]))
        self.channels = tuple(p * block.expansion for p in (64, 128, 256, 512))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode=init_mode, nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def _make_layer(self, block, planes: int, blocks: int, stride: int, dilations: Sequence[int]) -> nn.Sequential:
        if len(dilations) != blocks:
            raise ValueError(f"need one dilation per block ({blocks}), got {list(dilations)}")
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, dilations[0], downsample)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, 1, d) for d in dilations[1:]]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        feats = []
        for layer in (self.layer1, self.layer2, self.layer3, self.layer4):
            x = layer(x)
            feats.append(x)
        return feats


def _load_weights(model: nn.Module, weights: str | Path | dict | None) -> nn.Module:
    """Load an ImageNet state dict by name; keys the trunk lacks (the classifier ``fc``) are ignored."""
    if weights is None:
        return model
    state = weights if isinstance(weights, dict) else torch.load(weights, map_location="cpu", weights_only=True)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    if missing:
        raise ValueError(f"the weights lack {len(missing)} backbone keys, e.g. {missing[:3]}")
    bad = [k for k in own if state[k].shape != own[k].shape]
    if bad:
        raise ValueError(f"shape mismatch for {bad[:3]}: is this the right architecture's checkpoint?")
    model.load_state_dict({k: state[k] for k in own})
    return model


def resnet101_dilated(weights: str | Path | dict | None = None) -> ResNet:
    """ResNet-101 with a dilated layer4, as torchvision's ``resnet101(replace_stride_with_dilation=[F, F, T])``.

    Features C1..C4: 256 @ s4, 512 @ s8, 1024 @ s16, 2048 @ s16. ``weights``: a torchvision ImageNet ``.pth``
    (e.g. ``resnet101-5d3b4d8f.pth``) or a state dict.
    """
    dil = [[1] * 3, [1] * 4, [1] * 23, [1, 2, 2]]  # torchvision: the first dilated block keeps dilation 1
    return _load_weights(ResNet(Bottleneck, (3, 4, 23, 3), (1, 2, 2, 1), dil), weights)


def resnet34_os16(weights: str | Path | dict | None = None) -> ResNet:
    """The official flow backbone ``ResNet34(os=16)``: BasicBlocks [3, 4, 6, 3], strides [1, 2, 2, 1], dilation 2
    on the first block of layer4 only; Kaiming (fan-in) init. Features 64 @ s4, 128 @ s8, 256 @ s16, 512 @ s16.
    ``weights``: torchvision's ``resnet34-333f7ec4.pth`` or a state dict.
    """
    dil = [[1] * 3, [1] * 4, [1] * 6, [2, 1, 1]]
    return _load_weights(ResNet(BasicBlock, (3, 4, 6, 3), (1, 2, 2, 1), dil, init_mode="fan_in"), weights)


class TinyBackbone(nn.Module):
    """A 4-stage CNN for CPU runs, the stand-in for the ResNets: ``widths`` channels at cumulative ``strides``
    (default 4/8/16/16). Each stage: stride-2 Conv3x3-BN-ReLU steps down to its stride, then a residual pair of
    Conv3x3-BN(-ReLU); a stage that does not downsample uses dilation 2 instead, as the dilated ResNet layer4.
    Convolutions get torchvision's ResNet init (Kaiming normal, fan-out).
    """

    def __init__(self, widths: Sequence[int] = (16, 32, 64, 128), strides: Sequence[int] = (4, 8, 16, 16)) -> None:
        super().__init__()
        if len(widths) != 4 or len(strides) != 4:
            raise ValueError("TinyBackbone needs 4 widths and 4 strides")
        self.channels = tuple(widths)
        stages, in_ch, prev = [], 3, 1
        for width, stride in zip(widths, strides, strict=True):
            factor = stride // prev
            if factor < 1 or stride % prev or factor & (factor - 1):
                raise ValueError(f"strides must grow by powers of 2, got {list(strides)}")
            steps = factor.bit_length() - 1
            dilation = 1 if steps else 2
            layers: list[nn.Module] = []
            for i in range(max(steps, 1)):
                cin = in_ch if i == 0 else width
                layers += _cbr(cin, width, stride=2 if steps else 1, dilation=dilation)
            layers.append(_TinyResidual(width, dilation))
            stages.append(nn.Sequential(*layers))
            in_ch, prev = width, stride
        self.stages = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> list[nn.Module]:
    return [
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    ]


class _TinyResidual(nn.Module):
    def __init__(self, dim: int, dilation: int) -> None:
        super().__init__()
        self.body = nn.Sequential(*_cbr(dim, dim, dilation=dilation), *_cbr(dim, dim, dilation=dilation)[:2])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.body(x))


# ------------------------------------------------------------------------------------------- the network
@dataclass(frozen=True)
class TBVSArch:
    """Architecture hyper-parameters of :class:`TBVSNet` (defaults: the paper's / official code's values).

    ``rgb_backbone``: ``resnet101_dilated`` | ``tiny``; ``flow_backbone``: ``resnet34_os16`` | ``tiny`` (the RGB
    tiny widths) | ``tiny-half`` (half of them). ``vf_pixels``: None computes the full P x P vision-flow
    similarity of the official code; K samples K stride-4 pixels per sample (a memory-saving deviation).
    ``faithful_mask``: the release's 1e-9 mask fill; ``flow_attn_source``: ``rgb`` as released, ``flow`` as
    the paper reads.
    """

    input_size: int = 320
    clip_len: int = 3
    rgb_backbone: str = "resnet101_dilated"
    flow_backbone: str = "resnet34_os16"
    tiny_widths: tuple[int, ...] = (16, 32, 64, 128)
    tiny_strides: tuple[int, ...] = (4, 8, 16, 16)
    aspp_rates: tuple[int, ...] = (3, 5, 7)
    aspp_dropout: float = 0.5
    d_model: int = 256
    depth: int = 4
    heads: int = 4
    dim_head: int = 64
    mlp_dim: int = 128
    dropout: float = 0.1
    text_dim: int = 768
    use_flow: bool = True
    use_transformer: bool = True
    temporal_attention: bool = True
    use_lgff: bool = True
    use_alignment: bool = True
    align_dim: int = 128
    decoder_dim: int = 256
    faithful_mask: bool = True
    flow_attn_source: str = "rgb"
    vf_pixels: int | None = None

    def __post_init__(self) -> None:
        for name in ("tiny_widths", "tiny_strides", "aspp_rates"):  # lists from JSON become tuples
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if self.flow_attn_source not in ("rgb", "flow"):
            raise ValueError(f"flow_attn_source must be 'rgb' or 'flow', got {self.flow_attn_source!r}")
        if self.clip_len < 1:
            raise ValueError(f"clip_len must be >= 1, got {self.clip_len}")

    @property
    def frames_used(self) -> int:
        """Frames that influence the annotated frame's prediction: T with temporal attention, else 1."""
        return self.clip_len if self.use_transformer and self.temporal_attention else 1

    def replace(self, **overrides) -> TBVSArch:
        return dataclasses.replace(self, **overrides)


#: Architecture sizes: ``paper`` (the official model at 320), ``small`` (the synthetic-tiny learning
#: experiment at 96) and ``demo`` (a narrower ``small`` for minute-scale CPU runs).
ARCHS: dict[str, TBVSArch] = {
    "paper": TBVSArch(),
    "small": TBVSArch(
        input_size=96,
        rgb_backbone="tiny",
        flow_backbone="tiny-half",
        tiny_widths=(16, 32, 64, 128),
        aspp_rates=(1, 2, 3),
        d_model=64,
        depth=2,
        heads=2,
        dim_head=32,
        mlp_dim=128,
        text_dim=64,
        align_dim=32,
        decoder_dim=64,
    ),
    "demo": TBVSArch(
        input_size=96,
        rgb_backbone="tiny",
        flow_backbone="tiny-half",
        tiny_widths=(8, 16, 32, 64),
        aspp_rates=(1, 2, 3),
        d_model=32,
        depth=1,
        heads=2,
        dim_head=16,
        mlp_dim=64,
        text_dim=32,
        align_dim=16,
        decoder_dim=32,
    ),
}

#: The ablation ladder: B = single-frame RGB + text with the plain decoder; +M flow; +T the transformer with
#: temporal attention over the clip; +L LGFF; +A the alignment loss. Values are :class:`TBVSArch` overrides.
VARIANTS: dict[str, dict] = {
    "B": dict(use_flow=False, use_transformer=False, use_lgff=False, use_alignment=False, clip_len=1),
    "B+T": dict(use_flow=False, use_transformer=True, temporal_attention=True, use_lgff=False, use_alignment=False),
    "B+M": dict(use_flow=True, use_transformer=False, use_lgff=False, use_alignment=False, clip_len=1),
    "B+M+T": dict(use_flow=True, use_transformer=True, temporal_attention=True, use_lgff=False, use_alignment=False),
    "B+M+T+L": dict(use_flow=True, use_transformer=True, temporal_attention=True, use_lgff=True, use_alignment=False),
    "B+M+T+L+A": dict(use_flow=True, use_transformer=True, temporal_attention=True, use_lgff=True, use_alignment=True),
    # the full model without its motion branch: the "no motion" ablation that changes one thing
    "B+T+L+A": dict(use_flow=False, use_transformer=True, temporal_attention=True, use_lgff=True, use_alignment=True),
}


def variant_overrides(name: str) -> dict:
    """The :class:`TBVSArch` overrides of a ladder name (``B+M+T+L+A`` or its short form ``BMTLA``)."""
    key = "+".join(name.replace("+", "").upper()) if name else name
    if key not in VARIANTS:
        raise ValueError(f"unknown variant {name!r}; choose from {', '.join(VARIANTS)} (or without '+')")
    return dict(VARIANTS[key])


def build_arch(preset: str = "paper", variant: str = "B+M+T+L+A", **overrides) -> TBVSArch:
    """An architecture from a size in ``ARCHS``, a ladder variant and explicit field overrides (applied last)."""
    if preset not in ARCHS:
        raise ValueError(f"unknown preset {preset!r}; choose from {', '.join(ARCHS)}")
    return ARCHS[preset].replace(**{**variant_overrides(variant), **overrides})


def create_model(preset: str = "paper", variant: str = "B+M+T+L+A", **overrides) -> TBVSNet:
    """Build :class:`TBVSNet` by preset and variant; ``overrides`` are :class:`TBVSArch` fields."""
    return TBVSNet(build_arch(preset, variant, **overrides))


class TBVSOutput(NamedTuple):
    """Outputs of :class:`TBVSNet` for the annotated frame.

    ``logits`` (n, 1, S, S); ``s_vl``, ``s_fl`` (n, 1, S/4, S/4) and ``s_vf`` (n, P, P) or (n, K, K) cosine
    similarities in [-1, 1] (None where the variant has no such map); ``vf_index`` (n, K) the stride-4 pixel
    indices (row-major) S_vf was computed on when ``vf_pixels`` is set, else None.
    """

    logits: torch.Tensor
    s_vl: torch.Tensor | None = None
    s_fl: torch.Tensor | None = None
    s_vf: torch.Tensor | None = None
    vf_index: torch.Tensor | None = None


def _make_backbone(name: str, arch: TBVSArch, weights=None) -> nn.Module:
    if name == "resnet101_dilated":
        return resnet101_dilated(weights)
    if name == "resnet34_os16":
        return resnet34_os16(weights)
    if name in ("tiny", "tiny-half"):
        widths = arch.tiny_widths if name == "tiny" else tuple(max(w // 2, 1) for w in arch.tiny_widths)
        return TinyBackbone(widths, arch.tiny_strides)
    raise ValueError(f"unknown backbone {name!r}; choose resnet101_dilated, resnet34_os16, tiny or tiny-half")


class _CoordFuse(nn.Sequential):
    """[ASPP output; 8 coordinates] -> Conv3x3 -> ReLU -> Conv1x1 (the official ``fuse_feature_post_*``)."""

    def __init__(self, dim: int) -> None:
        super().__init__(nn.Conv2d(dim + 8, dim, 3, padding=1), nn.ReLU(), nn.Conv2d(dim, dim, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(append_coords(x))


class _SentenceGate(nn.Module):
    """Text fusion when the transformer is ablated: Conv1x1([V; M]) * Linear(sentence), channel-wise."""

    def __init__(self, in_ch: int, dim: int) -> None:
        super().__init__()
        self.visual = nn.Conv2d(in_ch, dim, 1)
        self.language = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, sentence: torch.Tensor) -> torch.Tensor:
        return self.visual(x) * self.language(sentence)[:, :, None, None]


class SegHead(nn.Module):
    """Conv3x3 (no bias) -> BN -> ReLU -> Conv1x1 -> 1 channel, as the official segmentation head."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(dim, dim, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(dim)
        self.conv_2 = nn.Conv2d(dim, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_2(F.relu(self.bn(self.conv(x))))


class TBVSNet(nn.Module):
    """The TBVS model without its text encoder (official ``PropagationNetwork`` minus ``Languagemodel``).

    ``rgb_weights`` / ``flow_weights``: ImageNet torchvision checkpoints for the ResNet backbones.
    """

    def __init__(self, arch: TBVSArch | None = None, rgb_weights=None, flow_weights=None) -> None:
        super().__init__()
        arch = ARCHS["paper"] if arch is None else arch
        self.arch = arch
        d, dec = arch.d_model, arch.decoder_dim
        self.rgb_backbone = _make_backbone(arch.rgb_backbone, arch, rgb_weights)
        c = self.rgb_backbone.channels
        self.language_project = LanguageProjection(arch.text_dim, d)
        self.aspp = ASPP(c[3], d, arch.aspp_rates, arch.aspp_dropout)
        self.rgb_post = _CoordFuse(d)
        f = None
        if arch.use_flow:
            self.flow_backbone = _make_backbone(arch.flow_backbone, arch, flow_weights)
            f = self.flow_backbone.channels
            self.flow_aspp = ASPP(f[3], d, arch.aspp_rates, arch.aspp_dropout)
            self.flow_post = _CoordFuse(d)
        if arch.use_transformer:
            self.transformer = MultiModalVideoTransformer(
                d,
                arch.depth,
                arch.heads,
                arch.dim_head,
                arch.mlp_dim,
                arch.dropout,
                temporal=arch.temporal_attention,
                faithful_mask=arch.faithful_mask,
            )
        else:
            self.text_fusion = _SentenceGate(d * (2 if arch.use_flow else 1), d)
        blocks = []
        for level, prev in zip((2, 1, 0), (d, dec, dec), strict=True):
            if arch.use_lgff:
                blocks.append(LanguageGuidedFusion(c[level], f[level] if f else None, dec, prev, arch.flow_attn_source))
            else:
                blocks.append(PlainFusion(c[level], f[level] if f else None, dec, prev))
        self.up_16_16, self.up_16_8, self.up_8_4 = blocks
        self.head = SegHead(dec)
        if arch.use_alignment:
            self.fuse_rgb = FuseFeature(dec)
            self.fuse_flow = FuseFeature(dec) if arch.use_flow else None
            self.alignment = AlignmentHead(self.fuse_rgb.out_channels, arch.text_dim, arch.align_dim, arch.use_flow)

    def forward(
        self,
        images: torch.Tensor,
        flows: torch.Tensor | None,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
        cls_raw: torch.Tensor | None = None,
        with_alignment: bool = True,
    ) -> TBVSOutput:
        """Segment the last frame of each clip.

        ``images``, ``flows``: (n, T, 3, S, S) normalised frames and flow images (flows may be None without
        motion); ``text_tokens`` (n, L, text_dim) text-encoder features, CLS at 0; ``text_mask`` (n, L) 1 for
        real tokens; ``cls_raw`` (n, text_dim) the raw sentence feature for the alignment heads (default
        ``text_tokens[:, 0]``). Only the last ``arch.frames_used`` frames are read (the others cannot change
        the output). ``with_alignment=False`` skips the alignment maps.
        """
        arch = self.arch
        if images.ndim != 5:
            raise ValueError(f"images must be (n, T, 3, S, S), got {tuple(images.shape)}")
        if arch.use_flow and (flows is None or flows.shape != images.shape):
            raise ValueError("this variant uses motion: flows must be given with the images' shape (n, T, 3, S, S)")
        n, t_in = images.shape[:2]
        t = min(arch.frames_used, t_in)
        size = images.shape[-2:]
        x_rgb = images[:, t_in - t :].flatten(0, 1)
        rgb_feats = self.rgb_backbone(x_rgb)
        flow_feats = self.flow_backbone(flows[:, t_in - t :].flatten(0, 1)) if arch.use_flow else None

        words = self.language_project(text_tokens)  # (n, L, d), projected once per clip
        sentence = words[:, 0]
        v = self.rgb_post(self.aspp(rgb_feats[3]))
        m = self.flow_post(self.flow_aspp(flow_feats[3])) if arch.use_flow else None
        if arch.use_transformer:
            _, c, h, w = v.shape
            out = self.transformer(
                words.repeat_interleave(t, dim=0),
                v.flatten(2).transpose(1, 2),
                None if m is None else m.flatten(2).transpose(1, 2),
                text_mask.repeat_interleave(t, dim=0),
                t,
            )
            x16 = out.transpose(1, 2).reshape(n * t, c, h, w)[t - 1 :: t]
        else:
            x16 = self.text_fusion(v if m is None else torch.cat([v, m], dim=1), sentence)

        def last(feats: list[torch.Tensor] | None, level: int) -> torch.Tensor | None:
            return None if feats is None else feats[level][t - 1 :: t]

        sources = []
        prev = x16
        for block, level in ((self.up_16_16, 2), (self.up_16_8, 1), (self.up_8_4, 0)):
            v_src, f_src, prev = block(last(rgb_feats, level), last(flow_feats, level), sentence, prev)
            sources.append((v_src, f_src))
        logits = F.interpolate(self.head(prev), size=size, mode="bilinear", align_corners=False)
        if not (arch.use_alignment and with_alignment):
            return TBVSOutput(logits)

        fused_rgb = self.fuse_rgb(*(s[0] for s in sources))
        fused_flow = self.fuse_flow(*(s[1] for s in sources)) if self.fuse_flow is not None else None
        vf_index = None
        if arch.use_flow and arch.vf_pixels is not None:
            vf_index = self._sample_pixels(n, fused_rgb.shape[-2] * fused_rgb.shape[-1], fused_rgb.device)
        raw = text_tokens[:, 0] if cls_raw is None else cls_raw
        s_vl, s_fl, s_vf = self.alignment(fused_rgb, fused_flow, raw, vf_index)
        return TBVSOutput(logits, s_vl, s_fl, s_vf, vf_index)

    def _sample_pixels(self, n: int, pixels: int, device: torch.device) -> torch.Tensor:
        """K stride-4 pixel indices per sample: uniform without replacement in training, an even grid in eval."""
        k = min(self.arch.vf_pixels, pixels)
        if self.training:
            return torch.rand(n, pixels, device=device).argsort(dim=1)[:, :k]
        grid = torch.linspace(0, pixels - 1, k, device=device).round().long()
        return grid.expand(n, k)

    @torch.no_grad()
    def predict(
        self,
        images: torch.Tensor,
        flows: torch.Tensor | None,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Foreground probabilities sigmoid(logits), (n, 1, S, S), without the alignment maps."""
        return torch.sigmoid(self.forward(images, flows, text_tokens, text_mask, with_alignment=False).logits)
