import contextlib
import io
from fractions import Fraction

import numpy as np
import pytest
import torch
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from probteacher.evaluation import coco_map, evaluate_detections, voc_ap
from shared.errors import UserError


def _det(boxes, scores, labels):
    return {
        "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "scores": torch.tensor(scores, dtype=torch.float32),
        "labels": torch.tensor(labels, dtype=torch.int64),
    }


def _gt(boxes, labels, difficult=None):
    gt = {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4), "labels": torch.tensor(labels)}
    if difficult is not None:
        gt["difficult"] = torch.tensor(difficult, dtype=torch.bool)
    return gt


# Hand-worked case, one class, 3 GTs: image 0 has A = [0,0,10,10] and B = [20,0,30,10], image 1 has C = [0,0,10,10].
# Detections (given out of score order):
#   d4 0.6 image 0 [20,0,30,4]: IoU with B = 40/100 = 0.4 <= 0.5          -> FP
#   d1 0.9 image 0 [0,0,10,10]: IoU with A = 1                             -> TP (A)
#   d2 0.8 image 0 [1,0,10,10]: IoU with A = 90/100, A already matched     -> FP
#   d3 0.7 image 1 [0,0,10,9]:  IoU with C = 90/100                        -> TP (C)
# Ranked d1 d2 d3 d4: TP FP TP FP -> cumulative tp 1 1 2 2, fp 0 1 1 2
#   recall    = 1/3, 1/3, 2/3, 2/3
#   precision = 1,   1/2, 2/3, 1/2
# All-point: envelope 1 on (0, 1/3], 2/3 on (1/3, 2/3], 0 beyond -> AP = 1/3 * 1 + 1/3 * 2/3 = 5/9.
# 11-point: t = 0, .1, .2, .3 -> max precision at recall >= t = 1   (4 points)
#           t = .4, .5, .6    -> 2/3                               (3 points)
#           t = .7 ... 1      -> 0 (recall never reaches t)        (4 points)
#           AP = (4 * 1 + 3 * 2/3) / 11 = 6/11.
HAND_DETS = [
    _det([[20, 0, 30, 4], [0, 0, 10, 10], [1, 0, 10, 10]], [0.6, 0.9, 0.8], [1, 1, 1]),
    _det([[0, 0, 10, 9]], [0.7], [1]),
]
HAND_GTS = [_gt([[0, 0, 10, 10], [20, 0, 30, 10]], [1, 1]), _gt([[0, 0, 10, 10]], [1])]


def test_voc_ap_on_the_hand_worked_curve():
    recall = np.array([1, 1, 2, 2]) / 3
    precision = np.array([1, 1 / 2, 2 / 3, 1 / 2])
    assert voc_ap(recall, precision) == pytest.approx(float(Fraction(5, 9)), abs=1e-12)
    assert voc_ap(recall, precision, use_07=True) == pytest.approx(float(Fraction(6, 11)), abs=1e-12)
    assert voc_ap(np.array([]), np.array([])) == 0.0
    assert voc_ap(np.array([]), np.array([]), use_07=True) == 0.0


def test_hand_worked_voc_case():
    result = evaluate_detections(HAND_DETS, HAND_GTS, ["car"])
    assert result["per_class"]["car"] == pytest.approx(5 / 9, abs=1e-12)
    assert result["AP50"] == pytest.approx(5 / 9, abs=1e-12)
    result07 = evaluate_detections(HAND_DETS, HAND_GTS, ["car"], use_07=True)
    assert result07["AP50"] == pytest.approx(6 / 11, abs=1e-12)
    # a lower threshold turns d4 (IoU 0.4 with B) into a TP: tp 1 1 2 3, recall 1/3 1/3 2/3 1,
    # precision 1 1/2 2/3 3/4 -> AP = 1/3 + 1/3 * 3/4 + 1/3 * 3/4 = 5/6
    assert evaluate_detections(HAND_DETS, HAND_GTS, ["car"], iou_threshold=0.3)["AP50"] == pytest.approx(5 / 6)


