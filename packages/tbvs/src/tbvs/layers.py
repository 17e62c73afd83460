"""Building blocks of the TBVS network (Zhao et al., CVPR 2022): ASPP, coordinate maps, the multi-modal
video transformer, the language-guided feature fusion (LGFF) decoder block and the alignment heads.

Module and parameter names follow the official ``model/utils.py``, ``model/segmentation.py``,
``model/vision_language.py`` and ``model/network.py`` where a block has a counterpart there (``convs``,
``project``, ``vision_f``, ``enhance_vision_f``, ``out_conv``, ``f_16``, ``vision_proj`` ...). Sizes are
derived from the inputs: nothing assumes 20 words, a 20x20 grid or a 320x320 image.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "ASPP",
    "AlignmentHead",
    "CrossModalAttention",
    "FeedForward",
    "FuseFeature",
    "LanguageGuidedFusion",
    "LanguageProjection",
    "MultiModalVideoTransformer",
    "PlainFusion",
    "ResBlock",
    "TemporalAttention",
    "append_coords",
    "coord_map",
]


def coord_map(h: int, w: int, device: torch.device | str | None = None) -> torch.Tensor:
    """The 8-channel spatial map of the official ``generate_spatial_batch``: (8, h, w) in [-1, 1].

    Channels per cell: x_min, y_min, x_max, y_max, x_centre, y_centre, 1/w, 1/h.
    """
    xs = torch.arange(w, device=device, dtype=torch.float32)
    ys = torch.arange(h, device=device, dtype=torch.float32)
    x_min, x_max = xs / w * 2 - 1, (xs + 1) / w * 2 - 1
    y_min, y_max = ys / h * 2 - 1, (ys + 1) / h * 2 - 1
    rows = [x_min[None, :], y_min[:, None], x_max[None, :], y_max[:, None]]
    rows += [(x_min + x_max)[None, :] / 2, (y_min + y_max)[:, None] / 2]
    rows += [torch.full((1, 1), 1 / w, device=device), torch.full((1, 1), 1 / h, device=device)]
    return torch.stack([r.expand(h, w) for r in rows])


def append_coords(x: torch.Tensor) -> torch.Tensor:
    """Concatenate the 8-channel coordinate map of its grid to ``x`` (B, C, h, w) -> (B, C + 8, h, w)."""
    n, _, h, w = x.shape
    return torch.cat([x, coord_map(h, w, x.device).to(x.dtype).expand(n, -1, -1, -1)], dim=1)


class _ASPPPooling(nn.Sequential):
    """Image-level branch: GAP -> Conv1x1 (no bias) -> BN -> ReLU -> bilinear upsample."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_ch, out_ch, 1, bias=False), nn.BatchNorm2d(out_ch), nn.ReLU()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.interpolate(super().forward(x), size=x.shape[-2:], mode="bilinear", align_corners=False)


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(),
    )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling as the official ``ASPP``: 1x1, three atrous 3x3 and an image-pooling
    branch (each conv + BN + ReLU), concatenated -> Conv1x1 -> BN -> ReLU -> Dropout.

    The official module also builds an unused ``embedding_project`` (Linear 768 -> 256 + BN); it is left out.
    """

    def __init__(self, in_ch: int, out_ch: int = 256, rates: Sequence[int] = (3, 5, 7), dropout: float = 0.5) -> None:
        super().__init__()
        branches = [_conv_bn_relu(in_ch, out_ch, 1)]
        branches += [_conv_bn_relu(in_ch, out_ch, 3, dilation=r) for r in rates]
        branches.append(_ASPPPooling(in_ch, out_ch))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(branches) * out_ch, out_ch, 1, bias=False),
            nn.BatchNorm2d(out_ch),
            nn.ReLU(),
            nn.Dropout(dropout),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class LanguageProjection(nn.Module):
    """The official ``LangugaeEmbeddingProject``: Conv1d(k=1) + BatchNorm1d over the token axis, no activation.

    (B, L, C_in) -> (B, L, C_out).
    """

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(in_ch, out_ch, 1)
        self.bn = nn.BatchNorm1d(out_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x.transpose(1, 2))).transpose(1, 2)


class _Attention(nn.Module):
    """Multi-head self-attention with bias-free q/k/v/out projections and scale ``dim_head ** -0.5``."""

    def __init__(self, dim: int, heads: int, dim_head: int) -> None:
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q = nn.Linear(dim, inner, bias=False)
        self.to_k = nn.Linear(dim, inner, bias=False)
        self.to_v = nn.Linear(dim, inner, bias=False)
        self.to_out = nn.Linear(inner, dim, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        b, t, _ = x.shape
        return x.view(b, t, self.heads, -1).transpose(1, 2)

    def _attend(self, x: torch.Tensor, key_mask: torch.Tensor | None, faithful_mask: bool) -> torch.Tensor:
        q, k, v = self._split(self.to_q(x)), self._split(self.to_k(x)), self._split(self.to_v(x))
        if key_mask is None or bool(key_mask.all()):
            out = F.scaled_dot_product_attention(q, k, v)
        elif faithful_mask:
            # The official CrossModalAttention replaces masked scores by 1e-9 (not -inf) before the softmax,
            # so padded keys still receive attention weight: the mask is in effect not applied.
            scores = (q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5
            scores = scores.masked_fill(~key_mask[:, None, None, :], 1e-9)
            out = scores.softmax(dim=-1) @ v
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
        b, _, t, _ = out.shape
        return self.to_out(out.transpose(1, 2).reshape(b, t, -1))


class CrossModalAttention(_Attention):
    """Joint self-attention over one frame's [words; RGB; flow] tokens with a key padding mask (bool, True = keep).

    ``faithful_mask=True`` reproduces the release (masked scores set to 1e-9); False masks with -inf.
    """

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None, faithful_mask: bool = True) -> torch.Tensor:
        return self._attend(x, key_mask, faithful_mask)


class TemporalAttention(_Attention):
    """Self-attention over the RGB tokens of all T frames of a clip: (B*T, P, C) -> (B*T, P, C), no mask."""

    def forward(self, x: torch.Tensor, clip_len: int) -> torch.Tensor:
        bt, p, c = x.shape
        out = self._attend(x.reshape(bt // clip_len, clip_len * p, c), None, True)
        return out.reshape(bt, p, c)


class FeedForward(nn.Module):
    """Linear(dim, hidden) -> GELU -> Dropout -> Linear(hidden, dim) -> Dropout (the official ``FeedForward``)."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim), nn.Dropout(dropout)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _VideoTransformerLayer(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, mlp_dim: int, dropout: float, temporal: bool) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = CrossModalAttention(dim, heads, dim_head)
        self.norm2 = nn.LayerNorm(dim) if temporal else None
        self.temporal_attn = TemporalAttention(dim, heads, dim_head) if temporal else None
        self.norm3 = nn.LayerNorm(dim)
        self.ffn = FeedForward(dim, mlp_dim, dropout)


