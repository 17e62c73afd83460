"""The method's pieces against hand-computed values: DivideMix's losses, the GMM, the correction, the ramp."""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lcbooster.config import LR_DROP_AT, RELABEL_AT, build_config, embedded_epoch
from lcbooster.correction import reliable_label_correction
from lcbooster.engine import scheduled_lr
from lcbooster.losses import (
    linear_rampup,
    mixup,
    mixup_lambda,
    negative_entropy,
    sharpen,
    soft_cross_entropy,
    uniform_prior_penalty,
    unlabeled_mse,
)
from lcbooster.selection import clean_detection_auc, gmm_clean_probability, gmm_input, min_max_normalise
from shared.errors import UserError


def test_sharpen_by_hand():
    p = torch.tensor([[0.6, 0.3, 0.1]])
    expected = torch.tensor([[0.36, 0.09, 0.01]]) / 0.46
    assert torch.allclose(sharpen(p, 0.5), expected)
    assert torch.allclose(sharpen(p, 1.0), p)


def test_soft_cross_entropy_and_mse_by_hand():
    logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0], [0.25, 0.75]])
    log_p = F.log_softmax(logits, 1)
    expected = -(log_p[0, 0] + 0.25 * log_p[1, 0] + 0.75 * log_p[1, 1]) / 2
    assert soft_cross_entropy(logits, targets).item() == pytest.approx(expected.item())
    p0 = 1 / (1 + math.exp(-2))
    mse = ((p0 - 1) ** 2 + (1 - p0 - 0) ** 2 + (0.5 - 0.25) ** 2 + (0.5 - 0.75) ** 2) / 4
    assert unlabeled_mse(logits, targets).item() == pytest.approx(mse, rel=1e-6)


def test_prior_penalty_zero_for_uniform_mean_and_positive_otherwise():
    balanced = torch.tensor([[5.0, 0.0], [0.0, 5.0]])  # mean prediction exactly uniform
    assert uniform_prior_penalty(balanced).item() == pytest.approx(0.0, abs=1e-7)
    skewed = torch.tensor([[5.0, 0.0], [5.0, 0.0]])
    p = torch.softmax(skewed, 1).mean(0)
    expected = 0.5 * math.log(0.5 / p[0].item()) + 0.5 * math.log(0.5 / p[1].item())
    assert uniform_prior_penalty(skewed).item() == pytest.approx(expected, rel=1e-6)
    assert expected > 0


def test_negative_entropy_by_hand():
    logits = torch.log(torch.tensor([[0.5, 0.5], [0.9, 0.1]]))
    expected = (2 * 0.5 * math.log(0.5) + 0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / 2
    assert negative_entropy(logits).item() == pytest.approx(expected, rel=1e-6)


def test_mixup_lambda_at_least_half():
    torch.manual_seed(0)
    draws = [mixup_lambda(4.0) for _ in range(500)]
    assert min(draws) >= 0.5 and max(draws) <= 1.0
    assert np.std(draws) > 0.01  # really random
    assert mixup_lambda(0.0) == 1.0


def test_mixup_uses_one_permutation_for_inputs_and_targets():
    x = torch.arange(4.0).view(4, 1)
    y = torch.eye(4)
    perm = torch.tensor([1, 0, 3, 2])
    mx, my = mixup(x, y, 0.7, perm)
    assert torch.allclose(mx[:, 0], torch.tensor([0.3, 0.7, 2.3, 2.7]))
    assert torch.allclose(my[0], torch.tensor([0.7, 0.3, 0.0, 0.0]))


def test_linear_rampup_at_epoch_boundaries():
    # 1-based epoch e, batch b of n: t = e - 1 + b / n; E_w = 10, length 16
    assert linear_rampup(9.0, 10, 25.0) == 0.0  # first batch of epoch 10 (still warm-up)
    assert linear_rampup(10.0, 10, 25.0) == 0.0  # first batch of epoch 11
    assert linear_rampup(18.0, 10, 25.0) == pytest.approx(12.5)
    assert linear_rampup(26.0, 10, 25.0) == pytest.approx(25.0)
    assert linear_rampup(300.0, 10, 50.0) == 50.0


def test_gmm_separates_synthetic_bimodal_losses():
    gen = np.random.default_rng(0)
    clean = gen.normal(0.1, 0.02, 3000)
    noisy = gen.normal(0.7, 0.1, 2000)
    losses = torch.tensor(np.concatenate([clean, noisy]), dtype=torch.float32)
    prob = gmm_clean_probability(min_max_normalise(losses), seed=0)
    truth = torch.cat([torch.ones(3000), torch.zeros(2000)]).bool()
    assert clean_detection_auc(prob, truth) > 0.999
    assert (prob[:3000] > 0.5).float().mean() > 0.99 and (prob[3000:] < 0.5).float().mean() > 0.99


def test_gmm_is_deterministic_given_seed():
    losses = torch.rand(1000)
    assert torch.equal(gmm_clean_probability(losses, 3), gmm_clean_probability(losses, 3))


def test_gmm_input_averages_last_five_only_at_high_noise():
    history = [torch.full((3,), float(i)) for i in range(7)]
    assert torch.equal(gmm_input(history, 0.8), history[-1])
    assert torch.allclose(gmm_input(history, 0.9), torch.full((3,), 4.0))  # mean of 2..6


def test_min_max_normalise():
    out = min_max_normalise(torch.tensor([2.0, 4.0, 3.0]))
    assert torch.allclose(out, torch.tensor([0.0, 1.0, 0.5]))


def test_correction_changes_exactly_the_confident_samples():
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 5, generator=gen) * 3
    targets = torch.randint(0, 5, (200,), generator=gen)
    clean = torch.randint(0, 5, (200,), generator=gen)
    result = reliable_label_correction(logits, targets, 0.8, clean=clean)
    probs = torch.softmax(logits, 1)
    confident = probs.max(1).values >= 0.8
    assert 0 < confident.sum() < 200
    assert torch.equal(result.overwritten, confident)
    assert torch.equal(result.targets[confident], probs.argmax(1)[confident])
    assert torch.equal(result.targets[~confident], targets[~confident])
    assert torch.equal(result.changed, result.targets != targets)
    expected = (result.targets[confident] == clean[confident]).float().mean().item()
    assert result.relabel_accuracy == pytest.approx(expected)
    assert result.label_accuracy_before == pytest.approx((targets == clean).float().mean().item())
    for labels, counts in (
        (targets, result.correct_per_class_before),
        (result.targets, result.correct_per_class_after),
    ):
        assert counts == [int(((labels == clean) & (clean == c)).sum()) for c in range(5)]


