"""Inception Transformer (iFormer, Si et al., NeurIPS 2022), as the official release defines it.

State-dict names, order and shapes equal the official ``models/inception_transformer.py``, so its
released checkpoints load by name. Inside a stage tokens are channels-last (B, H, W, C), as in the
official code; here the whole forward stays in that layout: 1x1 convolutions run as matrix
products on the channels-last tokens, and 3x3 convolutions and pooling see them through a
``permute`` view in channels-last memory format, so no layout copies are made between blocks.

Paper notation: a block splits its C channels into C_h high-frequency channels (max-pool and
depthwise-conv paths) and C_l = a * head_dim low-frequency channels (attention on pooled tokens),
with C_l growing with depth: the frequency ramp.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from iformer.layers import DropPath, init_weights
from shared.nn import Mlp

__all__ = [
    "MODEL_CONFIGS",
    "HighMixer",
    "IFormerBlock",
    "InceptionMixer",
    "InceptionTransformer",
    "LowMixer",
    "create_model",
    "iformer_base",
    "iformer_base_384",
    "iformer_large",
    "iformer_large_384",
    "iformer_small",
    "iformer_small_384",
    "list_models",
]


def _pointwise(x: torch.Tensor, conv: nn.Conv2d) -> torch.Tensor:
    """A 1x1 convolution applied to channels-last tokens: one matrix product."""
    return F.linear(x, conv.weight.flatten(1), conv.bias)


def _depthwise3x3(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """A bias-free depthwise 3x3 convolution (stride 1, padding 1) on channels-last tokens."""
    out = F.conv2d(x.permute(0, 3, 1, 2), weight, padding=1, groups=x.shape[-1])
    return out.permute(0, 2, 3, 1)


class HighMixer(nn.Module):
    """High-frequency mixer (paper Eq. 3-4): max-pool path and depthwise-conv path, C_h -> 2 C_h.

    The first C_h/2 channels go through Conv1x1 (no bias) -> DWConv3x3 (no bias) -> GELU, the last
    C_h/2 through MaxPool3x3 -> Conv1x1 -> GELU; the outputs are concatenated in that order.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        half = dim // 2
        self.half = half
        self.conv1 = nn.Conv2d(half, dim, 1, bias=False)
        self.proj1 = nn.Conv2d(dim, dim, 3, padding=1, groups=dim, bias=False)
        self.proj2 = nn.Conv2d(half, dim, 1)

    def paths(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The conv path and the pool path, each (B, H, W, C_h)."""
        conv_path = F.gelu(_depthwise3x3(_pointwise(x[..., : self.half], self.conv1), self.proj1.weight))
        pooled = F.max_pool2d(x[..., self.half :].permute(0, 3, 1, 2), 3, stride=1, padding=1)
        return conv_path, F.gelu(_pointwise(pooled.permute(0, 2, 3, 1), self.proj2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat(self.paths(x), dim=-1)


class LowMixer(nn.Module):
    """Low-frequency mixer (paper Eq. 5): AvgPool -> multi-head self-attention -> nearest upsample.

    ``heads`` heads of ``head_dim`` channels, qkv with bias, no output projection (as released).
    """

    def __init__(self, dim: int, heads: int, pool_size: int) -> None:
        super().__init__()
        self.heads = heads
        self.pool_size = pool_size
        self.qkv = nn.Linear(dim, dim * 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, height, width, dim = x.shape
        p = self.pool_size
        if p > 1:
            x = F.avg_pool2d(x.permute(0, 3, 1, 2), p, stride=p).permute(0, 2, 3, 1)
        h, w = x.shape[1:3]
        tokens = x.reshape(batch, h * w, dim)
        q, k, v = self.qkv(tokens).view(batch, h * w, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)  # scale head_dim ** -0.5, as released
        out = out.transpose(1, 2).reshape(batch, h, w, dim)
        if p > 1:
            out = out[:, :, None, :, None, :].expand(batch, h, p, w, p, dim).reshape(batch, height, width, dim)
        return out


class InceptionMixer(nn.Module):
    """Inception token mixer (paper Eq. 2-7): [HighMixer(first C_h), LowMixer(last C_l)] -> fuse.

    Fusion: y = concat; y = y + DWConv3x3(y); out = Conv1x1(y). ``attention_heads`` = a sets
    C_l = a * head_dim; a = num_heads leaves no high-frequency path (attention only).
    """

    def __init__(self, dim: int, num_heads: int, attention_heads: int, pool_size: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        if not 0 < attention_heads <= num_heads:
            raise ValueError(f"attention_heads must be in 1..{num_heads}, got {attention_heads}")
        head_dim = dim // num_heads
        self.low_dim = attention_heads * head_dim
        self.high_dim = dim - self.low_dim
        if self.high_dim % 2:
            raise ValueError(f"the high-frequency width C_h={self.high_dim} must be even")
        self.high_mixer = HighMixer(self.high_dim) if self.high_dim else None
        self.low_mixer = LowMixer(self.low_dim, attention_heads, pool_size)
        fused = self.low_dim + 2 * self.high_dim
        self.conv_fuse = nn.Conv2d(fused, fused, 3, padding=1, groups=fused, bias=False)
        self.proj = nn.Conv2d(fused, dim, 1)

    def mix(self, x: torch.Tensor) -> torch.Tensor:
        """Everything before the output projection: the fused (B, H, W, C_l + 2 C_h) features."""
        low = self.low_mixer(x[..., self.high_dim :])
        y = torch.cat([*self.high_mixer.paths(x[..., : self.high_dim]), low], dim=-1) if self.high_mixer else low
        # y + DWConv(y) as one depthwise convolution whose centre tap carries the identity
        weight = self.conv_fuse.weight.clone()
        weight[:, :, 1, 1] += 1
        return _depthwise3x3(y, weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _pointwise(self.mix(x), self.proj)


class IFormerBlock(nn.Module):
    """Pre-norm block: x + DropPath(gamma1 * Mixer(LN(x))), then x + DropPath(gamma2 * MLP(LN(x)))."""

    def __init__(
        self,
        dim: int,
        num_heads: int,
        attention_heads: int,
        pool_size: int,
        mlp_ratio: float = 4.0,
        drop_path: float = 0.0,
        layer_scale_init: float | None = None,
    ) -> None:
        super().__init__()
        if layer_scale_init is not None:
            self.layer_scale_1 = nn.Parameter(torch.full((dim,), layer_scale_init))
            self.layer_scale_2 = nn.Parameter(torch.full((dim,), layer_scale_init))
        else:
            self.layer_scale_1 = self.layer_scale_2 = None
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = InceptionMixer(dim, num_heads, attention_heads, pool_size)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training and not torch.is_grad_enabled():
            return self._forward_inference(x)
        y = self.attn(self.norm1(x))
        x = x + self.drop_path(y if self.layer_scale_1 is None else self.layer_scale_1 * y)
        y = self.mlp(self.norm2(x))
        return x + self.drop_path(y if self.layer_scale_2 is None else self.layer_scale_2 * y)

    def _forward_inference(self, x: torch.Tensor) -> torch.Tensor:
        """The same computation with the row-wise tail of each half fused per chunk of tokens.

        Early stages are memory-bound on a CPU: computing projection, layer scale and residual
        (and LN -> MLP -> residual) chunk by chunk keeps the intermediates in cache.
        """
        proj, mlp = self.attn.proj, self.mlp
        mixed = self.attn.mix(self.norm1(x))
        x = _chunked_residual(x, mixed, self.layer_scale_1, lambda y: F.linear(y, proj.weight.flatten(1), proj.bias))
        norm = self.norm2
        return _chunked_residual(x, x, self.layer_scale_2, lambda y: mlp(norm(y)))


_CHUNK_ROWS = 2048


def _chunked_residual(x: torch.Tensor, y: torch.Tensor, gamma: torch.Tensor | None, branch) -> torch.Tensor:
    """``x + gamma * branch(y)`` over (B, H, W, C) tokens, computed in row chunks (``branch`` is row-wise)."""
    rows = x.numel() // x.shape[-1]
    flat_x, flat_y = x.reshape(rows, -1), y.reshape(rows, -1)
    out = torch.empty_like(flat_x)
    for start in range(0, rows, _CHUNK_ROWS):
        part = slice(start, start + _CHUNK_ROWS)
        update = branch(flat_y[part])
        if gamma is None:
            torch.add(flat_x[part], update, out=out[part])
        else:
            torch.addcmul(flat_x[part], gamma, update, out=out[part])
    return out.view(x.shape)


class StemEmbed(nn.Module):
    """Stride-4 stem: Conv3x3 s2 -> BN -> GELU -> Conv3x3 s2 -> BN, to channels-last tokens."""

    def __init__(self, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj1 = nn.Conv2d(in_chans, dim // 2, 3, stride=2, padding=1)
        self.norm1 = nn.BatchNorm2d(dim // 2)
        self.proj2 = nn.Conv2d(dim // 2, dim, 3, stride=2, padding=1)
        self.norm2 = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.contiguous(memory_format=torch.channels_last)
        x = self.norm2(self.proj2(F.gelu(self.norm1(self.proj1(x)))))
        return x.permute(0, 2, 3, 1)


class DownsampleEmbed(nn.Module):
    """Stride-2 downsampling between stages: Conv3x3 s2 -> BN, channels-last in and out."""

    def __init__(self, in_dim: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_dim, dim, 3, stride=2, padding=1)
        self.norm = nn.BatchNorm2d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(x.permute(0, 3, 1, 2))).permute(0, 2, 3, 1)


def _stage_grid(size: int) -> list[int]:
    """Feature-map side after the stem and each downsampling conv (3x3, stride 2, padding 1)."""
    grids = [math.ceil(math.ceil(size / 2) / 2)]
    for _ in range(3):
        grids.append(math.ceil(grids[-1] / 2))
    return grids


class InceptionTransformer(nn.Module):
    """iFormer: four stages of Inception-mixer blocks with per-stage positional embeddings.

    Keyword arguments follow the official constructor (``img_size``, ``in_chans``, ``num_classes``,
    ``depths``, ``embed_dims``, ``num_heads``, ``attention_heads`` per block, ``use_layer_scale``,
    ``layer_scale_init_value``, ``drop_path_rate``), so an official config builds the same model.
    Additions: ``pos_grid_size`` (the image size the positional tables are built for; the released
    384 checkpoints store 224-size tables) and ``pool_sizes``. Inputs may be non-square; each side
    must give even stage-1 and stage-2 grids (any multiple of 16 does).
    """

    def __init__(
        self,
        img_size: int = 224,
        in_chans: int = 3,
        num_classes: int = 1000,
        depths: Sequence[int] = (3, 3, 9, 3),
        embed_dims: Sequence[int] = (96, 192, 320, 384),
        num_heads: Sequence[int] = (3, 6, 10, 12),
        attention_heads: Sequence[int] | None = None,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.0,
        use_layer_scale: bool = False,
        layer_scale_init_value: float = 1e-5,
        pos_grid_size: int | None = None,
        pool_sizes: Sequence[int] = (2, 2, 1, 1),
    ) -> None:
        super().__init__()
        if not len(depths) == len(embed_dims) == len(num_heads) == len(pool_sizes) == 4:
            raise ValueError("depths, embed_dims, num_heads and pool_sizes need one value per stage (4)")
        attention_heads = list(attention_heads) if attention_heads is not None else [1] * sum(depths)
        if len(attention_heads) != sum(depths):
            raise ValueError(f"attention_heads needs one value per block ({sum(depths)}), got {len(attention_heads)}")
        self.num_classes = num_classes
        self.in_chans = in_chans
        self.num_features = embed_dims[-1]
        self.img_size = img_size
        self.pool_sizes = tuple(pool_sizes)
        grids = _stage_grid(pos_grid_size or img_size)
        for i, (grid, dim) in enumerate(zip(grids, embed_dims, strict=True), start=1):
            self.register_parameter(f"pos_embed{i}", nn.Parameter(torch.zeros(1, grid, grid, dim)))
        rates = torch.linspace(0, drop_path_rate, sum(depths), device="cpu").tolist()
        start = 0
        for i in range(4):
            embed = StemEmbed(in_chans, embed_dims[0]) if i == 0 else DownsampleEmbed(embed_dims[i - 1], embed_dims[i])
            self.add_module("patch_embed" if i == 0 else f"patch_embed{i + 1}", embed)
            blocks = [
                IFormerBlock(
                    embed_dims[i],
                    num_heads[i],
                    attention_heads[start + j],
                    pool_sizes[i],
                    mlp_ratio,
                    rates[start + j],
                    layer_scale_init_value if use_layer_scale and i >= 2 else None,
                )
                for j in range(depths[i])
            ]
            self.add_module(f"blocks{i + 1}", nn.Sequential(*blocks))
            start += depths[i]
        self.norm = nn.LayerNorm(embed_dims[-1], eps=1e-6)
        self.head = nn.Linear(embed_dims[-1], num_classes) if num_classes > 0 else nn.Identity()
        self.apply(init_weights)
        for i in range(1, 5):
            nn.init.trunc_normal_(getattr(self, f"pos_embed{i}"), std=0.02)

    @property
    def stages(self) -> list[tuple[nn.Module, nn.Parameter, nn.Sequential]]:
        return [
            (self.patch_embed, self.pos_embed1, self.blocks1),
            (self.patch_embed2, self.pos_embed2, self.blocks2),
            (self.patch_embed3, self.pos_embed3, self.blocks3),
            (self.patch_embed4, self.pos_embed4, self.blocks4),
        ]

    def check_input_size(self, height: int, width: int) -> None:
        """Raise ValueError for an input size the pooled attention of stages 1-2 cannot tile."""
        for side in (height, width):
            grids = _stage_grid(side)
            if any(grids[i] % p for i, p in enumerate(self.pool_sizes)):
                raise ValueError(
                    f"input size {height}x{width} is not supported: the stage grids {grids} must be divisible "
                    f"by the attention pool sizes {list(self.pool_sizes)}; use a multiple of 16 (e.g. 224, 384)"
                )

    def forward_features(self, x: torch.Tensor, return_stages: bool = False) -> torch.Tensor | list[torch.Tensor]:
        """The pooled feature vector (B, C4) after the final LayerNorm, as the official model returns.

        ``return_stages=True`` gives the four stage maps (B, C_k, H_k, W_k) instead, for dense tasks.
        """
        if x.ndim != 4 or x.shape[1] != self.in_chans:
            raise ValueError(f"expected input (B, {self.in_chans}, H, W), got {tuple(x.shape)}")
        self.check_input_size(x.shape[2], x.shape[3])
        stage_maps = []
        for embed, pos_embed, blocks in self.stages:
            x = embed(x)
            x = blocks(x + _resize_pos_embed(pos_embed, x.shape[1], x.shape[2]))
            stage_maps.append(x)
        if return_stages:
            return [m.permute(0, 3, 1, 2) for m in stage_maps]
        return self.norm(x).mean(dim=(1, 2))

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.forward_features(x))

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head (``num_classes=0``: identity, the model returns features)."""
        self.num_classes = num_classes
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        self.head.apply(init_weights)

    def no_weight_decay(self) -> set[str]:
        """The positional tables (the release names ``pos_embed`` here, which matches nothing)."""
        return {f"pos_embed{i}" for i in range(1, 5)}


def _resize_pos_embed(pos_embed: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Bilinear (align_corners=False) resize of a (1, G, G, C) table to the feature map, as released."""
    if pos_embed.shape[1] == height and pos_embed.shape[2] == width:
        return pos_embed
    resized = F.interpolate(pos_embed.permute(0, 3, 1, 2), size=(height, width), mode="bilinear", align_corners=False)
    return resized.permute(0, 2, 3, 1)


def _ramp(*segments: tuple[int, int]) -> list[int]:
    """Attention heads per block from (heads, blocks) runs: the frequency ramp."""
    return [heads for heads, count in segments for _ in range(count)]


_SMALL = dict(
    depths=(3, 3, 9, 3),
    embed_dims=(96, 192, 320, 384),
    num_heads=(3, 6, 10, 12),
    attention_heads=_ramp((1, 3), (3, 3), (7, 4), (9, 5), (11, 3)),
)
_BASE = dict(
    depths=(4, 6, 14, 6),
    embed_dims=(96, 192, 384, 512),
    num_heads=(3, 6, 12, 16),
    attention_heads=_ramp((1, 4), (3, 6), (8, 7), (10, 7), (15, 6)),
)
_LARGE = dict(
    depths=(4, 6, 18, 8),
    embed_dims=(96, 192, 448, 640),
    num_heads=(3, 6, 14, 20),
    attention_heads=_ramp((1, 4), (3, 6), (10, 9), (12, 9), (19, 8)),
)
_LAYER_SCALE = dict(use_layer_scale=True, layer_scale_init_value=1e-6)

#: Every architecture by name: the six released sizes and ``tiny_test``, the small model of the
#: package's embedded default, for 32x32 digits.
MODEL_CONFIGS: dict[str, dict] = {
    "iformer_small": {**_SMALL, **_LAYER_SCALE, "img_size": 224},
    "iformer_base": {**_BASE, **_LAYER_SCALE, "img_size": 224},
    "iformer_large": {**_LARGE, **_LAYER_SCALE, "img_size": 224},
    "iformer_small_384": {**_SMALL, **_LAYER_SCALE, "img_size": 384},
    "iformer_base_384": {**_BASE, **_LAYER_SCALE, "img_size": 384},
    "iformer_large_384": {**_LARGE, **_LAYER_SCALE, "img_size": 384},
    "tiny_test": dict(
        depths=(1, 1, 2, 1),
        embed_dims=(32, 64, 96, 128),
        num_heads=(2, 4, 6, 8),
        attention_heads=(1, 2, 4, 5, 7),
        img_size=32,
        **_LAYER_SCALE,
    ),
}


def list_models() -> list[str]:
    return list(MODEL_CONFIGS)


def create_model(name: str, **kwargs) -> InceptionTransformer:
    """Build a model by name; ``kwargs`` override the table (``num_classes``, ``in_chans``, ``drop_path_rate``...)."""
    if name not in MODEL_CONFIGS:
        raise ValueError(f"unknown model {name!r}; choose from {', '.join(MODEL_CONFIGS)}")
    return InceptionTransformer(**{**MODEL_CONFIGS[name], **kwargs})


def iformer_small(**kwargs) -> InceptionTransformer:
    """iFormer-S: 19,866,344 parameters, 4.8 GFLOPs at 224 (83.4% ImageNet top-1 as released)."""
    return create_model("iformer_small", **kwargs)


def iformer_base(**kwargs) -> InceptionTransformer:
    """iFormer-B: 47,866,216 parameters, 9.4 GFLOPs at 224 (84.6%)."""
    return create_model("iformer_base", **kwargs)


def iformer_large(**kwargs) -> InceptionTransformer:
    """iFormer-L: 86,637,096 parameters, 14.0 GFLOPs at 224 (84.8%)."""
    return create_model("iformer_large", **kwargs)


def iformer_small_384(**kwargs) -> InceptionTransformer:
    """iFormer-S at 384 (84.6%). Positional tables on the 96 grid as coded; ``pos_grid_size=224``
    builds the 56-grid tables the released checkpoint stores (interpolated at run time)."""
    return create_model("iformer_small_384", **kwargs)


def iformer_base_384(**kwargs) -> InceptionTransformer:
    """iFormer-B at 384 (85.7%); see :func:`iformer_small_384` for ``pos_grid_size``."""
    return create_model("iformer_base_384", **kwargs)


def iformer_large_384(**kwargs) -> InceptionTransformer:
    """iFormer-L at 384 (85.8%); see :func:`iformer_small_384` for ``pos_grid_size``."""
    return create_model("iformer_large_384", **kwargs)


def describe_stages(model: InceptionTransformer) -> list[dict]:
    """Per stage: width, blocks, the C_h/C_l split of each block, layer scale, parameters (``iformer-info``)."""
    rows = []
    for index, (embed, pos, blocks) in enumerate(model.stages, start=1):
        rows.append(
            {
                "stage": index,
                "dim": pos.shape[-1],
                "blocks": len(blocks),
                "splits": [(b.attn.high_dim, b.attn.low_dim) for b in blocks],
                "layer_scale": blocks[0].layer_scale_1 is not None,
                "parameters": sum(p.numel() for m in (embed, blocks) for p in m.parameters()) + pos.numel(),
            }
        )
    return rows