class MultiModalVideoTransformer(nn.Module):
    """The multi-modal video transformer (official ``TransformerEncoder``), pre-norm, ``depth`` layers of

    1. X <- X + CrossModalAttn(LN(X)) over each frame's tokens X = [words; RGB; flow];
    2. RGB <- RGB + TemporalAttn(LN(RGB)) over the RGB tokens of the T frames of a clip (flow and words get none);
    3. X <- X + FFN(LN(X)).

    Only the RGB slice is returned; its position is derived from the token counts.
    """

    def __init__(
        self,
        dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        dim_head: int = 64,
        mlp_dim: int = 128,
        dropout: float = 0.1,
        temporal: bool = True,
        faithful_mask: bool = True,
    ) -> None:
        super().__init__()
        self.temporal = temporal
        self.faithful_mask = faithful_mask
        self.layers = nn.ModuleList(
            _VideoTransformerLayer(dim, heads, dim_head, mlp_dim, dropout, temporal) for _ in range(depth)
        )

    def forward(
        self,
        words: torch.Tensor,
        rgb: torch.Tensor,
        flow: torch.Tensor | None,
        word_mask: torch.Tensor,
        clip_len: int,
    ) -> torch.Tensor:
        """``words`` (B*T, L, C), ``rgb`` / ``flow`` (B*T, P, C) tokens, ``word_mask`` (B*T, L) -> RGB (B*T, P, C)."""
        n_words, n_rgb = words.shape[1], rgb.shape[1]
        parts = [words, rgb] if flow is None else [words, rgb, flow]
        x = torch.cat(parts, dim=1)
        ones = word_mask.new_ones(x.shape[0], x.shape[1] - n_words, dtype=torch.bool)
        key_mask = torch.cat([word_mask.bool(), ones], dim=1)
        rgb_slice = slice(n_words, n_words + n_rgb)
        for layer in self.layers:
            x = x + layer.cross_attn(layer.norm1(x), key_mask, self.faithful_mask)
            if self.temporal:
                v = x[:, rgb_slice]
                v = v + layer.temporal_attn(layer.norm2(v), clip_len)
                x = torch.cat([x[:, :n_words], v, x[:, n_words + n_rgb :]], dim=1)
            x = x + layer.ffn(layer.norm3(x))
        return x[:, rgb_slice]


