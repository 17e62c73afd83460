"""Learnable anchors (the anchor adaptation of Probabilistic Teacher, Chen et al., ICML 2022).

The official code makes every anchor's (w, h) an ``nn.Parameter``. In the supervised branch and the teacher
pass the anchors are blocked (identity forward, zero gradient); in the unsupervised branch they are not, and
their only gradient path is the teacher-implied RPN target mu_p = encode(anchor -> pseudo box) inside the
localisation KL, so anchors move to where the student's predicted Gaussians agree with the teacher on target
data. Here blocking is a detach (gradient ``None`` instead of zero), switched by :meth:`gradient`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import Tensor, nn
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from shared.errors import UserError

__all__ = ["LearnableAnchorGenerator", "initial_anchor_wh"]


def initial_anchor_wh(sizes: Sequence[float], aspect_ratios: Sequence[float]) -> Tensor:
    """(A, 2) anchor widths and heights, w = s / sqrt(r), h = s * sqrt(r) with r = h / w, NOT rounded.

    The order is torchvision's (ratio-major, size-minor), so the cell anchors equal
    ``AnchorGenerator.generate_anchors`` up to its rounding.
    """
    if not sizes or not aspect_ratios or min(sizes) <= 0 or min(aspect_ratios) <= 0:
        raise UserError(f"anchor sizes and aspect ratios must be non-empty and > 0, got {sizes} and {aspect_ratios}")
    s = torch.as_tensor(sizes, dtype=torch.float64)
    r = torch.as_tensor(aspect_ratios, dtype=torch.float64).sqrt()
    w = (s[None, :] / r[:, None]).reshape(-1)
    h = (s[None, :] * r[:, None]).reshape(-1)
    return torch.stack([w, h], dim=1).float()


class LearnableAnchorGenerator(AnchorGenerator):
    """torchvision ``AnchorGenerator`` whose cell anchors [-w/2, -h/2, w/2, h/2] come from parameters.

    ``anchor_wh[l]`` is an (A_l, 2) ``nn.Parameter`` of level l, initialised by :func:`initial_anchor_wh`.
    Anchors are detached unless :attr:`grad_enabled` is set (use ``with gen.gradient(True): ...``); the
    detector enables it only in its ``"unsupervised"`` mode. ``learnable=False`` freezes the parameters
    (``requires_grad=False``) but keeps them in the state dict, so the EMA and checkpoints are uniform.
    Shifts use offset 0 on the stride grid, as both torchvision and the official config (OFFSET 0.0).
    """

    def __init__(
        self,
        sizes: Sequence[Sequence[float]] = ((128, 256, 512),),
        aspect_ratios: Sequence[Sequence[float]] = ((0.5, 1.0, 2.0),),
        learnable: bool = True,
    ) -> None:
        nn.Module.__init__(self)
        if not isinstance(sizes[0], (list, tuple)):
            sizes = tuple((s,) for s in sizes)
        if not isinstance(aspect_ratios[0], (list, tuple)):
            aspect_ratios = (aspect_ratios,) * len(sizes)
        if len(sizes) != len(aspect_ratios):
            raise UserError(
                f"anchor sizes give {len(sizes)} feature levels but aspect ratios {len(aspect_ratios)}: "
                "give one tuple of each per level"
            )
        self.sizes = tuple(tuple(s) for s in sizes)
        self.aspect_ratios = tuple(tuple(a) for a in aspect_ratios)
        self.anchor_wh = nn.ParameterList(
            [
                nn.Parameter(initial_anchor_wh(s, a), requires_grad=learnable)
                for s, a in zip(sizes, aspect_ratios, strict=True)
            ]
        )
        self.grad_enabled = False

    @contextmanager
    def gradient(self, enabled: bool) -> Iterator[None]:
        """Context in which anchors carry gradient (``enabled=True``) or are detached (``False``)."""
        previous = self.grad_enabled
        self.grad_enabled = enabled
        try:
            yield
        finally:
            self.grad_enabled = previous

    @property
    def cell_anchors(self) -> list[Tensor]:  # type: ignore[override]
        """Zero-centred (A_l, 4) anchors per level, detached unless gradient is enabled."""
        cells = []
        for wh in self.anchor_wh:
            half = (wh if self.grad_enabled else wh.detach()) / 2
            cells.append(torch.cat([-half, half], dim=1))
        return cells

    def num_anchors_per_location(self) -> list[int]:
        return [wh.shape[0] for wh in self.anchor_wh]

    def mean_anchor_area(self) -> float:
        """Mean w*h over all anchors (to follow anchor adaptation)."""
        return float(torch.cat([wh.detach().prod(dim=1) for wh in self.anchor_wh]).mean())

    def forward(self, image_list: ImageList, feature_maps: list[Tensor]) -> list[Tensor]:
        """Anchors (sum_l H_l W_l A_l, 4) per image (location-major, anchor-minor, as torchvision)."""
        if len(feature_maps) != len(self.anchor_wh):
            raise UserError(
                f"the backbone gives {len(feature_maps)} feature maps but anchors are defined for "
                f"{len(self.anchor_wh)} levels: give one anchor size tuple per feature map"
            )
        image_h, image_w = image_list.tensors.shape[-2:]
        dtype, device = feature_maps[0].dtype, feature_maps[0].device
        per_level = []
        for cell, fmap in zip(self.cell_anchors, feature_maps, strict=True):
            grid_h, grid_w = fmap.shape[-2:]
            shifts_x = torch.arange(grid_w, dtype=dtype, device=device) * (image_w // grid_w)
            shifts_y = torch.arange(grid_h, dtype=dtype, device=device) * (image_h // grid_h)
            shift_y, shift_x = torch.meshgrid(shifts_y, shifts_x, indexing="ij")
            shifts = torch.stack([shift_x, shift_y, shift_x, shift_y], dim=-1).reshape(-1, 1, 4)
            per_level.append((shifts + cell.to(dtype=dtype, device=device)[None]).reshape(-1, 4))
        anchors = torch.cat(per_level)
        return [anchors] * len(image_list.image_sizes)
