"""Text-based video segmentation metrics on A2D / J-HMDB Sentences.

The benchmark of Gavrilyuk et al. (CVPR 2018), as computed by CMPC-V and the TBVS release (``a2d_test.py``):
per sample, the intersection I and union U of the binarised prediction and the ground-truth mask of the
referred actor, IoU = (I + 1e-6) / (U + 1e-6), and

* **Overall IoU** = ΣI / ΣU over the split (favours large objects);
* **Mean IoU** = the mean of the per-sample IoU;
* **Precision@K** = the fraction of samples with IoU ≥ K, K ∈ {0.5, 0.6, 0.7, 0.8, 0.9};
* **mAP** = the mean of Precision@K over K ∈ {0.50, 0.55, …, 0.95}.

That mAP is *not* the COCO mask AP reported by MTTR and ReferFormer (:func:`coco_map`, pycocotools):
the two numbers are not comparable.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Sequence

import numpy as np
import torch

IOU_EPS = 1e-6
PRECISION_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9)
MAP_THRESHOLDS = tuple(round(0.5 + 0.05 * i, 2) for i in range(10))


def intersection_union(pred: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample pixel counts (I, U) of binary masks ``pred``/``target`` of shape (N, ...) (nonzero = foreground).

    A single mask of shape (H, W) counts as one sample. Returns two int64 tensors of shape (N,).
    """
    if pred.shape != target.shape:
        raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
    if pred.dim() == 2:
        pred, target = pred[None], target[None]
    p = pred.reshape(pred.shape[0], -1) != 0
    t = target.reshape(target.shape[0], -1) != 0
    return (p & t).sum(1), (p | t).sum(1)


def _iou(inter: torch.Tensor, union: torch.Tensor) -> torch.Tensor:
    return (inter.double() + IOU_EPS) / (union.double() + IOU_EPS)


