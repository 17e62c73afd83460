"""Verification accuracy (InsightFace's 10-fold protocol), leak rates against their chance levels, fidelity."""

import math

import pytest
import torch

from facemae import metrics
from facemae.metrics import fold_slices, leak_rates, psnr, ssim, verification_accuracy
from shared.errors import UserError


def unit_pairs(squared_distances):
    """Pairs of 2-D unit vectors at the given squared distances (2 - 2 cos a)."""
    angles = torch.acos(1 - torch.as_tensor(squared_distances, dtype=torch.float64) / 2)
    first = torch.stack([torch.ones_like(angles), torch.zeros_like(angles)], 1)
    second = torch.stack([angles.cos(), angles.sin()], 1)
    return torch.stack([first, second], 1).reshape(-1, 2)


def test_folds_are_contiguous_and_the_first_ones_longer():
    assert [(s.start, s.stop) for s in fold_slices(25, 10)][:6] == [(0, 3), (3, 6), (6, 9), (9, 12), (12, 15), (15, 17)]
    assert fold_slices(25, 10)[-1] == slice(23, 25)


def test_identical_same_pairs_and_orthogonal_different_pairs_are_perfect():
    torch.manual_seed(0)
    anchors = torch.randn(60, 64)
    other = torch.linalg.qr(torch.randn(64, 64)).Q[:2]  # two orthonormal directions
    issame = torch.arange(60) % 2 == 0
    pairs = []
    for i in range(60):
        pairs += [anchors[i], anchors[i]] if issame[i] else [other[0], other[1]]
    result = verification_accuracy(torch.stack(pairs), issame)
    assert result["accuracy"] == 1.0 and result["std"] == 0.0
    assert 0 < result["threshold"] <= 2.0


def test_random_embeddings_are_at_chance():
    torch.manual_seed(1)
    issame = torch.arange(1200) < 600
    result = verification_accuracy(torch.randn(2400, 64), issame[torch.randperm(1200)])
    assert abs(result["accuracy"] - 0.5) < 0.05


def test_threshold_comes_from_the_other_nine_folds():
    """Same pairs at 0.195, different at 1.0, except fold 0 whose same pairs sit at 0.705: held out, fold 0
    gets the first perfect threshold of the others (0.20) and scores 0.5; every other fold gets 0.71."""
    distances = [0.195 if i % 2 == 0 else 1.0 for i in range(100)]
    distances[0:10:2] = [0.705] * 5
    issame = torch.arange(100) % 2 == 0
    result = verification_accuracy(unit_pairs(distances), issame)
    assert result["accuracy"] == pytest.approx(0.95)
    assert result["std"] == pytest.approx(0.15)
    assert result["threshold"] == pytest.approx((0.20 + 9 * 0.71) / 10)


def test_verification_refuses_odd_inputs():
    with pytest.raises(UserError, match="2N embeddings"):
        verification_accuracy(torch.randn(9, 4), torch.ones(5, dtype=torch.bool))


def identities(num_ids=40, per_id=10):
    return torch.arange(num_ids).repeat_interleave(per_id)


def test_probes_equal_to_the_gallery_leak_everything():
    torch.manual_seed(2)
    gallery = torch.randn(400, 32)
    report = leak_rates(gallery, identities(), gallery * 3, torch.arange(400))
    assert report["instance@1"] == 1.0 and report["identity@1"] == 1.0 and report["instance@5"] == 1.0
    assert report["mean_cosine"] == pytest.approx(1.0)
    assert report["instance_chance@1"] == pytest.approx(1 / 400)
    assert report["identity_chance@1"] == pytest.approx(10 / 400)


