"""LearnableAnchorGenerator: initial anchors, differentiability and the gradient switch."""

import math

import pytest
import torch
from torch.func import functional_call
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.image_list import ImageList

from probteacher.anchors import LearnableAnchorGenerator, initial_anchor_wh
from shared.errors import UserError

SIZES = ((128, 256, 512),)
RATIOS = ((0.5, 1.0, 2.0),)


def _inputs(h=64, w=96, stride=16, dtype=torch.float32):
    images = ImageList(torch.zeros(2, 3, h, w, dtype=dtype), [(h, w), (h - 16, w)])
    return images, [torch.zeros(2, 8, h // stride, w // stride, dtype=dtype)]


def test_initial_anchors_equal_torchvision_up_to_rounding():
    images, feats = _inputs()
    ours = LearnableAnchorGenerator(SIZES, RATIOS)(images, feats)
    ref = AnchorGenerator(SIZES, RATIOS)(images, feats)
    assert len(ours) == len(ref) == 2
    assert ours[0].shape == ref[0].shape
    assert torch.allclose(ours[0], ref[0], atol=0.5 + 1e-4)
    assert not torch.equal(ours[0], ref[0])  # ours are not rounded


def test_initial_wh_not_rounded_official_values():
    wh = initial_anchor_wh((128, 256, 512), (0.5, 1.0, 2.0))
    # ratio-major: r = 0.5 -> (w, h) = (s * sqrt 2, s / sqrt 2)
    assert torch.allclose(wh[0], torch.tensor([128 * math.sqrt(2), 128 / math.sqrt(2)]))
    assert torch.allclose(wh[3], torch.tensor([128.0, 128.0]))
    assert torch.allclose(wh[8], torch.tensor([512 / math.sqrt(2), 512 * math.sqrt(2)]))
    official = {(181.02, 90.51), (128, 128), (90.51, 181.02), (362.04, 181.02), (256, 256), (724.08, 362.04)}
    got = {(round(float(w), 2), round(float(h), 2)) for w, h in wh}
    assert official <= got


def test_gradcheck_through_encode():
    gen = LearnableAnchorGenerator(((16.0, 32.0),), ((0.5, 2.0),)).double()
    images, feats = _inputs(32, 32, 8, torch.float64)
    coder = det_utils.BoxCoder((1.0, 1.0, 1.0, 1.0))
    gt = torch.tensor([[3.0, 4.0, 30.0, 25.0]], dtype=torch.float64)

    def f(wh):
        with gen.gradient(True):
            anchors = functional_call(gen, {"anchor_wh.0": wh}, (images, feats))[0]
        return coder.encode_single(gt.expand_as(anchors), anchors)

    wh = gen.anchor_wh[0].detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (wh,))


@pytest.mark.parametrize(("enabled", "expect_grad"), [(False, False), (True, True)])
def test_gradient_switch(enabled, expect_grad):
    gen = LearnableAnchorGenerator(((16, 32),), ((1.0,),))
    images, feats = _inputs(32, 32, 8)
    with gen.gradient(enabled):
        anchors = gen(images, feats)[0]
    assert gen.grad_enabled is False  # restored after the context
    assert anchors.requires_grad is expect_grad
    if expect_grad:
        (anchors[:, 2] - anchors[:, 0]).sum().backward()  # anchor widths
        grad = gen.anchor_wh[0].grad
        assert torch.all(grad[:, 0] == 16) and torch.all(grad[:, 1] == 0)  # 4 x 4 locations


def test_frozen_anchors_have_no_gradient():
    gen = LearnableAnchorGenerator(((16, 32),), ((1.0,),), learnable=False)
    with gen.gradient(True):
        anchors = gen(*_inputs(32, 32, 8))[0]
    assert not anchors.requires_grad
    assert "anchor_wh.0" in gen.state_dict()


def test_multilevel_and_errors():
    gen = LearnableAnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)
    assert gen.num_anchors_per_location() == [3, 3]
    images = ImageList(torch.zeros(1, 3, 64, 64), [(64, 64)])
    anchors = gen(images, [torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4)])[0]
    assert anchors.shape == (8 * 8 * 3 + 4 * 4 * 3, 4)
    ref = AnchorGenerator(((16,), (32,)), ((0.5, 1.0, 2.0),) * 2)(
        images, [torch.zeros(1, 4, 8, 8), torch.zeros(1, 4, 4, 4)]
    )
    assert torch.allclose(anchors, ref[0], atol=0.5 + 1e-4)
    assert gen.mean_anchor_area() == pytest.approx((16**2 * 3 + 32**2 * 3) / 6, rel=1e-5)
    with pytest.raises(UserError):
        gen(images, [torch.zeros(1, 4, 8, 8)])
    with pytest.raises(UserError):
        LearnableAnchorGenerator(((16,),), ((0.0,),))