class SegMeter:
    """Accumulates per-sample intersections and unions, optionally labelled by a group (e.g. a subset).

    ``update(pred, target, groups)`` takes a batch of binary masks; ``add(inter, union, groups)`` takes counts
    already computed (e.g. gathered from other processes). Every metric accepts ``group=None`` (all samples)
    or a group label. Empty selections give NaN.
    """

    def __init__(self) -> None:
        self._inter: list[torch.Tensor] = []
        self._union: list[torch.Tensor] = []
        self._groups: list[str | None] = []

    def __len__(self) -> int:
        return len(self._groups)

    def update(
        self, pred: torch.Tensor, target: torch.Tensor, groups: str | Sequence[str] | None = None
    ) -> torch.Tensor:
        """Add a batch of (N, ...) binary predictions and targets; returns their per-sample IoU (N,)."""
        inter, union = intersection_union(pred, target)
        self.add(inter, union, groups)
        return _iou(inter, union)

    def add(
        self,
        inter: torch.Tensor | Sequence[int],
        union: torch.Tensor | Sequence[int],
        groups: str | Sequence[str] | None = None,
    ) -> None:
        """Add per-sample intersection and union counts, with one group label per sample (or one for all)."""
        inter = torch.as_tensor(inter, dtype=torch.int64).detach().cpu().reshape(-1)
        union = torch.as_tensor(union, dtype=torch.int64).detach().cpu().reshape(-1)
        if inter.shape != union.shape:
            raise ValueError(f"{inter.numel()} intersections but {union.numel()} unions")
        if bool((inter > union).any()):
            raise ValueError("an intersection exceeds its union")
        n = inter.numel()
        if groups is None or isinstance(groups, str):
            labels = [groups] * n
        else:
            labels = list(groups)
            if len(labels) != n:
                raise ValueError(f"{n} samples but {len(labels)} group labels")
        self._inter.append(inter)
        self._union.append(union)
        self._groups.extend(labels)

    def groups(self) -> list[str]:
        """The group labels seen so far, in first-seen order."""
        return list(dict.fromkeys(g for g in self._groups if g is not None))

    def counts(self, group: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The per-sample (I, U) int64 tensors of ``group`` (all samples when None)."""
        if not self._inter:
            empty = torch.zeros(0, dtype=torch.int64)
            return empty, empty
        inter, union = torch.cat(self._inter), torch.cat(self._union)
        if group is None:
            return inter, union
        keep = torch.tensor([g == group for g in self._groups], dtype=torch.bool)
        return inter[keep], union[keep]

    def ious(self, group: str | None = None) -> torch.Tensor:
        """Per-sample IoU = (I + 1e-6) / (U + 1e-6), float64."""
        return _iou(*self.counts(group))

    def overall_iou(self, group: str | None = None) -> float:
        """ΣI / ΣU (1.0 when every mask and prediction is empty, like the per-sample convention)."""
        inter, union = self.counts(group)
        if inter.numel() == 0:
            return math.nan
        total_u = int(union.sum())
        return int(inter.sum()) / total_u if total_u else 1.0

    def mean_iou(self, group: str | None = None) -> float:
        """The mean of the per-sample IoU."""
        ious = self.ious(group)
        return float(ious.mean()) if ious.numel() else math.nan

    def precision_at(self, k: float, group: str | None = None) -> float:
        """Precision@K: the fraction of samples with IoU ≥ K."""
        ious = self.ious(group)
        return float((ious >= k).double().mean()) if ious.numel() else math.nan

    def precision_table(self, group: str | None = None) -> dict[float, float]:
        """Precision@K for K = 0.5, 0.6, 0.7, 0.8, 0.9."""
        return {k: self.precision_at(k, group) for k in PRECISION_THRESHOLDS}

    def map_mean_precision(self, group: str | None = None) -> float:
        """The A2D-Sentences mAP: mean Precision@K over K = 0.50:0.05:0.95 (Gavrilyuk et al. 2018, CMPC-V)."""
        return sum(self.precision_at(k, group) for k in MAP_THRESHOLDS) / len(MAP_THRESHOLDS)

    def summary(self, group: str | None = None) -> dict[str, float]:
        """The benchmark's 8 numbers: ``P@0.5`` … ``P@0.9``, ``mAP``, ``overall_iou``, ``mean_iou``."""
        out = {f"P@{k}": v for k, v in self.precision_table(group).items()}
        out["mAP"] = self.map_mean_precision(group)
        out["overall_iou"] = self.overall_iou(group)
        out["mean_iou"] = self.mean_iou(group)
        return out

    def summary_by_group(self) -> dict[str, dict[str, float]]:
        """``{"all": summary(), <group>: summary(group), …}`` for every group label seen."""
        return {"all": self.summary(), **{g: self.summary(g) for g in self.groups()}}


def coco_map(
    preds: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    scores: Sequence[float] | None = None,
) -> dict[str, float]:
    """COCO mask AP (pycocotools), the metric of MTTR / ReferFormer: **not comparable** to the A2D mAP above.

    One image per sample with its single ground-truth mask (category 1); each prediction is a binary (H, W)
    mask with a confidence ``scores[i]`` (default 1.0). Returns ``AP``, ``AP50``, ``AP75``, ``AP_small``,
    ``AP_medium``, ``AP_large`` (COCOeval ``stats[:6]``). Needs ``pycocotools``.
    """
    try:
        from pycocotools import mask as mask_utils
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        from shared.errors import UserError

        raise UserError("COCO mask AP needs pycocotools: pip install pycocotools (or use the A2D mAP)") from exc
    if len(preds) != len(targets):
        raise ValueError(f"{len(preds)} predictions but {len(targets)} targets")
    scores = [1.0] * len(preds) if scores is None else list(scores)

    def rle(mask: torch.Tensor) -> dict:
        enc = mask_utils.encode(np.asfortranarray(mask.detach().cpu().numpy().astype(np.uint8)))
        enc["counts"] = enc["counts"].decode("ascii")
        return enc

    images, anns, dets = [], [], []
    for i, (p, t, s) in enumerate(zip(preds, targets, scores, strict=True)):
        h, w = t.shape[-2:]
        images.append({"id": i, "height": int(h), "width": int(w)})
        gt = rle(t != 0)
        anns.append(
            {
                "id": i + 1,
                "image_id": i,
                "category_id": 1,
                "segmentation": gt,
                "area": float(mask_utils.area(gt)),
                "bbox": [float(v) for v in mask_utils.toBbox(gt)],
                "iscrowd": 0,
            }
        )
        dets.append({"image_id": i, "category_id": 1, "segmentation": rle(p != 0), "score": float(s)})
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1, "name": "actor"}]}
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(dets)
        ev = COCOeval(coco_gt, coco_dt, iouType="segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    names = ("AP", "AP50", "AP75", "AP_small", "AP_medium", "AP_large")
    return {n: float(v) for n, v in zip(names, ev.stats[:6], strict=True)}
