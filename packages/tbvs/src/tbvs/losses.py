"""The TBVS training objective (official ``model/losses.py``, ``LossComputer.compute``).

L = BCE(seg logits, mask) + BCE(tan(pi/2 S_vl), g) + BCE(tan(pi/2 S_fl), g) + BCE(tan(pi/2 S_vf), A), each a
mean, all weights 1: the segmentation loss plus the multi-modal alignment loss of the paper. g is the mask
sampled on the stride-4 grid of the similarity maps (``mask[..., 2::4, 2::4]`` at stride 4) and
A_ij = g_i g_j + (1 - g_i)(1 - g_j), the product of the one-hot [foreground, background] vectors of pixels i, j.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tbvs.models import TBVSOutput

__all__ = ["TBVSLoss", "affinity_targets", "alignment_logits", "grid_targets"]


def alignment_logits(s: torch.Tensor, eps: float = 1e-3) -> torch.Tensor:
    """tan(pi/2 * s): maps a cosine similarity in (-1, 1) to a logit in R (official ``ContrastiveModule``).

    ``s`` is clamped to [-(1 - eps), 1 - eps] first, so |logit| <= tan(pi/2 (1 - eps)) (about 637 at 1e-3);
    the release does not clamp (it multiplies by 3.141592, which keeps s = 1 finite).
    """
    return torch.tan(s.clamp(-1 + eps, 1 - eps) * (math.pi / 2))


def grid_targets(mask: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The mask on a coarser grid by strided sampling: ``mask[..., s/2::s, s/2::s]`` with s = S / grid.

    At 320 -> 80 this is the official ``cls_gt[:, :, 2::4, 2::4]``. ``mask`` (n, 1, S, S) -> (n, 1, h, w).
    """
    h, w = grid
    sy, sx = mask.shape[-2] // h, mask.shape[-1] // w
    if sy * h != mask.shape[-2] or sx * w != mask.shape[-1]:
        raise ValueError(f"mask size {tuple(mask.shape[-2:])} is not a multiple of the grid {grid}")
    return mask[..., sy // 2 :: sy, sx // 2 :: sx].float()


def affinity_targets(g: torch.Tensor, index: torch.Tensor | None = None) -> torch.Tensor:
    """A_ij = [g_i = g_j] from the one-hot [fg, bg] product, (n, P, P) (or (n, K, K) over pixel ``index`` (n, K)).

    ``g`` (n, 1, h, w) in {0, 1}; pixels are numbered row-major, as ``TBVSOutput.vf_index``.
    """
    flat = g.flatten(1).float()
    if index is not None:
        flat = flat.gather(1, index)
    onehot = torch.stack([flat, 1 - flat], dim=-1)
    return onehot @ onehot.transpose(1, 2)


class TBVSLoss(nn.Module):
    """Segmentation + multi-modal alignment loss; returns a dict of the present terms and ``total``.

    Terms: ``seg`` = BCE-with-logits(logits, mask) over the S x S mask; ``vl``, ``fl`` = BCE-with-logits(
    tan(pi/2 S), g); ``vf`` = BCE-with-logits(tan(pi/2 S_vf), A), on the pixels of ``vf_index`` when the model
    subsampled them. Maps the model did not produce (None) contribute nothing.
    """

    def __init__(self, w_seg: float = 1.0, w_vl: float = 1.0, w_fl: float = 1.0, w_vf: float = 1.0, eps: float = 1e-3):
        super().__init__()
        self.weights = {"seg": w_seg, "vl": w_vl, "fl": w_fl, "vf": w_vf}
        self.eps = eps

    def forward(self, output: TBVSOutput, mask: torch.Tensor) -> dict[str, torch.Tensor]:
        """``mask`` (n, 1, S, S) or (n, S, S), {0, 1} (bool or float), the annotated frame's ground truth."""
        if mask.ndim == 3:
            mask = mask[:, None]
        mask = mask.to(output.logits.dtype)
        terms = {"seg": F.binary_cross_entropy_with_logits(output.logits, mask)}
        grid_map = output.s_vl if output.s_vl is not None else output.s_fl
        if grid_map is not None:
            g = grid_targets(mask, tuple(grid_map.shape[-2:]))
            for key, s in (("vl", output.s_vl), ("fl", output.s_fl)):
                if s is not None:
                    terms[key] = F.binary_cross_entropy_with_logits(alignment_logits(s, self.eps), g)
            if output.s_vf is not None:
                target = affinity_targets(g, output.vf_index).to(output.s_vf.dtype)
                terms["vf"] = F.binary_cross_entropy_with_logits(alignment_logits(output.s_vf, self.eps), target)
        terms["total"] = sum(self.weights[k] * v for k, v in terms.items())
        return terms
