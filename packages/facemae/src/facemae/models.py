"""The networks of FaceMAE: the masked autoencoder, the IResNet face encoder and the margin head.

``MaskedAutoencoderViT`` follows facebookresearch/mae ``models_mae.py`` (He et al., "Masked Autoencoders
Are Scalable Vision Learners", CVPR 2022) with its ViT blocks written here instead of taken from timm;
``IResNet`` follows insightface ``recognition/arcface_torch/backbones/iresnet.py``. State-dict names,
order and shapes equal those releases, so their checkpoints load by name.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from facemae.losses import LOSS_ON, margin_softmax_loss, reconstruction_loss
from shared.errors import UserError
from shared.nn import Mlp

__all__ = [
    "COMPOSE_MODES",
    "IRESNET_CONFIGS",
    "MAE_CONFIGS",
    "MARGINS",
    "IResNet",
    "MarginHead",
    "MaskedAutoencoderViT",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet_mini",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch8",
    "mae_vit_tiny_patch4",
]

# --- masked autoencoder -----------------------------------------------------------------------------------------

#: Builder -> sizes. base/large/huge are the official ``*_dec512d8b`` models; small and tiny are this
#: package's 112x112 (patch 8) and 32x32 (patch 4) face models.
MAE_CONFIGS: dict[str, dict[str, int]] = {
    "mae_vit_base_patch16": dict(img_size=224, patch_size=16, embed_dim=768, depth=12, num_heads=12,
                                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    "mae_vit_large_patch16": dict(img_size=224, patch_size=16, embed_dim=1024, depth=24, num_heads=16,
                                  decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    "mae_vit_huge_patch14": dict(img_size=224, patch_size=14, embed_dim=1280, depth=32, num_heads=16,
                                 decoder_embed_dim=512, decoder_depth=8, decoder_num_heads=16),
    "mae_vit_small_patch8": dict(img_size=112, patch_size=8, embed_dim=384, depth=12, num_heads=6,
                                 decoder_embed_dim=256, decoder_depth=4, decoder_num_heads=8),
    "mae_vit_tiny_patch4": dict(img_size=32, patch_size=4, embed_dim=128, depth=4, num_heads=4,
                                decoder_embed_dim=64, decoder_depth=2, decoder_num_heads=4),
}  # fmt: skip

#: How a reconstruction is composed: ``paste`` keeps the visible input patches, ``pred`` takes every patch
#: from the decoder.
COMPOSE_MODES = ("paste", "pred")


def sincos_pos_embed(dim: int, grid_size: int) -> torch.Tensor:
    """Fixed 2-D sin-cos positions with a zero class-token row, (1 + grid_size**2, dim).

    ``get_2d_sincos_pos_embed`` of ``util/pos_embed.py`` in facebookresearch/mae: the first half of the
    channels encodes the column, the second half the row, each as [sin, cos] of 1/10000^(2k/(dim/2)).
    """
    if dim % 4:
        raise ValueError(f"sin-cos positions need a width divisible by 4, got {dim}")
    omega = 1.0 / 10000 ** (torch.arange(dim // 4, dtype=torch.float64, device="cpu") / (dim / 4))
    coords = torch.arange(grid_size, dtype=torch.float64, device="cpu")
    rows, cols = torch.meshgrid(coords, coords, indexing="ij")

    def encode(pos: torch.Tensor) -> torch.Tensor:
        angles = pos.reshape(-1, 1) * omega
        return torch.cat([angles.sin(), angles.cos()], dim=1)

    grid = torch.cat([encode(cols), encode(rows)], dim=1)
    return torch.cat([grid.new_zeros(1, dim), grid]).float()


class PatchEmbed(nn.Module):
    """Non-overlapping p x p patches -> tokens by one strided convolution (timm's ``PatchEmbed``)."""

    def __init__(self, img_size: int, patch_size: int, in_chans: int, embed_dim: int) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"image size {img_size} is not a multiple of the patch size {patch_size}")
        self.img_size = img_size
        self.patch_size = patch_size
        self.grid_size = img_size // patch_size
        self.num_patches = self.grid_size**2
        self.proj = nn.Conv2d(in_chans, embed_dim, patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (self.img_size, self.img_size):
            raise ValueError(f"expected {self.img_size}x{self.img_size} images, got {tuple(x.shape[-2:])}")
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm ``Attention``, scale head_dim**-0.5)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, dim * 3)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, dim = x.shape
        q, k, v = self.qkv(x).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block: x + Attn(LN(x)), then x + MLP(LN(x)) (timm ``Block``, LayerNorm eps 1e-6)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float = 4.0) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class MaskedAutoencoderViT(nn.Module):
    """Masked autoencoder with a ViT encoder over the visible patches and a light decoder over all of them.

    Calling it returns ``(loss, pred, mask)`` like ``MaskedAutoencoderViT.forward`` of ``models_mae.py``:
    ``pred`` (B, N, p*p*3) the decoder's patches, ``mask`` (B, N) with 1 on masked patches. ``loss_on``
    is ``masked`` (MAE's loss) or ``all``; ``norm_pix_loss`` (per-patch normalised targets) is off by
    default, since a face released from normalised patches would need each patch's true statistics.
    """

    def __init__(
        self,
        img_size: int = 224,
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 1024,
        depth: int = 24,
        num_heads: int = 16,
        decoder_embed_dim: int = 512,
        decoder_depth: int = 8,
        decoder_num_heads: int = 16,
        mlp_ratio: float = 4.0,
        norm_pix_loss: bool = False,
        loss_on: str = "masked",
    ) -> None:
        super().__init__()
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, embed_dim)
        num_tokens = self.patch_embed.num_patches + 1
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim), requires_grad=False)
        self.blocks = nn.ModuleList(Block(embed_dim, num_heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(embed_dim, decoder_embed_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_pos_embed = nn.Parameter(torch.zeros(1, num_tokens, decoder_embed_dim), requires_grad=False)
        self.decoder_blocks = nn.ModuleList(
            Block(decoder_embed_dim, decoder_num_heads, mlp_ratio) for _ in range(decoder_depth)
        )
        self.decoder_norm = nn.LayerNorm(decoder_embed_dim, eps=1e-6)
        self.decoder_pred = nn.Linear(decoder_embed_dim, patch_size**2 * in_chans)
        self.in_chans = in_chans
        self.norm_pix_loss = norm_pix_loss
        self.loss_on = loss_on
        if loss_on not in LOSS_ON:
            raise UserError(f"loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """The official initialisation: sin-cos positions, xavier-uniform linears and patch projection."""
        grid = self.patch_embed.grid_size
        self.pos_embed.data.copy_(sincos_pos_embed(self.pos_embed.shape[-1], grid)[None])
        self.decoder_pos_embed.data.copy_(sincos_pos_embed(self.decoder_pos_embed.shape[-1], grid)[None])
        weight = self.patch_embed.proj.weight.data
        nn.init.xavier_uniform_(weight.view(weight.shape[0], -1))
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_token, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    @property
    def num_patches(self) -> int:
        return self.patch_embed.num_patches

    def patchify(self, images: torch.Tensor) -> torch.Tensor:
        """(B, C, H, W) -> (B, N, p*p*C), each patch in (row, column, channel) order as in ``models_mae.py``."""
        p, grid = self.patch_embed.patch_size, self.patch_embed.grid_size
        x = images.reshape(images.shape[0], self.in_chans, grid, p, grid, p)
        return torch.einsum("nchpwq->nhwpqc", x).reshape(images.shape[0], grid * grid, p * p * self.in_chans)

    def unpatchify(self, patches: torch.Tensor) -> torch.Tensor:
        """(B, N, p*p*C) -> (B, C, H, W), the inverse of :meth:`patchify`."""
        p, grid = self.patch_embed.patch_size, self.patch_embed.grid_size
        x = patches.reshape(patches.shape[0], grid, grid, p, p, self.in_chans)
        return torch.einsum("nhwpqc->nchpwq", x).reshape(patches.shape[0], self.in_chans, grid * p, grid * p)

    def random_masking(
        self, x: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample shuffle masking: keep the int(N*(1 - ratio)) patches of lowest noise.

        Returns the visible tokens, the mask (1 = masked) in the original order, and ``ids_restore``, the
        inverse permutation that un-shuffles the decoder's tokens. ``noise`` (B, N) replaces the uniform
        draw (from ``generator`` when given), so a masking can be replayed.
        """
        if not 0 <= mask_ratio < 1:
            raise UserError(f"mask ratio must be in [0, 1), got {mask_ratio}")
        batch, length, dim = x.shape
        if noise is None:
            noise = torch.rand(batch, length, generator=generator, device=x.device)
        elif noise.shape != (batch, length):
            raise ValueError(f"noise must be ({batch}, {length}), got {tuple(noise.shape)}")
        keep = int(length * (1 - mask_ratio))
        ids_shuffle = torch.argsort(noise, dim=1)
        ids_restore = torch.argsort(ids_shuffle, dim=1)
        visible = torch.gather(x, 1, ids_shuffle[:, :keep, None].expand(-1, -1, dim))
        mask = torch.ones(batch, length, device=x.device)
        mask[:, :keep] = 0
        return visible, torch.gather(mask, 1, ids_restore), ids_restore

    def forward_encoder(
        self, images: torch.Tensor, mask_ratio: float, noise: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Embed, mask, and encode the class token with the visible patches only."""
        x = self.patch_embed(images) + self.pos_embed[:, 1:]
        x, mask, ids_restore = self.random_masking(x, mask_ratio, noise, generator)
        cls = (self.cls_token + self.pos_embed[:, :1]).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        for block in self.blocks:
            x = block(x)
        return self.norm(x), mask, ids_restore

    def forward_decoder(self, latent: torch.Tensor, ids_restore: torch.Tensor) -> torch.Tensor:
        """Insert mask tokens, un-shuffle, decode, and predict the pixels of every patch (class token dropped)."""
        x = self.decoder_embed(latent)
        hidden = x.shape[-1]
        mask_tokens = self.mask_token.expand(x.shape[0], ids_restore.shape[1] + 1 - x.shape[1], -1)
        tokens = torch.cat([x[:, 1:], mask_tokens], dim=1)
        tokens = torch.gather(tokens, 1, ids_restore[..., None].expand(-1, -1, hidden))
        x = torch.cat([x[:, :1], tokens], dim=1) + self.decoder_pos_embed
        for block in self.decoder_blocks:
            x = block(x)
        return self.decoder_pred(self.decoder_norm(x))[:, 1:]

    def forward_loss(self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """MSE between predicted and true patches (normalised per patch with ``norm_pix_loss``)."""
        target = self.patchify(images)
        if self.norm_pix_loss:
            target = (target - target.mean(-1, keepdim=True)) / (target.var(-1, keepdim=True) + 1e-6) ** 0.5
        return reconstruction_loss(pred, target, mask, self.loss_on)

    def forward(
        self, images: torch.Tensor, mask_ratio: float = 0.75, noise: torch.Tensor | None = None, generator=None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        latent, mask, ids_restore = self.forward_encoder(images, mask_ratio, noise, generator)
        pred = self.forward_decoder(latent, ids_restore)
        return self.forward_loss(images, pred, mask), pred, mask

    def compose(
        self, images: torch.Tensor, pred: torch.Tensor, mask: torch.Tensor, mode: str = "paste"
    ) -> torch.Tensor:
        """The released image: masked patches from ``pred`` and visible ones from ``images`` (``paste``, the
        MAE visualisation), or every patch from ``pred`` (``pred``). Differentiable in ``pred``."""
        if mode not in COMPOSE_MODES:
            raise UserError(f"compose must be one of {', '.join(COMPOSE_MODES)}, got {mode!r}")
        if self.norm_pix_loss:
            raise UserError("a norm_pix_loss model predicts normalised patches, not images: train with it off")
        if mode == "pred":
            return self.unpatchify(pred)
        return self.unpatchify(torch.lerp(self.patchify(images), pred, mask[..., None]))

    @torch.no_grad()
    def reconstruct(
        self, images: torch.Tensor, mask_ratio: float = 0.75, generator=None, compose: str = "paste"
    ) -> torch.Tensor:
        """Mask ``images`` at random (from ``generator``), decode, and compose the reconstructions."""
        _, pred, mask = self(images, mask_ratio, generator=generator)
        return self.compose(images, pred, mask, compose)


def _mae(name: str, **kwargs) -> MaskedAutoencoderViT:
    return MaskedAutoencoderViT(**{**MAE_CONFIGS[name], **kwargs})


def mae_vit_base_patch16(**kwargs) -> MaskedAutoencoderViT:
    """ViT-B/16 MAE (official ``mae_vit_base_patch16_dec512d8b``), 224x224."""
    return _mae("mae_vit_base_patch16", **kwargs)


def mae_vit_large_patch16(**kwargs) -> MaskedAutoencoderViT:
    """ViT-L/16 MAE (official ``mae_vit_large_patch16_dec512d8b``), 224x224."""
    return _mae("mae_vit_large_patch16", **kwargs)


def mae_vit_huge_patch14(**kwargs) -> MaskedAutoencoderViT:
    """ViT-H/14 MAE (official ``mae_vit_huge_patch14_dec512d8b``), 224x224."""
    return _mae("mae_vit_huge_patch14", **kwargs)


def mae_vit_small_patch8(**kwargs) -> MaskedAutoencoderViT:
    """The ``small`` face MAE: 112x112 faces, patch 8 (196 tokens), encoder 384/12/6, decoder 256/4/8."""
    return _mae("mae_vit_small_patch8", **kwargs)


def mae_vit_tiny_patch4(**kwargs) -> MaskedAutoencoderViT:
    """The ``demo`` face MAE: 32x32 faces, patch 4 (64 tokens), encoder 128/4/4, decoder 64/2/4."""
    return _mae("mae_vit_tiny_patch4", **kwargs)


# --- IResNet face encoder --------------------------------------------------------------------------------------

#: Builder -> units per stage, stage widths and input size (arcface_torch's iresnet18/34/50/100, and this
#: package's mini network for 32x32 faces).
IRESNET_CONFIGS: dict[str, dict] = {
    "iresnet18": dict(layers=(2, 2, 2, 2), widths=(64, 128, 256, 512), input_size=112),
    "iresnet34": dict(layers=(3, 4, 6, 3), widths=(64, 128, 256, 512), input_size=112),
    "iresnet50": dict(layers=(3, 4, 14, 3), widths=(64, 128, 256, 512), input_size=112),
    "iresnet100": dict(layers=(3, 13, 30, 3), widths=(64, 128, 256, 512), input_size=112),
    "iresnet_mini": dict(layers=(1, 1, 1, 1), widths=(32, 64, 128, 256), input_size=32),
}


class IBasicBlock(nn.Module):
    """Improved residual unit BN -> conv3x3 -> BN -> PReLU -> conv3x3(stride) -> BN, plus the shortcut."""

    def __init__(self, inplanes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.conv1 = nn.Conv2d(inplanes, planes, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes, eps=1e-5)
        self.prelu = nn.PReLU(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes, eps=1e-5)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes, eps=1e-5)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn3(self.conv2(self.prelu(self.bn2(self.conv1(self.bn1(x))))))
        return out + (x if self.downsample is None else self.downsample(x))


class IResNet(nn.Module):
    """IResNet face encoder (Duta et al. 2020; arcface_torch ``IResNet``): stem, four stride-2 stages,
    then BN -> dropout -> FC -> BN to a ``num_features`` embedding (not normalised)."""

    def __init__(
        self,
        layers: tuple[int, int, int, int],
        widths: tuple[int, int, int, int] = (64, 128, 256, 512),
        input_size: int = 112,
        num_features: int = 512,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if input_size % 16:
            raise ValueError(f"IResNet input size must be a multiple of 16, got {input_size}")
        self.input_size = input_size
        self.conv1 = nn.Conv2d(3, widths[0], 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0], eps=1e-5)
        self.prelu = nn.PReLU(widths[0])
        inplanes = widths[0]
        for index, (units, planes) in enumerate(zip(layers, widths, strict=True), start=1):
            stage = [IBasicBlock(inplanes, planes, stride=2)] + [IBasicBlock(planes, planes) for _ in range(units - 1)]
            self.add_module(f"layer{index}", nn.Sequential(*stage))
            inplanes = planes
        self.bn2 = nn.BatchNorm2d(inplanes, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(inplanes * (input_size // 16) ** 2, num_features)
        self.features = nn.BatchNorm1d(num_features, eps=1e-5)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.normal_(module.weight, 0, 0.1)
        nn.init.ones_(self.features.weight)
        self.features.weight.requires_grad = False  # as released: the embedding BN learns its shift only

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.prelu(self.bn1(self.conv1(x)))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        x = self.dropout(torch.flatten(self.bn2(x), 1))
        return self.features(self.fc(x))


def _iresnet(name: str, **kwargs) -> IResNet:
    return IResNet(**{**IRESNET_CONFIGS[name], **kwargs})


def iresnet18(**kwargs) -> IResNet:
    """IResNet-18 (units 2/2/2/2) for 112x112 faces."""
    return _iresnet("iresnet18", **kwargs)


def iresnet34(**kwargs) -> IResNet:
    """IResNet-34 (units 3/4/6/3) for 112x112 faces."""
    return _iresnet("iresnet34", **kwargs)


def iresnet50(**kwargs) -> IResNet:
    """IResNet-50 (units 3/4/14/3) for 112x112 faces."""
    return _iresnet("iresnet50", **kwargs)


def iresnet100(**kwargs) -> IResNet:
    """IResNet-100 (units 3/13/30/3) for 112x112 faces."""
    return _iresnet("iresnet100", **kwargs)


def iresnet_mini(**kwargs) -> IResNet:
    """The ``demo`` face encoder: one unit per stage, widths 32/64/128/256, 32x32 faces."""
    return _iresnet("iresnet_mini", **kwargs)


# --- margin head ------------------------------------------------------------------------------------------------

#: Margin family -> (m1, m2, m3) of the combined margin cos(m1*theta + m2) - m3 (arcface_torch configs).
MARGINS: dict[str, tuple[float, float, float]] = {"arcface": (1.0, 0.5, 0.0), "cosface": (1.0, 0.0, 0.4)}


class MarginHead(nn.Module):
    """Class centres for a margin softmax: ``self(embeddings)`` is cos(theta) (B, C) between normalised
    embeddings and normalised centres; :meth:`loss` adds the combined margin and takes the cross-entropy,
    as arcface_torch's ``PartialFC_V2``. ``margin`` names a family of :data:`MARGINS` or gives the
    combined margin (m1, m2, m3) itself."""

    def __init__(
        self,
        embedding_size: int,
        num_classes: int,
        margin: str | tuple[float, float, float] = "arcface",
        s: float = 64.0,
    ) -> None:
        super().__init__()
        if isinstance(margin, str):
            if margin not in MARGINS:
                raise UserError(f"margin must be one of {', '.join(MARGINS)} or (m1, m2, m3), got {margin!r}")
            margin = MARGINS[margin]
        self.s = float(s)
        self.margins = tuple(float(m) for m in margin)
        self.weight = nn.Parameter(torch.empty(num_classes, embedding_size).normal_(0, 0.01))

    def forward(self, embeddings: torch.Tensor) -> torch.Tensor:
        return F.linear(F.normalize(embeddings, dim=1), F.normalize(self.weight, dim=1)).clamp(-1, 1)

    def loss(self, embeddings: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The margin softmax loss of a batch of embeddings and their class labels."""
        return margin_softmax_loss(self(embeddings), labels, self.s, *self.margins)
