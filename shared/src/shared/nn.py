"""Layers that two or more packages' architectures share, with the parameter names of the releases they load."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Mlp(nn.Module):
    """The transformer feed-forward block, Linear(C, H) -> GELU -> Linear(H, C), on channels-last tokens.

    The keys are timm's ``Mlp`` (``fc1``, ``fc2``), which the official MAE and iFormer checkpoints use.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))
