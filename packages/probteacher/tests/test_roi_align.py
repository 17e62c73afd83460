import pytest
import torch
from torchvision.ops import MultiScaleRoIAlign

from probteacher.roi_align import SeparableRoIAlign


def _boxes():
    torch.manual_seed(0)
    corner = torch.rand(40, 2) * 90
    random = torch.cat([corner, corner + 1 + torch.rand(40, 2) * 37], 1)
    edges = torch.tensor([[0.0, 0.0, 127.0, 127.0], [3.0, 5.0, 3.5, 90.0], [100.0, 100.0, 127.0, 127.0]])
    return [edges, random]


def test_equals_torchvision_roi_align_with_one_sample_per_bin_forward_and_backward():
    features = torch.randn(2, 8, 16, 16, requires_grad=True)
    shapes = [(128, 128), (120, 128)]
    reference = MultiScaleRoIAlign(["0"], 7, sampling_ratio=1)({"0": features}, _boxes(), shapes)
    ours = SeparableRoIAlign("0", 7)({"0": features}, _boxes(), shapes)
    assert ours.shape == reference.shape == (43, 8, 7, 7)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    weights = torch.randn_like(reference)
    (expected,) = torch.autograd.grad((reference * weights).sum(), features)
    (got,) = torch.autograd.grad((ours * weights).sum(), features)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_aligned_samples_half_a_pixel_earlier_and_empty_proposals():
    features = torch.arange(16.0).repeat(16, 1)[None, None]  # value = x coordinate of the feature pixel
    box = [torch.tensor([[16.0, 16.0, 72.0, 72.0]])]  # stride 8 on a 128 image: feature x 2 .. 9
    plain = SeparableRoIAlign("0", 7)({"0": features}, box, [(128, 128)])
    aligned = SeparableRoIAlign("0", 7, aligned=True)({"0": features}, box, [(128, 128)])
    assert plain[0, 0, 0, 0] == pytest.approx(2.5)  # the first bin centre: 2 + 0.5
    assert (plain - aligned).abs().max() == pytest.approx(0.5)
    empty = SeparableRoIAlign("0", 7)({"0": features}, [torch.zeros(0, 4)], [(128, 128)])
    assert empty.shape == (0, 1, 7, 7)