def test_correction_uses_softmax_of_averaged_logits_and_scope():
    # net logits (2, -2) and (-2, 2) average to (0, 0): confidence 0.5, though each net alone is confident
    mean_logits = (torch.tensor([[2.0, -2.0]]) + torch.tensor([[-2.0, 2.0]])) / 2
    result = reliable_label_correction(mean_logits, torch.tensor([1]), 0.6)
    assert not result.overwritten.any()
    logits = torch.tensor([[9.0, 0.0], [9.0, 0.0], [9.0, 0.0]])
    scoped = reliable_label_correction(logits, torch.tensor([1, 1, 1]), 0.5, indices=torch.tensor([2]))
    assert scoped.targets.tolist() == [1, 1, 0]


def test_presets_compress_the_cifar_schedule_and_keep_its_recipe():
    def schedule(config):
        return config.epochs, config.warmup_epochs, config.relabel_epochs, config.lr_milestones

    paper, small, demo = (build_config("cifar10", "sym90", "lcbooster", p) for p in ("paper", "small", "demo"))
    assert (schedule(paper), schedule(small), schedule(demo)) == (
        (300, 10, [101], [150]),
        (100, 3, [34], [50]),  # correction at 1/3, lr drop at 1/2, as in the paper
        (20, 1, [7], [10]),
    )
    assert (small.lambda_u, small.views, small.strong_aug, small.model) == (50.0, "ww_ws", "rand", "preact_resnet18")
    c100 = build_config("cifar100", "sym90", "lcbooster", "small")
    assert (c100.epochs, c100.lr_milestones, c100.lr_warmup_epochs) == (133, [100], 10)
    assert build_config("cifar10", "sym90", "dividemix", "demo").relabel_epochs == []


def test_a_correction_that_can_never_fire_is_refused():
    with pytest.raises(UserError, match="epoch 101 never fires"):  # the paper's correction in a 50-epoch run
        build_config("cifar10", "sym90", "lcbooster", "paper", epochs=50)
    with pytest.raises(UserError, match="never fires"):  # inside the 10 warm-up epochs
        build_config("digits", "sym90", "lcbooster", "demo", relabel_epochs=[5])
    assert build_config("cifar10", "sym90", "dividemix", "paper", epochs=50).epochs == 50  # no correction to fire
    shorter = build_config("digits", "sym90", "lcbooster", "demo", epochs=30)  # the CPU schedule follows --epochs
    assert (shorter.relabel_epochs, shorter.lr_milestones) == ([16], [20])