class ResBlock(nn.Module):
    """x + conv3x3(ReLU(conv3x3(ReLU(x)))) (the official ``ResBlock`` with equal widths)."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


def _upsample_to(x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    if x.shape[-2:] == ref.shape[-2:]:
        return x
    return F.interpolate(x, size=ref.shape[-2:], mode="bilinear", align_corners=False)


class LanguageGuidedFusion(nn.Module):
    """One LGFF decoder block (the official ``UpsampleBlock``).

    v = Conv1x1(rgb), f = Conv1x1(flow), l = Conv1x1(sentence) as a (C, 1, 1) map, up = bilinear upsample of
    the previous decoder output to the block's grid, pos = 8 coordinate channels;
    v_src = l * Conv3x3([v; up; pos]), f_src = l * Conv3x3'([f; up; pos]) (language guidance);
    a_v = sigmoid(Conv1x1(v_src)), a_f = sigmoid(Conv1x1'(src)) with src = v_src (``flow_attn_source='rgb'``,
    as released) or f_src (``'flow'``, the reading of the paper); cross-gating v_enh = v_src + a_f * v_src,
    f_enh = f_src + a_v * f_src; out = ResBlock(Conv3x3([v_enh; f_enh])). Returns (v_src, f_src, out).

    ``flow_in=None`` is the block without the motion branch (the "no motion" ablation of the full model):
    the language guidance and the RGB-sourced gate a_f stay, f_src is None and out = ResBlock(Conv3x3(v_enh)).
    """

    def __init__(
        self, rgb_in: int, flow_in: int, out: int = 256, prev_in: int | None = None, flow_attn_source: str = "rgb"
    ) -> None:
        super().__init__()
        if flow_attn_source not in ("rgb", "flow"):
            raise ValueError(f"flow_attn_source must be 'rgb' or 'flow', got {flow_attn_source!r}")
        prev_in = out if prev_in is None else prev_in
        self.flow_attn_source = flow_attn_source
        self.vision_f = nn.Conv2d(rgb_in, out, 1)
        self.enhance_vision_f = nn.Conv2d(out + prev_in + 8, out, 3, padding=1)
        self.language_f = nn.Conv2d(out, out, 1)
        self.with_flow = bool(flow_in)
        if self.with_flow:
            self.flow_f = nn.Conv2d(flow_in, out, 1)
            self.enhance_flow_f = nn.Conv2d(out + prev_in + 8, out, 3, padding=1)
            self.vision_to_attention = nn.Conv2d(out, 1, 1)
        if self.with_flow or flow_attn_source == "rgb":
            self.flow_to_attention = nn.Conv2d(out, 1, 1)
        self.fuse = nn.Conv2d((2 if self.with_flow else 1) * out, out, 3, padding=1)
        self.out_conv = ResBlock(out)

    def forward(
        self, rgb: torch.Tensor, flow: torch.Tensor | None, sentence: torch.Tensor, prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """``rgb`` (B, C_rgb, h, w), ``flow`` (B, C_flow, h, w) or None, ``sentence`` (B, C), ``prev`` (B, C_prev,
        h', w')."""
        v = self.vision_f(rgb)
        lang = self.language_f(sentence[:, :, None, None])
        up = _upsample_to(prev, v)
        v_src = lang * self.enhance_vision_f(append_coords(torch.cat([v, up], dim=1)))
        if not self.with_flow:
            gated = v_src
            if self.flow_attn_source == "rgb":
                gated = v_src + torch.sigmoid(self.flow_to_attention(v_src)) * v_src
            return v_src, None, self.out_conv(self.fuse(gated))
        f_src = lang * self.enhance_flow_f(append_coords(torch.cat([self.flow_f(flow), up], dim=1)))
        a_v = torch.sigmoid(self.vision_to_attention(v_src))
        a_f = torch.sigmoid(self.flow_to_attention(v_src if self.flow_attn_source == "rgb" else f_src))
        v_enh = v_src + a_f * v_src
        f_enh = f_src + a_v * f_src
        out = self.out_conv(self.fuse(torch.cat([v_enh, f_enh], dim=1)))
        return v_src, f_src, out


class PlainFusion(nn.Module):
    """The decoder block without LGFF (ablation "without L"): out = ResBlock(Conv3x3([v; f; up; pos])).

    v = Conv1x1(rgb) and f = Conv1x1(flow) (absent without flow) are returned as the block's source features,
    so the alignment heads can still read them. No language guidance and no cross-gating.
    """

    def __init__(self, rgb_in: int, flow_in: int | None, out: int = 256, prev_in: int | None = None) -> None:
        super().__init__()
        prev_in = out if prev_in is None else prev_in
        self.vision_f = nn.Conv2d(rgb_in, out, 1)
        self.flow_f = nn.Conv2d(flow_in, out, 1) if flow_in else None
        self.fuse = nn.Conv2d(out * (2 if flow_in else 1) + prev_in + 8, out, 3, padding=1)
        self.out_conv = ResBlock(out)

    def forward(
        self, rgb: torch.Tensor, flow: torch.Tensor | None, sentence: torch.Tensor, prev: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        v = self.vision_f(rgb)
        f = self.flow_f(flow) if self.flow_f is not None else None
        parts = [v, _upsample_to(prev, v)] if f is None else [v, f, _upsample_to(prev, v)]
        return v, f, self.out_conv(self.fuse(append_coords(torch.cat(parts, dim=1))))


class FuseFeature(nn.Module):
    """The official ``FuseFeature``: each of the stride-16/8/4 decoder sources -> Conv1x1(C -> C/2) + ReLU,
    bilinear-upsampled to the stride-4 grid and concatenated (3 * C/2 channels: 384 at C = 256)."""

    def __init__(self, in_ch: int = 256, mid: int | None = None) -> None:
        super().__init__()
        mid = in_ch // 2 if mid is None else mid
        self.out_channels = 3 * mid
        self.f_16 = nn.Sequential(nn.Conv2d(in_ch, mid, 1), nn.ReLU())
        self.f_8 = nn.Sequential(nn.Conv2d(in_ch, mid, 1), nn.ReLU())
        self.f_4 = nn.Sequential(nn.Conv2d(in_ch, mid, 1), nn.ReLU())

    def forward(self, x16: torch.Tensor, x8: torch.Tensor, x4: torch.Tensor) -> torch.Tensor:
        x4 = self.f_4(x4)
        return torch.cat([_upsample_to(self.f_16(x16), x4), _upsample_to(self.f_8(x8), x4), x4], dim=1)


class AlignmentHead(nn.Module):
    """Projections of the multi-modal alignment loss (the official ``ContrastiveModule``), returning cosines.

    Vision and flow features (B, in_ch, h, w) and the raw sentence feature (B, text_in) are projected to ``dim``
    by 1x1 convolutions and L2-normalised over channels. Returns S_vl (B, 1, h, w) = cos(vision_i, sentence),
    S_fl (B, 1, h, w) = cos(flow_i, sentence) and S_vf (B, P, P) = cos(vision_i, flow_j), P = h*w, or
    (B, K, K) over the pixels ``vf_index`` (B, K) when given. The official module returns tan(pi/2 * s);
    here that map to logits is applied by the loss (``tbvs.losses.alignment_logits``).
    Without flow features, S_fl and S_vf are None.
    """

    def __init__(self, in_ch: int = 384, text_in: int = 768, dim: int = 128, with_flow: bool = True) -> None:
        super().__init__()
        self.vision_proj = nn.Conv2d(in_ch, dim, 1)
        self.flow_proj = nn.Conv2d(in_ch, dim, 1) if with_flow else None
        self.language_proj = nn.Conv2d(text_in, dim, 1)

    def forward(
        self,
        vision: torch.Tensor,
        flow: torch.Tensor | None,
        sentence: torch.Tensor,
        vf_index: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        n, _, h, w = vision.shape
        vis = F.normalize(self.vision_proj(vision).flatten(2), dim=1)  # (B, D, P)
        lang = F.normalize(self.language_proj(sentence[:, :, None, None]).flatten(1), dim=1)  # (B, D)
        s_vl = torch.einsum("bdp,bd->bp", vis, lang).view(n, 1, h, w)
        if flow is None or self.flow_proj is None:
            return s_vl, None, None
        flo = F.normalize(self.flow_proj(flow).flatten(2), dim=1)
        s_fl = torch.einsum("bdp,bd->bp", flo, lang).view(n, 1, h, w)
        if vf_index is not None:
            gather = vf_index[:, None, :].expand(-1, vis.shape[1], -1)
            vis, flo = vis.gather(2, gather), flo.gather(2, gather)
        s_vf = vis.transpose(1, 2) @ flo
        return s_vl, s_fl, s_vf
