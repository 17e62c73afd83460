"""The losses against hand-computed values and the official release's golden outputs (fixtures/README.md)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from knowfactor.losses import batch_gaussian_stats, infomax_loss, infomin_loss, label_smooth_ce, soft_target_kd

GOLDEN = Path(__file__).parent / "fixtures" / "losses_official_golden.pt"
E = math.e


def close(value: torch.Tensor, expected: float, tol: float = 1e-6) -> bool:
    return abs(value.item() - expected) <= tol * max(1.0, abs(expected))


# --- golden values of the official release ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def golden() -> dict:
    assert GOLDEN.is_file(), f"golden file missing: {GOLDEN}"
    return torch.load(GOLDEN, weights_only=True)


def test_golden_holds_every_case(golden):
    assert [c["x1"].shape[0] for c in golden["cases"]] == [4, 16, 64]
    assert golden["kd"]["T"] == 10.0


@pytest.mark.parametrize("index", [0, 1, 2])
def test_matches_official_infomax_and_infomin(golden, index):
    case = golden["cases"][index]
    torch.testing.assert_close(infomax_loss(case["x1"], case["x2"]), case["infomax"], atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(
        infomin_loss(case["mu_1d"], case["log_var_1d"]), case["infomin_1d"], atol=1e-6, rtol=1e-5
    )
    torch.testing.assert_close(
        infomin_loss(case["mu_2d"], case["log_var_2d"]), case["infomin_2d"], atol=1e-6, rtol=1e-5
    )


def test_matches_official_soft_target(golden):
    kd = golden["kd"]
    loss = soft_target_kd(kd["student_logits"], kd["teacher_logits"], kd["T"])
    torch.testing.assert_close(loss, kd["loss"], atol=1e-6, rtol=1e-5)


# --- InfoMax ---------------------------------------------------------------------------------------------------


def test_infomax_identical_orthonormal_inputs():
    # S = I: E_J = B / B² = 1/B, E_M = (B(B−1)·e⁰ + B) / B² = 1  ->  loss = −1/B.
    x = torch.eye(8) * 3.0
    assert close(infomax_loss(x, x), -1 / 8)


def test_infomax_orthogonal_pairs():
    # S = [[0, 1], [1, 0]]: E_J = 0, E_M = (2e + 2)/4  ->  loss = log((e + 1)/2).
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    c = torch.tensor([[0.0, 2.0], [5.0, 0.0]])
    assert close(infomax_loss(a, c), math.log((E + 1) / 2))


def test_infomax_two_by_two_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    c = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # â = [[1, 0], [r, r]] with r = 1/√2, so S = [[1, 0], [r, r]].
    r = 1 / math.sqrt(2)
    e_joint = (1 + r) / 4  # diagonal sum over B², not B
    e_marginal = (math.exp(0.0) + math.exp(r) + 2) / 4  # off-diagonal exps + one per masked diagonal entry
    assert close(infomax_loss(a, c), -(e_joint - math.log(e_marginal)))
    # The textbook DV bound divides by B and averages the off-diagonal only.
    assert close(infomax_loss(a, c, mode="dv"), -((1 + r) / 2 - math.log((1 + math.exp(r)) / 2)))


def test_infomax_batch_of_one():
    # S = [[1]]: E_J = 1, the masked entry gives E_M = exp(0) = 1  ->  −1.
    assert close(infomax_loss(torch.tensor([[3.0, 4.0]]), torch.tensor([[6.0, 8.0]])), -1.0)
    with pytest.raises(ValueError, match="at least 2"):
        infomax_loss(torch.ones(1, 2), torch.ones(1, 2), mode="dv")


def test_infomax_zero_row_stays_finite():
    a = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    assert torch.isfinite(infomax_loss(a, torch.eye(2)))


def test_infomax_alternative_modes_by_hand():
    x = torch.eye(2)
    assert close(infomax_loss(x, x, mode="dv"), -1.0)  # E_J = 1, E_M = e⁰ = 1
    assert close(infomax_loss(x, x.flip(0), mode="dv"), 1.0)  # E_J = 0, E_M = e
    assert close(infomax_loss(x, x, mode="infonce"), math.log(1 + math.exp(-10.0)))  # rows [10, 0] / τ = 0.1
    with pytest.raises(ValueError, match="unknown infomax mode"):
        infomax_loss(x, x, mode="nce")


def test_infomax_gradients_reach_both_inputs():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(6, 5, generator=g, requires_grad=True)
    c = torch.randn(6, 5, generator=g, requires_grad=True)
    infomax_loss(a, c).backward()
    for t in (a, c):
        assert t.grad is not None and torch.isfinite(t.grad).all() and t.grad.abs().sum() > 0


# --- InfoMin ---------------------------------------------------------------------------------------------------


def test_batch_gaussian_stats_uses_unbiased_variance():
    mu, logvar = batch_gaussian_stats(torch.tensor([[0.0, 1.0], [2.0, 1.0 + 1e-3]]))
    torch.testing.assert_close(mu, torch.tensor([1.0, 1.0005]))
    assert close(logvar[0], math.log(2.0))  # unbiased: ((−1)² + 1²) / (2 − 1); biased would give log 1 = 0


def test_infomin_one_dimensional_by_hand():
    mu, logvar = torch.tensor([1.0, 0.0]), torch.tensor([0.0, math.log(2.0)])
    # terms: 1 + 0 − 1 − 1 = −1 and 1 + log 2 − 0 − 2 = log 2 − 1; −½ · mean
    assert close(infomin_loss(mu, logvar), (2 - math.log(2.0)) / 4)


def test_infomin_two_dimensional_sums_over_d_and_averages_over_batch():
    mu, logvar = torch.tensor([[1.0, 1.0], [0.0, 0.0]]), torch.zeros(2, 2)
    assert close(infomin_loss(mu, logvar), (1.0 + 0.0) / 2)  # per-sample KL 2·½ and 0


def test_infomin_of_standard_normal_batch_is_near_zero_and_detects_shift():
    z = torch.randn(4096, 16, generator=torch.Generator().manual_seed(0))
    assert 0 <= infomin_loss(*batch_gaussian_stats(z)).item() < 5e-3
    # N(1, 4): KL = ½(σ² + μ² − 1 − log σ²) = ½(4 + 1 − 1 − log 4)
    shifted = infomin_loss(*batch_gaussian_stats(2 * z + 1)).item()
    assert abs(shifted - 0.5 * (4 - math.log(4.0))) < 0.05


# --- KD and label smoothing ------------------------------------------------------------------------------------


def test_soft_target_two_classes_by_hand():
    student = torch.tensor([[2.0, 0.0], [0.3, -0.3]])
    teacher = torch.tensor([[0.0, 2.0], [0.3, -0.3]])
    # T = 2: row 0 compares p_s = softmax([1, 0]) with p_t = softmax([0, 1]): KL(p_t ‖ p_s) = (e − 1)/(e + 1);
    # row 1 is identical (KL 0); batch mean then × T².
    assert close(soft_target_kd(student, teacher, 2.0), 4 * ((E - 1) / (E + 1)) / 2)


def test_soft_target_is_zero_for_equal_logits():
    logits = torch.randn(5, 7, generator=torch.Generator().manual_seed(1))
    assert abs(soft_target_kd(logits, logits.clone(), 10.0).item()) < 1e-4  # float32 rounding × T²


def test_label_smoothing_modes_by_hand():
    logits = torch.tensor([[0.0, math.log(3.0)]])  # log-softmax = [log ¼, log ¾]
    target = torch.tensor([1])
    low, high = math.log(0.25), math.log(0.75)
    classy = -((0.05 / 1.1) * low + (1.05 / 1.1) * high)  # q = (onehot + ε/K)/(1 + ε)
    original = -(0.05 * low + 0.95 * high)  # q = (1 − ε)·onehot + ε/K
    assert close(label_smooth_ce(logits, target, 0.1), classy)
    assert close(label_smooth_ce(logits, target, 0.1, mode="original"), original)
    assert not math.isclose(classy, original, rel_tol=1e-4)


def test_label_smoothing_soft_targets():
    logits = torch.tensor([[0.0, math.log(3.0)], [1.0, -1.0]])
    hard = torch.tensor([1, 0])
    assert close(label_smooth_ce(logits, F.one_hot(hard, 2).float()), label_smooth_ce(logits, hard).item())
    mixed = torch.tensor([[0.3, 0.7]])
    q = (mixed + 0.05) / 1.1
    expected = -(q[0, 0] * math.log(0.25) + q[0, 1] * math.log(0.75)).item()
    assert close(label_smooth_ce(logits[:1], mixed), expected)
    assert close(label_smooth_ce(logits, hard, 0.0), F.cross_entropy(logits, hard).item())
