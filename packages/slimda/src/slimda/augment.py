"""Batched image pipelines on the device: random crop + horizontal flip for training, centre crop for evaluation,
both normalised with the ImageNet statistics. Images arrive as uint8 N×3×S×S, decoded once.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Pipeline:
    """``crop`` of the stored ``size`` (crop == size: no crop); ``flip`` random horizontal flips in training."""

    crop: int
    flip: bool = True

    def normalise(self, images: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
        return (images.float() / 255.0 - mean) / std

    def train(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Random crop (one offset per image) and flip, drawn from ``generator`` (a CPU generator)."""
        n, _, height, width = images.shape
        top = torch.randint(height - self.crop + 1, (n,), generator=generator).to(images.device)
        left = torch.randint(width - self.crop + 1, (n,), generator=generator).to(images.device)
        steps = torch.arange(self.crop, device=images.device)
        rows = (top[:, None] + steps)[:, :, None]
        cols = (left[:, None] + steps)[:, None, :]
        if self.flip:
            flipped = (torch.rand(n, generator=generator) < 0.5).to(images.device)
            cols = torch.where(flipped[:, None, None], cols.flip(-1), cols)
        batch = torch.arange(n, device=images.device)[:, None, None]
        out = images.permute(0, 2, 3, 1)[batch, rows, cols]  # N×crop×crop×3
        return self.normalise(out.permute(0, 3, 1, 2))

    def test(self, images: torch.Tensor) -> torch.Tensor:
        height, width = images.shape[-2:]
        top, left = (height - self.crop) // 2, (width - self.crop) // 2
        return self.normalise(images[..., top : top + self.crop, left : left + self.crop])
