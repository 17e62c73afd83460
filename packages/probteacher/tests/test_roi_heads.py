import math

import pytest
import torch
import torch.nn.functional as F
from torchvision.models.detection._utils import BoxCoder
from torchvision.ops import MultiScaleRoIAlign, box_iou

from probteacher.backbones import box_head
from probteacher.roi_heads import GaussianFastRCNNPredictor, ProbabilisticRoIHeads

K = 3
SHAPES = [(128, 128), (128, 128)]


def make_heads(**kwargs):
    defaults = dict(score_thresh=0.05, nms_thresh=0.5, detections_per_img=100)
    defaults.update(kwargs)
    return ProbabilisticRoIHeads(
        MultiScaleRoIAlign(["0"], 7, 2),
        box_head("tiny", 8, dim=32),
        GaussianFastRCNNPredictor(32, K + 1),
        0.5,
        0.5,
        512,
        0.25,
        (10.0, 10.0, 5.0, 5.0),
        defaults.pop("score_thresh"),
        defaults.pop("nms_thresh"),
        defaults.pop("detections_per_img"),
        **defaults,
    )


def randomise(heads):
    """Larger predictor weights so logits/variances vary between proposals and classes."""
    with torch.no_grad():
        heads.box_predictor.cls_score.weight.normal_(0, 0.5)
        heads.box_predictor.bbox_pred.weight.normal_(0, 0.3)
    return heads


def features():
    return {"0": torch.randn(2, 8, 16, 16, requires_grad=True)}


def pseudo(boxes, logits, sigma):
    boxes = torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4)
    return {"boxes": boxes, "labels": logits.argmax(1), "soft_logits": logits, "sigma_raw": sigma}


def empty_pseudo():
    return pseudo([], torch.zeros(0, K + 1), torch.zeros(0, 4))


def test_predictor_shapes_and_init():
    pred = GaussianFastRCNNPredictor(32, K + 1)
    logits, params = pred(torch.randn(5, 32, 1, 1))
    assert logits.shape == (5, K + 1) and params.shape == (5, K + 1, 8)
    assert pred.cls_score.weight.std().item() == pytest.approx(0.01, rel=0.2)
    assert pred.bbox_pred.weight.std().item() == pytest.approx(0.001, rel=0.2)
    assert pred.cls_score.bias.abs().sum() == 0 and pred.bbox_pred.bias.abs().sum() == 0


def test_supervised_losses_match_the_official_normalisation():
    heads = randomise(make_heads())
    feats = features()
    gt = torch.tensor([[10.0, 10, 40, 40], [60, 60, 110, 100]])
    # proposals equal to the GT: with GT appended every proposal is a positive with zero regression target
    props = [gt.clone(), gt[:1].clone()]
    targets = [{"boxes": gt, "labels": torch.tensor([2, 3])}, {"boxes": gt[:1], "labels": torch.tensor([1])}]
    _, losses = heads(feats, props, SHAPES, targets, mode="supervised")
    all_props = [torch.cat([gt, gt]), torch.cat([gt[:1], gt[:1]])]
    logits, params = heads._predict(feats, all_props, SHAPES)
    labels = torch.tensor([2, 3, 2, 3, 1, 1])
    sel = params[torch.arange(6), labels]
    v = torch.sigmoid(sel[:, 4:])
    nll = 0.5 * sel[:, :4] ** 2 / v + 0.5 * torch.log(2 * math.pi * (v + 0.3))
    # permutation inside sampled sets does not change sums/means
    assert losses["loss_cls"].item() == pytest.approx(F.cross_entropy(logits, labels).item(), rel=1e-5)
    assert losses["loss_box_reg"].item() == pytest.approx(nll.sum().item() / 6, rel=1e-4)