def test_perfect_detections_give_ap_one():
    g = torch.Generator().manual_seed(0)
    gts, dets = [], []
    for _ in range(5):
        xy = torch.rand(6, 2, generator=g) * 100
        boxes = torch.cat([xy, xy + 5 + torch.rand(6, 2, generator=g) * 30], dim=1)
        labels = torch.randint(1, 4, (6,), generator=g)
        gts.append({"boxes": boxes, "labels": labels})
        dets.append({"boxes": boxes.clone(), "scores": torch.rand(6, generator=g), "labels": labels.clone()})
    for use_07 in (False, True):
        result = evaluate_detections(dets, gts, ["a", "b", "c"], use_07=use_07)
        assert result["AP50"] == pytest.approx(1.0)
        assert all(ap == pytest.approx(1.0) for ap in result["per_class"].values())


def test_difficult_ground_truth_is_neither_tp_nor_fp_nor_counted_in_recall():
    gts = [_gt([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1], difficult=[False, True])]
    # ranked: two hits on the difficult GT (ignored, also the duplicate), then the only real GT.
    # If they counted as FP: precision 1/3 at recall 1 -> AP 1/3; if D counted in recall: AP 1/2.
    dets = [_det([[50, 50, 60, 60], [51, 50, 60, 60], [0, 0, 10, 10]], [0.9, 0.85, 0.8], [1, 1, 1])]
    assert evaluate_detections(dets, gts, ["car"])["AP50"] == pytest.approx(1.0)
    # the same image without the difficult flag: D becomes a GT (recall 2 of 2 reached) and the duplicate an FP:
    # TP FP TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1 -> AP = 1/2 + 1/2 * 2/3 = 5/6
    plain = [_gt([[0, 0, 10, 10], [50, 50, 60, 60]], [1, 1])]
    assert evaluate_detections(dets, plain, ["car"])["AP50"] == pytest.approx(5 / 6)


def test_class_without_gt_is_none_and_excluded_from_the_mean():
    gts = [_gt([[0, 0, 10, 10], [30, 30, 40, 40]], [1, 3], difficult=[False, True])]
    dets = [_det([[0, 0, 10, 10], [0, 0, 10, 10], [30, 30, 40, 40]], [0.9, 0.8, 0.7], [1, 2, 3])]
    result = evaluate_detections(dets, gts, ["car", "bus", "truck"])
    assert result["per_class"] == {"car": 1.0, "bus": None, "truck": None}  # truck has only a difficult GT
    assert result["AP50"] == 1.0
    # a class with GT but no detection counts as 0
    result = evaluate_detections([_det([], [], [])], gts, ["car", "bus", "truck"])
    assert result["per_class"]["car"] == 0.0 and result["AP50"] == 0.0
    assert evaluate_detections([_det([], [], [])], [_gt([], [])], ["car"]) == {"AP50": None, "per_class": {"car": None}}


def test_labels_must_agree_and_threshold_is_strict():
    gts = [_gt([[0, 0, 10, 10]], [1])]
    # a class-2 detection on a class-1 GT is a false positive of class 2, not a match
    result = evaluate_detections([_det([[0, 0, 10, 10]], [0.9], [2])], gts, ["a", "b"])
    assert result["per_class"] == {"a": 0.0, "b": None}
    # IoU exactly 0.5 is not > 0.5 (VOC devkit)
    assert evaluate_detections([_det([[0, 0, 10, 5]], [0.9], [1])], gts, ["a"])["AP50"] == 0.0
    assert evaluate_detections([_det([[0, 0, 10, 6]], [0.9], [1])], gts, ["a"])["AP50"] == 1.0


def test_plus_one_convention():
    # GT [0,0,2,1] vs detection [0,0,1,1]: plain IoU = 1 / 2 (not > 0.5, FP);
    # inclusive pixels: GT 3x2 = 6, detection 2x2 = 4, intersection 4 -> IoU 2/3 (TP)
    gts = [_gt([[0, 0, 2, 1]], [1])]
    dets = [_det([[0, 0, 1, 1]], [0.9], [1])]
    assert evaluate_detections(dets, gts, ["a"])["AP50"] == 0.0
    assert evaluate_detections(dets, gts, ["a"], plus_one=True)["AP50"] == 1.0


