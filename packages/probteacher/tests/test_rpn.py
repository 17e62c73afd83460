"""ProbabilisticRPN on a dummy feature map: head layout, losses, proposal filtering, anchor gradients."""

import math
from collections import OrderedDict

import pytest
import torch
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.image_list import ImageList
from torchvision.ops import box_iou

from probteacher import losses
from probteacher.anchors import LearnableAnchorGenerator
from probteacher.rpn import GaussianRPNHead, ProbabilisticRPN, flatten_predictions
from shared.errors import UserError

C = 8  # feature channels
K = 3  # classes


def make_rpn(**kw):
    gen = LearnableAnchorGenerator(((16, 32),), ((0.5, 1.0, 2.0),))
    return ProbabilisticRPN(
        gen,
        GaussianRPNHead(C, 6),
        0.7,
        0.3,
        256,
        0.25,
        {"training": 200, "testing": 50},
        {"training": 60, "testing": 20},
        0.7,
        **kw,
    )


def inputs(n=2):
    images = ImageList(torch.rand(n, 3, 64, 64), [(64, 64), (48, 64)][:n])
    return images, OrderedDict([("0", torch.rand(n, C, 8, 8))])


def gt_targets():
    return [
        {"boxes": torch.tensor([[8.0, 8.0, 30.0, 28.0], [30.0, 20.0, 60.0, 40.0]]), "labels": torch.tensor([1, 2])},
        {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0, dtype=torch.int64)},
    ]


def pseudo_targets():
    boxes = torch.tensor([[8.0, 8.0, 30.0, 28.0], [30.0, 20.0, 60.0, 40.0], [0.0, 0.0, 20.0, 40.0]])
    logits = torch.tensor([[0.1, 3.0, 0.0, -1.0], [2.0, 0.0, 0.5, 0.0], [0.0, 0.0, 0.0, 4.0]])
    return [
        {"boxes": boxes, "labels": logits.argmax(1), "soft_logits": logits, "sigma_raw": torch.randn(3, 4)},
        {
            "boxes": torch.zeros(0, 4),
            "labels": torch.zeros(0, dtype=torch.int64),
            "soft_logits": torch.zeros(0, K + 1),
            "sigma_raw": torch.zeros(0, 4),
        },
    ]


def test_head_shapes_and_init():
    head = GaussianRPNHead(C, 6)
    logits, boxes = head([torch.rand(2, C, 5, 7)])
    assert logits[0].shape == (2, 6, 5, 7) and boxes[0].shape == (2, 48, 5, 7)
    assert head.cls_logits.weight.std().item() == pytest.approx(0.01, rel=0.3)
    assert head.bbox_pred.bias.abs().sum() == 0
    obj, params = flatten_predictions(logits, boxes)
    assert obj.shape == (2, 5 * 7 * 6) and params.shape == (2, 5 * 7 * 6, 8)
    # anchor a at location (y, x) -> flat index (y * W + x) * A + a
    assert params[1, (2 * 7 + 3) * 6 + 4, 5] == boxes[0][1, 4 * 8 + 5, 2, 3]


def test_supervised_loss_values_with_zero_head():
    rpn = make_rpn()
    for p in rpn.head.parameters():
        torch.nn.init.zeros_(p)
    images, feats = inputs()
    targets = gt_targets()
    _, out = rpn(images, feats, targets, mode="supervised")
    # objectness 0 -> BCE = log 2 for each of the 256 sampled anchors per image
    assert out["loss_rpn_cls"].item() == pytest.approx(math.log(2), rel=1e-5)
    anchors = rpn.anchor_generator(images, list(feats.values()))[0]
    matched = det_utils.Matcher(0.7, 0.3, True)(box_iou(targets[0]["boxes"], anchors))
    pos = matched >= 0
    enc = det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(targets[0]["boxes"][matched[pos]], anchors[pos])
    expected = losses.gaussian_nll(torch.zeros_like(enc), torch.zeros_like(enc), enc).sum() / 512
    assert out["loss_rpn_loc"].item() == pytest.approx(expected.item(), rel=1e-5)


@pytest.mark.parametrize("model_type", ["gaussian", "laplace"])
def test_supervised_backprop_and_no_anchor_grad(model_type):
    rpn = make_rpn(model_type=model_type)
    images, feats = inputs()
    proposals, out = rpn(images, feats, gt_targets(), mode="supervised")
    assert set(out) == {"loss_rpn_cls", "loss_rpn_loc"}
    assert all(torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()
    assert rpn.head.bbox_pred.weight.grad.abs().sum() > 0
    assert rpn.anchor_generator.anchor_wh[0].grad is None
    assert len(proposals) == 2 and all(p.shape[1] == 4 and len(p) <= 60 for p in proposals)


def _expected_unsup(rpn, images, feats, targets, bg_prob, var_space):
    """Straightforward per-anchor re-derivation of the official unsupervised RPN loss (bg = column 0)."""
    logits_l, boxes_l = rpn.head(list(feats.values()))
    obj, params = flatten_predictions(logits_l, boxes_l)
    anchors = rpn.anchor_generator(images, list(feats.values()))[0]
    t = targets[0]
    matched = det_utils.Matcher(0.7, 0.3, True)(box_iou(t["boxes"], anchors))
    cls, loc = 0.0, 0.0
    for a in torch.where(matched >= 0)[0].tolist():
        j = matched[a]
        lg = t["soft_logits"][j]
        tt = torch.softmax(lg / 0.5, 0)
        o = obj[0, a]
        bg = torch.sigmoid(-o) if bg_prob == "correct" else torch.sigmoid(1 - o)
        p = torch.softmax(lg, 0)
        w = (1 - (-(p * p.log()).sum()) / math.log(K + 1)) ** 0.5
        cls += w * (-tt[0] * torch.log(bg + 1e-9) - tt[1:].sum() * torch.log(torch.sigmoid(o) + 1e-9))
        if lg.argmax() == 0:
            continue
        mu_p = det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0)).encode_single(t["boxes"][j][None], anchors[a][None])[0]
        v = torch.sigmoid(t["sigma_raw"][j])
        v_p = 0.5 * v / (torch.tensor([10.0, 10, 5, 5]) ** 2 if var_space == "rescaled" else 1)
        mu_q, v_q = params[0, a, :4], torch.sigmoid(params[0, a, 4:])
        kl = 0.5 * torch.log(v_q / v_p) - 0.5 + (v_p + (mu_q - mu_p) ** 2) / (2 * v_q)
        h = 0.5 * torch.log(2 * math.pi * math.e * v)
        wl = (1 - h / (0.5 * math.log(2 * math.pi * math.e))).clamp_min(0) ** 0.5
        loc += (wl * kl).sum()
    return cls / 512, loc / 512