def test_supervised_samples_512_with_quarter_positives_and_handles_empty_gt():
    heads = make_heads()
    feats = features()
    g = torch.Generator().manual_seed(1)
    xy = torch.rand(2000, 2, generator=g) * 100
    props = [torch.cat([xy, xy + 5 + torch.rand(2000, 2, generator=g) * 20], 1)] * 2
    targets = [
        {"boxes": torch.tensor([[10.0, 10, 40, 40]]), "labels": torch.tensor([1])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]
    sampled, _, labels, _ = heads.select_training_samples([p.clone() for p in props], targets)
    assert [len(s) for s in sampled] == [512, 512]
    assert (labels[0] > 0).sum() <= 128 and (labels[1] > 0).sum() == 0
    _, losses = heads(feats, props, SHAPES, targets, mode="supervised")
    assert all(torch.isfinite(v) for v in losses.values())


def reference_unsup(heads, feats, props, targets, efl=True, laplace=False):
    """Per-proposal loop version of the official unsupervised ROI loss."""
    cls_terms, box_terms, n_matched = [], [], 0
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    for img, (p, t) in enumerate(zip(props, targets, strict=True)):
        logits, params = heads._predict({"0": feats["0"][img : img + 1]}, [p], SHAPES[:1])
        iou = box_iou(t["boxes"], p)
        for i in range(len(p)):
            j = int(iou[:, i].argmax())
            if iou[j, i] < 0.5:
                continue
            n_matched += 1
            tl = t["soft_logits"][j]
            tp = torch.softmax(tl / 0.5, 0)
            pu = torch.softmax(tl, 0)
            w = (1 - (-(pu * pu.log()).sum()) / math.log(K + 1)) ** 0.5 if efl else 1.0
            cls_terms.append(w * -(tp * F.log_softmax(logits[i], 0)).sum())
            c = int(tl.argmax())
            if c == 0:
                continue
            mu_p = coder.encode_single(t["boxes"][j : j + 1], p[i : i + 1])[0]
            v_t = torch.sigmoid(t["sigma_raw"][j])
            v_p, mu_q, v_q = 0.5 * v_t, params[i, c, :4], torch.sigmoid(params[i, c, 4:])
            if laplace:
                bp, bq, d = v_p.sqrt(), v_q.sqrt(), (mu_q - mu_p).abs()
                kl = bp * torch.exp(-d / bp) / bq + d / bq + torch.log(bq / bp) - 1
                h, hmax = 1 + 0.5 * torch.log(4 * v_t), 1 + math.log(2)
            else:
                kl = 0.5 * torch.log(v_q / v_p) - 0.5 + (v_p + (mu_q - mu_p) ** 2) / (2 * v_q)
                h, hmax = 0.5 * torch.log(2 * math.pi * math.e * v_t), 0.5 * math.log(2 * math.pi * math.e)
            w_loc = (1 - h / hmax).clamp_min(0) ** 0.5 if efl else torch.ones(4)
            box_terms.append(w_loc * kl)
    loss_cls = torch.stack(cls_terms).sum() / n_matched
    loss_box = torch.cat(box_terms).mean()
    return loss_cls, loss_box


@pytest.mark.parametrize(("efl", "model_type"), [(True, "gaussian"), (False, "gaussian"), (True, "laplace")])
def test_unsupervised_losses_equal_the_per_proposal_reference(efl, model_type):
    heads = randomise(make_heads(efl=efl, model_type=model_type))
    feats = features()
    props = [
        torch.tensor([[10.0, 10, 40, 40], [12, 14, 41, 44], [70, 70, 80, 80], [58, 62, 100, 104], [0, 0, 5, 5]]),
        torch.tensor([[20.0, 30, 60, 70], [90, 10, 120, 50]]),
    ]
    targets = [
        pseudo(
            [[11, 11, 40, 42], [60, 60, 100, 100]], torch.tensor([[0.0, 3, 1, 0], [2.5, 0, 1, 0.5]]), torch.randn(2, 4)
        ),
        pseudo([[22, 28, 61, 69]], torch.tensor([[0.0, 0, 0, 4]]), torch.randn(1, 4)),
    ]
    _, losses = heads(feats, props, SHAPES, targets, mode="unsupervised")
    ref_cls, ref_box = reference_unsup(heads, feats, props, targets, efl=efl, laplace=model_type == "laplace")
    assert losses["loss_cls"].item() == pytest.approx(ref_cls.item(), rel=1e-4)
    assert losses["loss_box_reg"].item() == pytest.approx(ref_box.item(), rel=1e-4)
    (losses["loss_cls"] + losses["loss_box_reg"]).backward()
    assert feats["0"].grad.abs().sum() > 0


def test_unsupervised_matching_keeps_only_iou_half_without_gt_append():
    heads = make_heads()
    props = [torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [0, 0, 10, 21], [50, 50, 60, 60]])]
    kept, matched = heads.match_pseudo_labels(
        props, [pseudo([[0, 0, 10, 10]], torch.zeros(1, K + 1), torch.zeros(1, 4))]
    )
    assert kept[0].tolist() == [[0, 0, 10, 10], [0, 0, 10, 20]] and matched[0].tolist() == [0, 0]


