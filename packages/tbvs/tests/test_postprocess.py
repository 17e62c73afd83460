import pytest
import torch
import torch.nn.functional as F

from tbvs.metrics import intersection_union
from tbvs.postprocess import LetterboxParams, binarize, letterbox, unletterbox


def _official_resize_and_crop(prob, h, w):
    """``resize_and_crop`` of the release's a2d_test.py, transcribed: scale by max(H/S, W/S), centre-crop H×W."""
    s = prob.shape[-1]
    scale = max(h / s, w / s)
    rh, rw = round(s * scale), round(s * scale)
    resized = F.interpolate(prob, size=(rh, rw), mode="bilinear", align_corners=False)
    top, left = (rh - h) // 2, (rw - w) // 2
    return resized[..., top : top + h, left : left + w]


def test_params_match_resize_and_pad():
    p = LetterboxParams.compute(240, 320, 320)
    assert (p.new_height, p.new_width, p.top, p.left) == (240, 320, 40, 0)
    p = LetterboxParams.compute(50, 30, 96)
    assert (p.new_height, p.new_width, p.top, p.left) == (96, 58, 0, 19)


def test_letterbox_shapes_padding_and_dtypes():
    img = torch.randint(1, 255, (2, 3, 30, 60), dtype=torch.uint8)
    out, p = letterbox(img, 96)
    assert out.shape == (2, 3, 96, 96) and out.dtype == torch.uint8
    assert (p.new_height, p.new_width, p.top) == (48, 96, 24)
    assert out[..., :24, :].eq(0).all() and out[..., 72:, :].eq(0).all()
    assert out[..., 24:72, :].gt(0).float().mean() > 0.99
    mask = torch.zeros(1, 30, 60, dtype=torch.uint8)
    mask[0, 5:15, 10:40] = 3
    mout, _ = letterbox(mask, 96, mode="mask")
    assert mout.shape == (1, 96, 96) and set(mout.unique().tolist()) == {0, 3}
    assert int((mout == 3).sum()) == 16 * 48  # scale 1.6
    with pytest.raises(ValueError):
        letterbox(mask, 96, mode="bilinear")


def test_round_trip_exact_for_integer_scale():
    mask = torch.zeros(1, 1, 24, 48)
    mask[..., 3:17, 5:30] = 1.0
    boxed, p = letterbox(mask, 96, mode="mask")  # scale 2, nearest
    back = unletterbox(boxed, p)
    assert back.shape == (1, 1, 24, 48)
    assert torch.equal(back, mask)
    assert torch.equal(unletterbox(boxed, (24, 48)), mask)


@pytest.mark.parametrize("hw", [(37, 61), (61, 37), (200, 90)])
def test_round_trip_non_square(hw):
    h, w = hw
    mask = torch.zeros(1, 1, h, w)
    mask[..., h // 4 : 3 * h // 4, w // 5 : 4 * w // 5] = 1.0
    boxed, p = letterbox(mask, 64, mode="mask")
    back = unletterbox(boxed, p)
    assert back.shape == (1, 1, h, w)
    inter, union = intersection_union(back > 0.5, mask > 0.5)
    assert inter.item() / union.item() > 0.93
    # agrees with the official resize-by-max-scale-then-centre-crop up to its sub-pixel misalignment
    official = _official_resize_and_crop(boxed, h, w)
    torch.testing.assert_close(unletterbox(boxed, p, method="official"), official)
    inter, union = intersection_union(official > 0.5, back > 0.5)
    assert inter.item() / union.item() > 0.85


def test_unletterbox_per_sample_sizes():
    prob = torch.rand(2, 1, 32, 32)
    out = unletterbox(prob, [(16, 32), (40, 20)])
    assert [tuple(o.shape) for o in out] == [(1, 16, 32), (1, 40, 20)]
    with pytest.raises(ValueError):
        unletterbox(prob, [(16, 32)] * 3)


def test_binarize_modes():
    prob = torch.tensor([[[0.1, 0.3, 0.4]], [[0.6, 0.9, 0.2]]])  # (N=2, 1, 3)
    rel = binarize(prob)
    assert rel.tolist() == [[[False, True, True]], [[True, True, False]]]  # > 0.2 and > 0.45
    ab = binarize(prob, "absolute")
    assert ab.tolist() == [[[False, False, False]], [[True, True, False]]]
    assert not binarize(torch.zeros(1, 1, 2, 2)).any()
    with pytest.raises(ValueError):
        binarize(prob, "otsu")