def _devkit_reference(dets, gts, cls, plus_one, use_07):
    """detectron2's voc_eval loop, transcribed (one detection at a time), for one class."""
    one = 1.0 if plus_one else 0.0
    recs, npos = {}, 0
    for i, gt in enumerate(gts):
        keep = gt["labels"].numpy() == cls
        diff = gt["difficult"].numpy()[keep]
        recs[i] = {"bbox": gt["boxes"].numpy()[keep].astype(float), "difficult": diff, "det": [False] * len(diff)}
        npos += int((~diff).sum())
    image_ids, confidence, boxes = [], [], []
    for i, det in enumerate(dets):
        keep = det["labels"].numpy() == cls
        image_ids += [i] * int(keep.sum())
        confidence += det["scores"].numpy()[keep].tolist()
        boxes += det["boxes"].numpy()[keep].astype(float).tolist()
    order = np.argsort(-np.array(confidence), kind="stable")
    tp, fp = np.zeros(len(order)), np.zeros(len(order))
    for d, k in enumerate(order):
        r, bb = recs[image_ids[k]], np.array(boxes[k])
        ovmax, bbgt = -np.inf, r["bbox"]
        if bbgt.size > 0:
            iw = np.maximum(np.minimum(bbgt[:, 2], bb[2]) - np.maximum(bbgt[:, 0], bb[0]) + one, 0.0)
            ih = np.maximum(np.minimum(bbgt[:, 3], bb[3]) - np.maximum(bbgt[:, 1], bb[1]) + one, 0.0)
            inters = iw * ih
            uni = (
                (bb[2] - bb[0] + one) * (bb[3] - bb[1] + one)
                + (bbgt[:, 2] - bbgt[:, 0] + one) * (bbgt[:, 3] - bbgt[:, 1] + one)
                - inters
            )
            overlaps = inters / uni
            ovmax, jmax = np.max(overlaps), np.argmax(overlaps)
        if ovmax > 0.5:
            if not r["difficult"][jmax]:
                if not r["det"][jmax]:
                    tp[d], r["det"][jmax] = 1.0, True
                else:
                    fp[d] = 1.0
        else:
            fp[d] = 1.0
    fp, tp = np.cumsum(fp), np.cumsum(tp)
    rec = tp / float(npos)
    prec = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
    if use_07:
        ap = 0.0
        for t in np.arange(0.0, 1.1, 0.1):
            ap += (0 if np.sum(rec >= t) == 0 else np.max(prec[rec >= t])) / 11.0
        return ap
    mrec, mpre = np.concatenate(([0.0], rec, [1.0])), np.concatenate(([0.0], prec, [0.0]))
    for i in range(mpre.size - 1, 0, -1):
        mpre[i - 1] = np.maximum(mpre[i - 1], mpre[i])
    i = np.where(mrec[1:] != mrec[:-1])[0]
    return np.sum((mrec[i + 1] - mrec[i]) * mpre[i + 1])


def _random_scene(seed, n_images=12, classes=3):
    g = torch.Generator().manual_seed(seed)
    gts, dets = [], []
    for _ in range(n_images):
        n = int(torch.randint(0, 6, (1,), generator=g))
        xy = torch.randint(0, 60, (n, 2), generator=g).float()
        boxes = torch.cat([xy, xy + torch.randint(4, 30, (n, 2), generator=g).float()], dim=1)
        labels = torch.randint(1, classes + 1, (n,), generator=g)
        gts.append({"boxes": boxes, "labels": labels, "difficult": torch.rand(n, generator=g) < 0.2})
        m = int(torch.randint(0, 10, (1,), generator=g))
        src = torch.randint(0, max(n, 1), (m,), generator=g)
        base = boxes[src] if n else torch.randint(0, 60, (m, 4), generator=g).float().sort(dim=1).values
        jitter = torch.randint(-4, 5, (m, 4), generator=g).float()
        det_labels = torch.where(torch.rand(m, generator=g) < 0.8, labels[src] if n else 1, 1 + (src % classes))
        dets.append({"boxes": base + jitter, "scores": torch.rand(m, generator=g), "labels": det_labels})
    return dets, gts


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize(("plus_one", "use_07"), [(False, False), (True, False), (False, True)])
def test_vectorised_matching_equals_the_devkit_loop(seed, plus_one, use_07):
    dets, gts = _random_scene(seed)
    names = ["a", "b", "c"]
    result = evaluate_detections(dets, gts, names, plus_one=plus_one, use_07=use_07)
    for cls, name in enumerate(names, start=1):
        npos = sum(int(((gt["labels"] == cls) & ~gt["difficult"]).sum()) for gt in gts)
        if npos == 0:
            assert result["per_class"][name] is None
        else:
            assert result["per_class"][name] == pytest.approx(_devkit_reference(dets, gts, cls, plus_one, use_07))


