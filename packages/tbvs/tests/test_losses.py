import math

import pytest
import torch
import torch.nn.functional as F

from tbvs.losses import TBVSLoss, affinity_targets, alignment_logits, grid_targets
from tbvs.models import TBVSOutput, create_model


def test_tan_logits_values_and_limits():
    s = torch.tensor([-0.5, 0.0, 0.5])
    torch.testing.assert_close(alignment_logits(s), torch.tensor([-1.0, 0.0, 1.0]))
    ends = alignment_logits(torch.tensor([-1.0, 1.0]), eps=1e-3)
    bound = math.tan(math.pi / 2 * (1 - 1e-3))
    torch.testing.assert_close(ends, torch.tensor([-bound, bound]), rtol=1e-4, atol=0)  # float32 near the pole
    assert torch.isfinite(ends).all() and 600 < bound < 700
    grid = torch.linspace(-1, 1, 101)
    assert (alignment_logits(grid).diff() >= 0).all()
    assert alignment_logits(torch.tensor([2.0, -3.0]), eps=1e-2).abs().max() == pytest.approx(
        math.tan(math.pi / 2 * 0.99), rel=1e-5
    )


def test_affinity_targets_on_a_2x2_mask():
    g = torch.tensor([[[[1.0, 0.0], [0.0, 1.0]]]])
    expected = torch.tensor([[1, 0, 0, 1], [0, 1, 1, 0], [0, 1, 1, 0], [1, 0, 0, 1]], dtype=torch.float32)
    torch.testing.assert_close(affinity_targets(g), expected[None])
    index = torch.tensor([[3, 1]])
    torch.testing.assert_close(affinity_targets(g, index), torch.tensor([[[1.0, 0.0], [0.0, 1.0]]]))


def test_grid_targets_is_the_official_offset_2_stride_4_sampling():
    mask = (torch.rand(2, 1, 320, 320) > 0.5).float()
    torch.testing.assert_close(grid_targets(mask, (80, 80)), mask[:, :, 2::4, 2::4])
    small = torch.zeros(1, 1, 8, 8)
    small[0, 0, 2, 6] = 1  # the sampled pixel of cell (0, 1)
    small[0, 0, 5, 5] = 1  # not sampled
    torch.testing.assert_close(grid_targets(small, (2, 2)), torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]]]))
    with pytest.raises(ValueError):
        grid_targets(small, (3, 3))


def test_loss_terms_by_hand():
    logits = torch.tensor([[[[2.0, -1.0], [0.5, 0.0]]]]).repeat_interleave(2, -1).repeat_interleave(2, -2)
    mask = torch.zeros(1, 1, 4, 4)
    mask[..., :2, :2] = 1
    s_vl = torch.tensor([[[[0.5, -0.5]]]]).view(1, 1, 1, 2).repeat(1, 1, 2, 1)
    s_fl = torch.zeros(1, 1, 2, 2)
    s_vf = torch.full((1, 4, 4), 0.5)
    out = TBVSOutput(logits, s_vl, s_fl, s_vf)
    terms = TBVSLoss(w_vf=2.0)(out, mask)
    g = torch.tensor([1.0, 0.0, 0.0, 0.0])
    seg = F.binary_cross_entropy_with_logits(logits, mask)
    sp = lambda x: math.log1p(math.exp(-x))  # noqa: E731  -log(sigmoid(x))
    vl = (sp(1.0) + sp(1.0) + sp(-1.0) + sp(1.0)) / 4  # logits tan(pi/4)=1, -1, 1, -1 vs g = 1, 0, 0, 0
    fl = math.log(2.0)
    a = torch.outer(g, g) + torch.outer(1 - g, 1 - g)
    vf = F.binary_cross_entropy_with_logits(torch.ones(4, 4), a).item()
    assert terms["seg"].item() == pytest.approx(seg.item(), rel=1e-6)
    assert terms["vl"].item() == pytest.approx(vl, rel=1e-5)
    assert terms["fl"].item() == pytest.approx(fl, rel=1e-5)
    assert terms["vf"].item() == pytest.approx(vf, rel=1e-5)
    assert terms["total"].item() == pytest.approx(seg.item() + vl + fl + 2 * vf, rel=1e-5)


def test_missing_maps_contribute_nothing_and_subsampled_targets_follow_the_index():
    logits = torch.randn(2, 1, 16, 16)
    mask = torch.rand(2, 16, 16) > 0.5
    terms = TBVSLoss()(TBVSOutput(logits), mask)
    assert set(terms) == {"seg", "total"} and terms["total"] == terms["seg"]
    s_vl = torch.rand(2, 1, 4, 4) * 2 - 1
    index = torch.tensor([[0, 5, 9], [15, 3, 4]])
    s_vf = torch.rand(2, 3, 3) * 2 - 1
    terms = TBVSLoss()(TBVSOutput(logits, s_vl, None, s_vf, index), mask)
    g = mask[:, None, 2::4, 2::4].float()
    full = affinity_targets(g)
    target = torch.stack([full[b][index[b]][:, index[b]] for b in range(2)])
    expected = F.binary_cross_entropy_with_logits(alignment_logits(s_vf), target)
    assert set(terms) == {"seg", "vl", "vf", "total"}
    torch.testing.assert_close(terms["vf"], expected)


def test_loss_decreases_over_20_adam_steps_on_a_toy_batch():
    model = create_model("demo", vf_pixels=128).train()
    arch = model.arch
    n, s = 2, arch.input_size
    images, flows = torch.randn(n, 3, 3, s, s), torch.randn(n, 3, 3, s, s)
    tokens, text_mask = torch.randn(n, 12, arch.text_dim), torch.ones(n, 12)
    text_mask[:, 9:] = 0
    gt = torch.zeros(n, 1, s, s)
    gt[0, :, 20:60, 30:70] = 1
    gt[1, :, 50:90, 10:40] = 1
    criterion = TBVSLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(20):
        terms = criterion(model(images, flows, tokens, text_mask), gt)
        assert all(torch.isfinite(v) for v in terms.values())
        opt.zero_grad()
        terms["total"].backward()
        opt.step()
        history.append({k: v.item() for k, v in terms.items()})
    assert set(history[0]) == {"seg", "vl", "fl", "vf", "total"}
    assert history[-1]["total"] < 0.7 * history[0]["total"]
    assert history[-1]["seg"] < history[0]["seg"]
