"""ROIAlign on one feature map as two small matrix products: the same bilinear samples as torchvision's
``roi_align(sampling_ratio=1)``, with a backward that is matrix products too.

torchvision's CPU ``roi_align`` backward scatters every sample's gradient in a single-threaded loop, and
``grid_sample``'s backward does the same: on the tiny CPU detector either was 15-22% of an adaptation step
(2 threads). With one sample per bin, ROIAlign reads the feature map bilinearly at each bin centre, and a
bilinear read is separable: the S x S samples of a box are ``Wy @ F @ Wx^T``, where row i of ``Wy`` (S x H)
holds the two vertical interpolation weights of bin row i and ``Wx`` (S x W) the horizontal ones. One
``einsum`` pair per image computes every box, and autograd's backward is the transposed products.

Inside the map this equals ROIAlign to float precision; a sample more than one pixel outside the map reads the
border here (coordinates clamped to the map, as ``grid_sample``'s ``padding_mode="border"``) where ROIAlign
reads 0, which only boxes reaching past the image can hit.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def bilinear_weights(coords: Tensor, size: int) -> Tensor:
    """(..., size) weights of bilinear reads at pixel-centre coordinates ``coords`` (clamped to [0, size - 1])."""
    coords = coords.clamp(0, size - 1)
    low = coords.floor()
    frac = coords - low
    low = low.long()
    high = (low + 1).clamp(max=size - 1)
    return (
        F.one_hot(low, size).to(coords.dtype) * (1 - frac)[..., None]
        + F.one_hot(high, size).to(coords.dtype) * frac[..., None]
    )


class SeparableRoIAlign(nn.Module):
    """A drop-in for ``MultiScaleRoIAlign([name], output_size, sampling_ratio=1)`` on a single feature map.

    ``aligned=False`` (torchvision's default) samples bin centres at ``x1 * scale + (i + 0.5) * bin_w``;
    ``aligned=True`` (detectron2's ROIAlignV2) shifts them by -0.5 pixel.
    """

    def __init__(self, featmap_name: str, output_size: int, *, aligned: bool = False) -> None:
        super().__init__()
        self.featmap_name = featmap_name
        self.output_size = output_size
        self.aligned = aligned

    def forward(
        self, features: dict[str, Tensor], proposals: list[Tensor], image_shapes: list[tuple[int, int]]
    ) -> Tensor:
        feature = features[self.featmap_name]
        height, width = feature.shape[-2:]
        scale = self._scale(feature, image_shapes)
        steps = (torch.arange(self.output_size, device=feature.device, dtype=feature.dtype) + 0.5) / self.output_size
        outputs = []
        for index, boxes in enumerate(proposals):
            boxes = boxes.detach().to(feature.dtype) * scale - (0.5 if self.aligned else 0.0)
            x = boxes[:, 0:1] + (boxes[:, 2:3] - boxes[:, 0:1]).clamp(min=0 if self.aligned else 1) * steps
            y = boxes[:, 1:2] + (boxes[:, 3:4] - boxes[:, 1:2]).clamp(min=0 if self.aligned else 1) * steps
            rows = torch.einsum("rih,chw->rciw", bilinear_weights(y, height), feature[index])
            outputs.append(torch.einsum("rciw,rjw->rcij", rows, bilinear_weights(x, width)))
        return (
            torch.cat(outputs)
            if outputs
            else feature.new_zeros((0, feature.shape[1], self.output_size, self.output_size))
        )

    @staticmethod
    def _scale(feature: Tensor, image_shapes: list[tuple[int, int]]) -> float:
        """The feature map's scale, inferred as ``MultiScaleRoIAlign`` does (a power of 2 of height ratios)."""
        approx = feature.shape[-2] / max(s[0] for s in image_shapes)
        return 2.0 ** round(math.log2(approx))