def test_bad_input_is_a_user_error():
    with pytest.raises(UserError, match="one per image"):
        evaluate_detections(HAND_DETS, HAND_GTS[:1], ["car"])
    with pytest.raises(UserError, match=r"outside 1\.\.1"):
        evaluate_detections([_det([[0, 0, 1, 1]], [0.5], [0])], [_gt([[0, 0, 1, 1]], [1])], ["car"])
    with pytest.raises(UserError, match=r"outside 1\.\.1"):
        evaluate_detections([_det([], [], [])], [_gt([[0, 0, 1, 1]], [2])], ["car"])


def test_numpy_inputs_are_accepted():
    dets = [{k: v.numpy() for k, v in d.items()} for d in HAND_DETS]
    gts = [{k: v.numpy() for k, v in g.items()} for g in HAND_GTS]
    assert evaluate_detections(dets, gts, ["car"])["AP50"] == pytest.approx(5 / 9)


def test_coco_map_equals_pycocotools_run_directly():
    dets, gts = _random_scene(3, n_images=6, classes=2)
    # the COCO dicts, built here independently of probteacher.evaluation
    images = [{"id": 100 + i, "width": 100, "height": 100} for i in range(len(gts))]
    annotations = []
    for i, gt in enumerate(gts):
        for box, label, crowd in zip(
            gt["boxes"].tolist(), gt["labels"].tolist(), gt["difficult"].tolist(), strict=True
        ):
            x1, y1, x2, y2 = box
            annotations.append(
                {
                    "id": 500 + len(annotations),
                    "image_id": 100 + i,
                    "category_id": label,
                    "iscrowd": int(crowd),
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                    "area": (x2 - x1) * (y2 - y1),
                }
            )
    results = [
        {"image_id": 100 + i, "category_id": label, "score": score, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]]}
        for i, det in enumerate(dets)
        for b, score, label in zip(det["boxes"].tolist(), det["scores"].tolist(), det["labels"].tolist(), strict=True)
    ]
    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = {"images": images, "annotations": annotations, "categories": [{"id": 1}, {"id": 2}]}
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(results), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    expected = evaluator.stats[:3]
    assert 0 < expected[0] < expected[1] < 1  # a non-trivial case
    out = coco_map(dets, gts, ["a", "b"])
    assert set(out) == {"mAP", "AP50", "AP75"}
    assert [out["mAP"], out["AP50"], out["AP75"]] == pytest.approx(list(expected), abs=1e-12)


def test_coco_map_perfect_empty_and_silent(capsys):
    gts = [_gt([[0, 0, 10, 10], [20, 20, 40, 30]], [1, 2])]
    dets = [_det([[0, 0, 10, 10], [20, 20, 40, 30]], [0.9, 0.8], [1, 2])]
    assert coco_map(dets, gts, ["a", "b"]) == pytest.approx({"mAP": 1.0, "AP50": 1.0, "AP75": 1.0})
    assert coco_map([_det([], [], [])], gts, ["a", "b"]) == {"mAP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert coco_map([_det([], [], [])], [_gt([], [])], ["a"]) == {"mAP": None, "AP50": None, "AP75": None}
    assert capsys.readouterr().out == ""