@pytest.mark.parametrize(("mode", "chance"), [("all", 10 / 400), ("exclude-source", 9 / 399)])
def test_shuffled_sources_leak_at_chance(mode, chance):
    torch.manual_seed(3)
    gallery, labels = torch.randn(400, 32), identities()
    shuffle = torch.randperm(400)
    report = leak_rates(gallery, labels, gallery[shuffle], torch.arange(400), mode=mode)
    assert report["identity_chance@1"] == pytest.approx(chance)
    assert abs(report["identity@1"] - chance) < 0.02
    assert report["instance@1"] < 0.02


@pytest.mark.parametrize("mode", ["all", "exclude-source"])
def test_leak_rates_do_not_depend_on_the_block_size(monkeypatch, mode):
    torch.manual_seed(5)
    gallery, labels = torch.randn(400, 8), identities()
    probes = gallery + 0.8 * torch.randn(400, 8)
    whole = leak_rates(gallery, labels, probes, torch.arange(400), mode=mode)
    monkeypatch.setattr(metrics, "SIMILARITY_BLOCK", 400 * 7)  # 58 blocks of 7 probes and one of 6
    assert leak_rates(gallery, labels, probes, torch.arange(400), mode=mode) == whole
    assert 0.1 < whole["instance@1"] < 0.9


def test_exclude_source_needs_another_photo_of_the_person():
    gallery = torch.eye(4)
    labels = torch.tensor([0, 0, 1, 2])
    probes = gallery.clone()
    probes[0, 1] = 0.5  # probe 0 is closest to its source (0), then to 1, the same person
    probes[1, 2] = 0.3  # the others come next to someone else
    probes[2, 3] = 0.5
    probes[3, 0] = 0.3
    everything = leak_rates(gallery, labels, probes, torch.arange(4), topk=(1,))
    assert everything["identity@1"] == 1.0
    others = leak_rates(gallery, labels, probes, torch.arange(4), topk=(1,), mode="exclude-source")
    assert others["identity@1"] == 0.25  # only probe 0 finds its person without its own photo
    assert others["instance@1"] == 1.0
    assert others["identity_chance@1"] == pytest.approx((1 / 3 + 1 / 3 + 0 + 0) / 4)  # (n_y - 1) / (N - 1)


def test_identity_chance_at_k_is_hypergeometric():
    report = leak_rates(torch.randn(10, 4), torch.tensor([0] * 3 + [1] * 7), torch.randn(10, 4), torch.arange(10))
    # identity 0 (3 of 10): 1 - C(7, 5)/C(10, 5); identity 1 (7 of 10): 1 - C(3, 5)/C(10, 5) = 1
    expected = (3 * (1 - math.comb(7, 5) / math.comb(10, 5)) + 7 * 1.0) / 10
    assert report["identity_chance@5"] == pytest.approx(expected)
    assert report["instance_chance@5"] == pytest.approx(0.5)


def test_leak_rates_refuse_bad_options():
    with pytest.raises(UserError, match="gallery must be one of"):
        leak_rates(torch.randn(4, 2), torch.arange(4), torch.randn(4, 2), torch.arange(4), mode="probe")
    with pytest.raises(UserError, match="top-k"):
        leak_rates(torch.randn(4, 2), torch.arange(4), torch.randn(4, 2), torch.arange(4), topk=(1, 5))


def test_psnr_and_ssim_by_hand():
    images = torch.zeros(1, 3, 16, 16)
    assert psnr(images + 0.2, images).item() == pytest.approx(10 * math.log10(4 / 0.04), rel=1e-5)
    a, b = torch.full((1, 3, 16, 16), 0.5), torch.full((1, 3, 16, 16), -0.25)
    c1 = (0.01 * 2) ** 2
    expected = (2 * 0.5 * -0.25 + c1) / (0.5**2 + 0.25**2 + c1)  # constant images: luminance term only
    assert ssim(a, b).item() == pytest.approx(expected, rel=1e-4)
    torch.manual_seed(4)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2))
    noisy = ssim(x + 0.1 * torch.randn_like(x), x)
    noisier = ssim(x + 0.5 * torch.randn_like(x), x)
    assert (noisier < noisy).all() and (noisy < 1).all()