@pytest.mark.parametrize(("bg_prob", "var_space"), [("correct", "official"), ("official", "rescaled")])
def test_unsupervised_loss_matches_official_formula(bg_prob, var_space):
    rpn = make_rpn(rpn_bg_prob=bg_prob, teacher_var_space=var_space)
    images, feats = inputs()
    targets = pseudo_targets()
    _, out = rpn(images, feats, targets, mode="unsupervised")
    cls, loc = _expected_unsup(rpn, images, feats, targets, bg_prob, var_space)
    assert out["loss_rpn_cls"].item() == pytest.approx(float(cls.detach()), rel=1e-4)
    assert out["loss_rpn_loc"].item() == pytest.approx(float(loc.detach()), rel=1e-4)
    assert out["loss_rpn_loc"].item() > 0


def test_unsupervised_anchor_gradient_only_when_enabled():
    rpn = make_rpn()
    images, feats = inputs()
    with rpn.anchor_generator.gradient(True):
        _, out = rpn(images, feats, pseudo_targets(), mode="unsupervised")
    out["loss_rpn_cls"].backward(retain_graph=True)
    assert rpn.anchor_generator.anchor_wh[0].grad is None  # classification does not reach anchors
    out["loss_rpn_loc"].backward()
    assert rpn.anchor_generator.anchor_wh[0].grad.abs().sum() > 0
    rpn.zero_grad()
    _, out = rpn(images, feats, pseudo_targets(), mode="unsupervised")
    sum(out.values()).backward()
    assert rpn.anchor_generator.anchor_wh[0].grad is None


def test_unsupervised_all_empty_is_finite_zero():
    rpn = make_rpn()
    images, feats = inputs()
    empty = pseudo_targets()[1]
    with rpn.anchor_generator.gradient(True):
        _, out = rpn(images, feats, [empty, empty], mode="unsupervised")
    assert all(v.item() == 0 and torch.isfinite(v) for v in out.values())
    sum(out.values()).backward()  # the graph is kept


@pytest.mark.parametrize("rescore", ["correct", "official", "off"])
def test_filter_proposals_sigma_rescoring(rescore):
    rpn = make_rpn(rpn_sigma_rescore=rescore)
    m = 12
    # disjoint boxes so NMS keeps everything
    x = torch.arange(m, dtype=torch.float32) * 10
    proposals = torch.stack([x, torch.zeros(m), x + 5, torch.full((m,), 5.0)], 1)[None]
    objectness = torch.randn(1, m)
    sigma = torch.randn(1, m, 4)
    rpn._pre_nms_top_n["training"] = 5
    boxes, scores, sig = rpn.filter_proposals(proposals, objectness, sigma, [(10, 200)], [m])
    top = objectness[0].topk(5).indices
    if rescore == "correct":
        expected = torch.sigmoid(objectness[0, top]) * (1 - torch.sigmoid(sigma[0, top]).mean(-1))
    elif rescore == "official":
        expected = torch.sigmoid(objectness[0, top] * (1 - torch.sigmoid(sigma[0, :5]).mean(-1)))
    else:
        expected = torch.sigmoid(objectness[0, top])
    order = expected.argsort(descending=True)
    assert torch.allclose(scores[0], expected[order])
    assert torch.equal(boxes[0], proposals[0, top[order]].clamp(max=200).clamp(max=torch.tensor([200, 10, 200, 10])))
    assert torch.equal(sig[0], sigma[0, top[order]])


def test_inference_counts_and_errors():
    rpn = make_rpn()
    images, feats = inputs()
    proposals, out = rpn(images, feats, mode="inference")
    assert out == {} and all(len(p) <= 20 for p in proposals)
    with pytest.raises(UserError):
        rpn(images, feats, mode="supervised")
    with pytest.raises(UserError):
        rpn(images, feats, mode="train")
    with pytest.raises(UserError):
        make_rpn(rpn_sigma_rescore="sometimes")


def test_unsupervised_laplace_finite():
    rpn = make_rpn(model_type="laplace", efl=False)
    images, feats = inputs()
    with rpn.anchor_generator.gradient(True):
        _, out = rpn(images, feats, pseudo_targets(), mode="unsupervised")
    assert all(torch.isfinite(v) for v in out.values()) and out["loss_rpn_loc"] > 0
    sum(out.values()).backward()
    assert rpn.anchor_generator.anchor_wh[0].grad.abs().sum() > 0
