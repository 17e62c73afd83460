"""Detection metrics: Pascal VOC AP (as detectron2's ``PascalVOCDetectionEvaluator``) and COCO mAP (pycocotools).

The official code evaluates with detectron2's Pascal VOC evaluator on splits registered as year 2012, i.e.
all-point (area) AP at IoU 0.5; its "AP50" is the reported number. Values here are fractions in [0, 1]
(detectron2 prints percentages).

Box conventions: detectron2 adds 1 to the detections' xmin/ymin and compares them with the raw 1-based XML
boxes under the "+1 pixel" IoU convention. The VOC reader of this package subtracts 1 from the XML xmin/ymin,
so in its coordinates that chain equals the plain IoU (``plus_one=False``, the default); ``plus_one=True``
applies the +1 convention to the boxes as given (the VOC devkit on raw 1-based boxes).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Mapping, Sequence

import numpy as np
import torch

from shared.errors import UserError

__all__ = ["coco_map", "evaluate_detections", "voc_ap"]


def voc_ap(recall: np.ndarray, precision: np.ndarray, use_07: bool = False) -> float:
    """Area under the precision/recall curve, as the VOC devkit (``voc_ap`` of detectron2 / py-faster-rcnn).

    All-point: the area under the monotone (right-to-left maximum) precision envelope, recall padded with 0 and
    1. ``use_07``: the VOC2007 11-point interpolation, mean over t in {0, 0.1, ..., 1} of max precision at
    recall >= t (0 where recall never reaches t), thresholds from ``np.arange(0, 1.1, 0.1)`` as the devkit.
    """
    recall = np.asarray(recall, dtype=np.float64)
    precision = np.asarray(precision, dtype=np.float64)
    if use_07:
        thresholds = np.arange(0.0, 1.1, 0.1)
        reached = recall[None, :] >= thresholds[:, None]
        best = np.where(reached, precision[None, :], 0.0).max(axis=1, initial=0.0)
        return float(best.sum() / 11.0)
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    change = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[change + 1] - mrec[change]) * mpre[change + 1]))


def _numpy(value, dtype, shape_tail=()) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype).reshape((-1, *shape_tail))


def _iou(a: np.ndarray, b: np.ndarray, plus_one: bool) -> np.ndarray:
    """Pairwise IoU (n, m) of xyxy boxes; ``plus_one`` counts pixels inclusively (width = x2 - x1 + 1)."""
    one = 1.0 if plus_one else 0.0
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + one
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + one
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    area_a = (a[:, 2] - a[:, 0] + one) * (a[:, 3] - a[:, 1] + one)
    area_b = (b[:, 2] - b[:, 0] + one) * (b[:, 3] - b[:, 1] + one)
    union = area_a[:, None] + area_b[None, :] - inter
    return inter / np.maximum(union, np.finfo(np.float64).eps)


def _check_labels(labels: np.ndarray, num_classes: int, what: str, index: int) -> None:
    if labels.size and (labels.min() < 1 or labels.max() > num_classes):
        raise UserError(
            f"{what} of image {index} has labels outside 1..{num_classes}: pass 1-based class ids of class_names"
        )


def _gather(detections, ground_truths, class_names):
    """Concatenate all images: per detection its score, label and best same-class GT (IoU, global index)."""
    if len(detections) != len(ground_truths):
        raise UserError(
            f"got {len(detections)} detection entries for {len(ground_truths)} ground truths: pass one per image"
        )
    num_classes = len(class_names)
    images = []
    for i, (det, gt) in enumerate(zip(detections, ground_truths, strict=True)):
        gt_boxes = _numpy(gt["boxes"], np.float64, (4,))
        gt_labels = _numpy(gt["labels"], np.int64)
        difficult = gt.get("difficult")
        difficult = np.zeros(len(gt_labels), bool) if difficult is None else _numpy(difficult, bool)
        boxes = _numpy(det["boxes"], np.float64, (4,))
        scores = _numpy(det["scores"], np.float64)
        labels = _numpy(det["labels"], np.int64)
        if not (len(boxes) == len(scores) == len(labels)) or not (len(gt_boxes) == len(gt_labels) == len(difficult)):
            raise UserError(f"image {i}: boxes, scores/labels and difficult must have the same length")
        _check_labels(gt_labels, num_classes, "ground truth", i)
        _check_labels(labels, num_classes, "detections", i)
        images.append((boxes, scores, labels, gt_boxes, gt_labels, difficult))
    return images


def evaluate_detections(
    detections: Sequence[Mapping],
    ground_truths: Sequence[Mapping],
    class_names: Sequence[str],
    iou_threshold: float = 0.5,
    use_07: bool = False,
    plus_one: bool = False,
) -> dict:
    """Pascal VOC AP per class and their mean, as detectron2's ``voc_eval`` (the official code's evaluator).

    ``detections`` / ``ground_truths``: one dict per image, {"boxes" (n, 4) xyxy, "scores" (n,), "labels" (n,)}
    and {"boxes", "labels", optional "difficult" (n,) bool}, tensors or arrays, labels 1..K of ``class_names``.
    Per class, detections of all images are ranked by descending score (stable on ties). A detection whose
    best-overlapping same-class GT of its image has IoU > ``iou_threshold`` (strict, as the devkit) is a true
    positive if that GT is unmatched, a false positive if a higher-ranked detection already took it, and neither
    if the GT is difficult; otherwise it is a false positive. Recall counts non-difficult GTs only.

    Returns {"AP50": mean AP over classes with at least one non-difficult GT (None if there is none),
    "per_class": {name: AP, or None for a class without non-difficult GT}}.
    """
    images = _gather(detections, ground_truths, class_names)
    scores, labels, best_iou, best_gt, gt_difficult, gt_labels = [], [], [], [], [], []
    offset = 0
    for boxes, sc, lab, gt_boxes, gt_lab, diff in images:
        iou = _iou(boxes, gt_boxes, plus_one)
        iou[lab[:, None] != gt_lab[None, :]] = -1.0
        if gt_boxes.shape[0]:
            best_gt.append(iou.argmax(axis=1) + offset)
            best_iou.append(iou.max(axis=1))
        else:
            best_gt.append(np.zeros(len(boxes), np.int64))
            best_iou.append(np.full(len(boxes), -1.0))
        scores.append(sc)
        labels.append(lab)
        gt_labels.append(gt_lab)
        gt_difficult.append(diff)
        offset += len(gt_lab)
    scores, labels = np.concatenate(scores), np.concatenate(labels)
    best_iou, best_gt = np.concatenate(best_iou), np.concatenate(best_gt)
    gt_labels, gt_difficult = np.concatenate(gt_labels), np.concatenate(gt_difficult)

    per_class = {}
    for c, name in enumerate(class_names, start=1):
        npos = int(np.sum((gt_labels == c) & ~gt_difficult))
        if npos == 0:
            per_class[name] = None
            continue
        idx = np.flatnonzero(labels == c)
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        matched = best_iou[idx] > iou_threshold
        gt_of = best_gt[idx]
        ignored = matched & gt_difficult[gt_of]
        candidate = matched & ~ignored
        tp = np.zeros(len(idx), bool)
        _, first = np.unique(gt_of[candidate], return_index=True)
        tp[np.flatnonzero(candidate)[first]] = True
        fp = ~tp & ~ignored
        tp_cum, fp_cum = np.cumsum(tp), np.cumsum(fp)
        recall = tp_cum / npos
        precision = tp_cum / np.maximum(tp_cum + fp_cum, np.finfo(np.float64).eps)
        per_class[name] = voc_ap(recall, precision, use_07)
    valid = [ap for ap in per_class.values() if ap is not None]
    return {"AP50": float(np.mean(valid)) if valid else None, "per_class": per_class}


def coco_map(detections: Sequence[Mapping], ground_truths: Sequence[Mapping], class_names: Sequence[str]) -> dict:
    """COCO AP@[.5:.95], AP50 and AP75 by pycocotools ``COCOeval`` on in-memory COCO dicts (printing suppressed).

    Images get ids 1..N in list order, categories 1..K; GT areas are box areas (w * h) and difficult GTs are
    ``iscrowd`` (ignored, as the COCO reader maps ``iscrowd`` to difficult). Returns {"mAP", "AP50", "AP75"},
    each None when there is no non-crowd ground truth.
    """
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    images = _gather(detections, ground_truths, class_names)
    gt_anns, dt_anns = [], []
    for image_id, (boxes, scores, labels, gt_boxes, gt_labels, difficult) in enumerate(images, start=1):
        for box, label, crowd in zip(gt_boxes.tolist(), gt_labels.tolist(), difficult.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            gt_anns.append(
                {
                    "id": len(gt_anns) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": int(crowd),
                }
            )
        for box, score, label in zip(boxes.tolist(), scores.tolist(), labels.tolist(), strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            dt_anns.append(
                {
                    "id": len(dt_anns) + 1,
                    "image_id": image_id,
                    "category_id": label,
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                    "score": score,
                }
            )
    base = {
        "images": [{"id": i} for i in range(1, len(images) + 1)],
        "categories": [{"id": c, "name": name} for c, name in enumerate(class_names, start=1)],
    }
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt, coco_dt = COCO(), COCO()
        coco_gt.dataset = {**base, "annotations": gt_anns}
        coco_dt.dataset = {**base, "annotations": dt_anns}
        coco_gt.createIndex()
        coco_dt.createIndex()
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    stats = [float(s) if s >= 0 else None for s in evaluator.stats[:3]]
    return dict(zip(("mAP", "AP50", "AP75"), stats, strict=True))