@pytest.mark.parametrize("case", ["empty", "no-match"])
def test_unsupervised_without_matches_gives_zero_losses_on_the_graph(case):
    heads = make_heads()
    feats = features()
    props = [torch.tensor([[10.0, 10, 40, 40]]), torch.tensor([[50.0, 50, 90, 90]])]
    if case == "empty":
        targets = [empty_pseudo(), empty_pseudo()]
    else:
        far = pseudo([[100, 100, 120, 120]], torch.tensor([[0.0, 5, 0, 0]]), torch.zeros(1, 4))
        targets = [far, far]
    _, losses = heads(feats, props, SHAPES, targets, mode="unsupervised")
    assert set(losses) == {"loss_cls", "loss_box_reg"}
    for v in losses.values():
        assert torch.isfinite(v) and v.item() == 0.0 and v.requires_grad
    sum(losses.values()).backward()
    assert heads.box_predictor.cls_score.weight.grad is not None


def test_inference_rescoring_payload_and_nms():
    heads = randomise(make_heads(score_thresh=0.05, detections_per_img=7))
    feats = features()
    g = torch.Generator().manual_seed(3)
    xy = torch.rand(40, 2, generator=g) * 80
    props = [torch.cat([xy, xy + 10 + torch.rand(40, 2, generator=g) * 30], 1), torch.zeros(0, 4)]
    dets, losses = heads(feats, props, SHAPES, mode="teacher")
    assert losses == {} and len(dets) == 2 and len(dets[1]["boxes"]) == 0
    det = dets[0]
    assert 0 < len(det["boxes"]) <= 7
    assert det["logits"].shape == (len(det["boxes"]), K + 1) and det["sigma_raw"].shape == (len(det["boxes"]), 4)
    logits, params = heads._predict(feats, props, SHAPES)
    coder = BoxCoder((10.0, 10.0, 5.0, 5.0))
    for box, score, label, lg, s in zip(
        det["boxes"], det["scores"], det["labels"], det["logits"], det["sigma_raw"], strict=True
    ):
        row = int((logits[:40] - lg).abs().sum(1).argmin())
        assert torch.equal(logits[row], lg) and torch.equal(params[row, label, 4:], s)
        p = torch.softmax(lg, 0)[label]
        assert p > 0.05 and label >= 1
        assert score.item() == pytest.approx((p * (1 - torch.sigmoid(s).mean())).item(), rel=1e-5)
        decoded = coder.decode_single(params[row, label, :4][None], props[0][row : row + 1])[0].clamp(0, 128)
        assert torch.allclose(box, decoded, atol=1e-4)
    assert (det["scores"][:-1] >= det["scores"][1:]).all()
    for c in det["labels"].unique():
        b = det["boxes"][det["labels"] == c]
        iou = box_iou(b, b).fill_diagonal_(0)
        assert (iou <= 0.5 + 1e-6).all()


def test_unknown_mode_raises():
    with pytest.raises(ValueError, match="mode"):
        make_heads()(features(), [torch.zeros(0, 4)] * 2, SHAPES, mode="train")


def test_inference_without_any_proposal_returns_empty_detections():
    """An untrained or diverged RPN can keep no proposal in any image of the batch."""
    heads = randomise(make_heads())
    dets, _ = heads(features(), [torch.zeros(0, 4), torch.zeros(0, 4)], SHAPES, mode="inference")
    assert [len(d["boxes"]) for d in dets] == [0, 0]
    assert dets[0]["logits"].shape == (0, K + 1) and dets[0]["sigma_raw"].shape == (0, 4)