def test_embedded_schedules_keep_the_papers_places_for_correction_and_lr_drop():
    """Epoch 101 and the drop after 151 of 300 (warm-up 10): 91/290 and 141/290 of the co-training epochs."""
    assert embedded_epoch(RELABEL_AT, 10, 300) == 101 and embedded_epoch(LR_DROP_AT, 10, 300) == 151

    def places(dataset, preset, **overrides):
        config = build_config(dataset, "sym90", "lcbooster", preset, **overrides)
        return config.warmup_epochs, config.relabel_epochs, config.lr_milestones, config.epochs, config.strong_aug

    assert places("digits", "demo") == (10, [19], [25], 40, "digits")
    assert places("digits", "small") == (10, [29], [39], 70, "digits")
    assert places("mnist5k", "demo") == (5, [10], [12], 20, "digits")
    assert places("digits", "small", warmup_epochs=20) == (20, [36], [44], 70, "digits")  # a longer warm-up
    dividemix = build_config("digits", "sym90", "dividemix", "small")
    assert (dividemix.relabel_epochs, dividemix.lr_milestones, dividemix.views) == ([], [39], "dividemix")


def test_lr_schedule_milestone_and_warmup():
    config = build_config("cifar10", "sym80", "lcbooster", "paper")
    assert scheduled_lr(config, 150) == pytest.approx(0.02)
    assert scheduled_lr(config, 151) == pytest.approx(0.002)  # milestone 150 takes effect at epoch 151
    c100 = build_config("cifar100", "sym90", "lcbooster", "paper")
    assert scheduled_lr(c100, 1) == pytest.approx(0.002)
    assert scheduled_lr(c100, 30) == pytest.approx(0.02 * (1 - (1 - 29 / 30) * 0.9))
    assert scheduled_lr(c100, 31) == pytest.approx(0.02)
    assert scheduled_lr(c100, 301) == pytest.approx(0.002)


def test_released_configs():
    c10_90 = build_config("cifar10", "sym90", "lcbooster", "paper")
    assert (c10_90.lambda_u, c10_90.p_threshold, c10_90.relabel_threshold) == (50.0, 0.6, 0.8)
    assert (c10_90.relabel_epochs, c10_90.views, c10_90.strong_aug, c10_90.unlabeled_ratio) == (
        [101],
        "ww_ws",
        "rand",
        2,
    )
    assert c10_90.noise_ratio == 0.9 and c10_90.noise_mode == "sym"
    c100_80 = build_config("cifar100", "sym80", "lcbooster", "paper")
    assert (c100_80.lambda_u, c100_80.relabel_threshold, c100_80.views, c100_80.epochs) == (150.0, 0.5, "wwss", 400)
    assert c100_80.warmup_epochs == 30 and c100_80.lr_milestones == [300]
    assert build_config("cifar100", "sym90", "lcbooster", "paper").relabel_threshold == 0.3
    asym = build_config("cifar10", "asym40", "lcbooster", "paper")
    assert (asym.lambda_u, asym.relabel_threshold, asym.batch_size, asym.unlabeled_ratio) == (0.0, 0.6, 128, 1)
    assert asym.confidence_penalty
    dm = build_config("cifar10", "sym90", "dividemix", "paper")
    assert (dm.lambda_u, dm.p_threshold, dm.relabel_epochs, dm.views, dm.unlabeled_ratio) == (
        50.0,
        0.6,
        [],
        "dividemix",
        1,
    )
    assert build_config("cifar10", "sym20", "dividemix", "paper").lambda_u == 0.0


def test_config_rejects_impossible_options_and_warns_on_table7():
    with pytest.raises(UserError, match="asymmetric"):
        build_config("cifar100", "asym40", "lcbooster", "paper")
    with pytest.raises(UserError, match="sym<percent>"):
        build_config("cifar10", "gauss30", "lcbooster", "paper")
    with pytest.raises(UserError):
        build_config("cifar10", "sym150", "lcbooster", "paper")
    with pytest.raises(UserError, match="warmup"):
        build_config("mnist5k", "sym80", "dividemix", "demo", warmup_epochs=40, epochs=30)
    with pytest.raises(UserError, match="CIFAR recipe"):
        build_config("digits", "sym80", "lcbooster", "paper")
    with pytest.raises(UserError, match="unknown preset"):
        build_config("digits", "sym80", "lcbooster", "tiny")
    with pytest.warns(UserWarning, match="Table 7"):
        build_config("cifar10", "sym90", "dividemix", "paper", lambda_u=25.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        build_config("cifar10", "sym90", "dividemix", "paper")
