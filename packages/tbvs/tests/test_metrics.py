import math

import pytest
import torch

from tbvs.metrics import MAP_THRESHOLDS, SegMeter, coco_map, intersection_union


def _mask(h, w, box):
    m = torch.zeros(h, w, dtype=torch.bool)
    y0, y1, x0, x1 = box
    m[y0:y1, x0:x1] = True
    return m


def test_intersection_union_per_sample():
    pred = torch.stack([_mask(4, 4, (0, 2, 0, 2)), _mask(4, 4, (0, 4, 0, 4))])
    gt = torch.stack([_mask(4, 4, (0, 2, 0, 4)), _mask(4, 4, (0, 1, 0, 1))])
    inter, union = intersection_union(pred[:, None], gt[:, None].float())
    assert inter.tolist() == [4, 1]
    assert union.tolist() == [8, 16]


def test_overall_differs_from_mean_iou():
    # sample 1: big object, I = 90, U = 100 (IoU 0.9); sample 2: small object, I = 1, U = 10 (IoU 0.1)
    m = SegMeter()
    m.add([90, 1], [100, 10])
    assert m.overall_iou() == pytest.approx(91 / 110)
    assert m.mean_iou() == pytest.approx(((90 + 1e-6) / (100 + 1e-6) + (1 + 1e-6) / (10 + 1e-6)) / 2)
    assert abs(m.overall_iou() - m.mean_iou()) > 0.3


def test_precision_boundaries_and_map():
    # IoUs exactly 0.5, 0.7, 0.95 and just below 0.6: the eps makes I/U = K count as ≥ K (I < U)
    m = SegMeter()
    m.add([1, 7, 19, 599], [2, 10, 20, 1000])
    assert m.precision_at(0.5) == 1.0
    assert m.precision_at(0.6) == 0.5  # 0.599 < 0.6
    assert m.precision_at(0.7) == 0.5  # 7/10 counts
    assert m.precision_table() == {0.5: 1.0, 0.6: 0.5, 0.7: 0.5, 0.8: 0.25, 0.9: 0.25}
    # per threshold 0.50, 0.55, ..., 0.95: 4, 3, 2, 2, 2, 1, 1, 1, 1, 1 of the 4 samples
    assert m.map_mean_precision() == pytest.approx((4 + 3 + 2 + 2 + 2 + 1 + 1 + 1 + 1 + 1) / 40)
    assert MAP_THRESHOLDS[1] == 0.55 and len(MAP_THRESHOLDS) == 10


def test_empty_prediction_and_target_gives_iou_one():
    m = SegMeter()
    ious = m.update(torch.zeros(2, 1, 3, 3), torch.zeros(2, 1, 3, 3))
    assert ious.tolist() == [1.0, 1.0]
    assert m.overall_iou() == 1.0 and m.precision_at(0.9) == 1.0


def test_summary_and_groups():
    m = SegMeter()
    pred = torch.stack([_mask(8, 8, (0, 4, 0, 4)), _mask(8, 8, (0, 8, 0, 8)), _mask(8, 8, (2, 6, 2, 6))])
    gt = torch.stack([_mask(8, 8, (0, 4, 0, 4)), _mask(8, 8, (0, 4, 0, 4)), _mask(8, 8, (2, 6, 2, 6))])
    m.update(pred, gt, groups=["appearance", "ambiguous", "appearance"])
    s = m.summary()
    assert list(s) == ["P@0.5", "P@0.6", "P@0.7", "P@0.8", "P@0.9", "mAP", "overall_iou", "mean_iou"]
    assert s["overall_iou"] == pytest.approx((16 + 16 + 16) / (16 + 64 + 16))
    by = m.summary_by_group()
    assert list(by) == ["all", "appearance", "ambiguous"]
    assert by["appearance"]["mean_iou"] == pytest.approx(1.0)
    assert by["ambiguous"]["mean_iou"] == pytest.approx(0.25, abs=1e-6)
    assert by["ambiguous"]["P@0.5"] == 0.0
    assert math.isnan(m.summary("missing")["mean_iou"])
    with pytest.raises(ValueError):
        m.add([1], [2], groups=["a", "b"])
    with pytest.raises(ValueError):
        m.add([3], [2])


def test_coco_map_is_separate():
    pytest.importorskip("pycocotools")
    gt = [_mask(16, 16, (2, 10, 2, 10)), _mask(16, 16, (4, 12, 4, 12))]
    perfect = coco_map(gt, gt)
    assert perfect["AP"] == pytest.approx(1.0)
    half = coco_map([gt[0], _mask(16, 16, (0, 2, 0, 2))], gt)  # second prediction misses (IoU 0)
    assert half["AP50"] == pytest.approx(0.5, abs=0.02)
