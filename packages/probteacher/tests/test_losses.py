import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Laplace, Normal, kl_divergence

from probteacher.losses import (
    categorical_efl_weight,
    gaussian_efl_weight,
    gaussian_kl,
    gaussian_nll,
    laplace_efl_weight,
    laplace_kl,
    laplace_nll,
    soft_cross_entropy,
)
from shared.errors import UserError

LOG_2PIE = math.log(2 * math.pi * math.e)


def _box_params(n=64):
    mu = torch.rand(n, 4, dtype=torch.float64) - 0.5
    target = mu + (torch.rand(n, 4, dtype=torch.float64) - 0.5)  # |mu - g| <= 0.5: the +1e-9 is negligible
    s_raw = torch.rand(n, 4, dtype=torch.float64) * 4 - 2
    return mu, s_raw, target


def test_gaussian_nll_is_the_official_closed_form():
    mu, s_raw, target = _box_params()
    v = torch.sigmoid(s_raw)
    expected = 0.5 * (mu - target) ** 2 / (v + 1e-9) + 0.5 * torch.log(2 * math.pi * (v + 0.3))
    torch.testing.assert_close(gaussian_nll(mu, s_raw, target), expected, rtol=0, atol=1e-7)
    # without the floor it is the ordinary Gaussian NLL of N(mu, v)
    plain = -Normal(mu, v.sqrt()).log_prob(target)
    torch.testing.assert_close(gaussian_nll(mu, s_raw, target, floor=0.0, eps=0.0), plain)
    assert gaussian_nll(mu, s_raw, target).shape == (64, 4)


def test_gaussian_nll_is_monotone_in_the_error_and_capped():
    err = torch.linspace(0, 3, 61, dtype=torch.float64)
    loss = gaussian_nll(torch.zeros_like(err), torch.zeros_like(err), err)
    assert (loss.diff() > 0).all()
    assert torch.equal(loss, gaussian_nll(torch.zeros_like(err), torch.zeros_like(err), -err))  # symmetric
    far = gaussian_nll(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), torch.full((1,), 1e3))
    assert far.item() == pytest.approx(-math.log(1e-9))  # the outer +1e-9 bounds the loss


def test_laplace_nll_closed_form():
    mu, s_raw, target = _box_params()
    v = torch.sigmoid(s_raw)
    expected = (mu - target).abs() / torch.sqrt(v + 1e-9) + 0.5 * torch.log(4 * (v + 0.3))
    torch.testing.assert_close(laplace_nll(mu, s_raw, target), expected, rtol=0, atol=1e-7)
    plain = -Laplace(mu, v.sqrt()).log_prob(target)
    torch.testing.assert_close(laplace_nll(mu, s_raw, target, floor=0.0, eps=0.0), plain)


def test_gaussian_kl_zero_positive_and_equal_to_torch():
    mu_p, mu_q = torch.randn(2, 50, dtype=torch.float64)
    v_p, v_q = torch.rand(2, 50, dtype=torch.float64) * 0.9 + 0.05
    torch.testing.assert_close(gaussian_kl(mu_p, v_p, mu_p, v_p), torch.zeros(50, dtype=torch.float64))
    kl = gaussian_kl(mu_p, v_p, mu_q, v_q)
    assert (kl > 0).all()
    torch.testing.assert_close(kl, kl_divergence(Normal(mu_p, v_p.sqrt()), Normal(mu_q, v_q.sqrt())))
    # the direction is KL(teacher p || student q): swapping the arguments changes the value
    assert not torch.allclose(kl, gaussian_kl(mu_q, v_q, mu_p, v_p))


@pytest.mark.parametrize(
    ("mu_p", "v_p", "mu_q", "v_q"), [(0.0, 0.25, 0.0, 0.25), (0.3, 0.04, -0.2, 0.5), (1.0, 0.6, 0.2, 0.1)]
)
def test_laplace_kl_matches_a_numerical_integral(mu_p, v_p, mu_q, v_q):
    p = Laplace(torch.tensor(mu_p, dtype=torch.float64), torch.tensor(v_p, dtype=torch.float64).sqrt())
    q = Laplace(torch.tensor(mu_q, dtype=torch.float64), torch.tensor(v_q, dtype=torch.float64).sqrt())
    x = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    log_p = p.log_prob(x)
    numeric = torch.trapezoid(log_p.exp() * (log_p - q.log_prob(x)), x)
    value = laplace_kl(*(torch.tensor(t, dtype=torch.float64) for t in (mu_p, v_p, mu_q, v_q)))
    assert value.item() == pytest.approx(numeric.item(), abs=1e-6)
    assert (value.item() == 0) == (mu_p == mu_q and v_p == v_q)


def test_soft_cross_entropy_values_and_hard_limit():
    student, teacher = torch.randn(2, 20, 5, dtype=torch.float64)
    expected = -(torch.softmax(teacher / 0.5, -1) * torch.log_softmax(student, -1)).sum(-1)
    torch.testing.assert_close(soft_cross_entropy(student, teacher, 0.5), expected)
    hard = F.cross_entropy(student, teacher.argmax(-1), reduction="none")
    torch.testing.assert_close(soft_cross_entropy(student, teacher, 1e-4), hard)
    assert not torch.allclose(soft_cross_entropy(student, teacher, 1.0), hard)
    with pytest.raises(UserError, match="tau"):
        soft_cross_entropy(student, teacher, 0.0)


def test_categorical_efl_weight():
    one_hot = torch.tensor([[0.0, -math.inf, -math.inf], [-math.inf, 3.0, -math.inf]])
    torch.testing.assert_close(categorical_efl_weight(one_hot, 0.5), torch.ones(2))
    assert categorical_efl_weight(torch.tensor([[20.0, 0.0, 0.0, 0.0]]), 0.5).item() > 0.999
    assert categorical_efl_weight(torch.zeros(3, 9), 0.5).max().item() < 1e-3  # uniform teacher
    p = torch.tensor([0.9, 0.1], dtype=torch.float64)
    entropy = -(0.9 * math.log(0.9) + 0.1 * math.log(0.1))
    assert categorical_efl_weight(p.log(), 0.5).item() == pytest.approx(math.sqrt(1 - entropy / math.log(2)))
    # the entropy is that of the un-tempered distribution, and lambda = 0 gives ones
    logits = torch.randn(10, 4)
    torch.testing.assert_close(categorical_efl_weight(logits, 0.0), torch.ones(10))
    assert ((categorical_efl_weight(logits, 0.5) > 0) & (categorical_efl_weight(logits, 0.5) < 1)).all()
    with pytest.raises(UserError, match="lambda"):
        categorical_efl_weight(logits, -1.0)


def test_gaussian_efl_weight():
    assert gaussian_efl_weight(torch.tensor([1.0]), 0.5).item() == pytest.approx(0.0, abs=1e-6)
    threshold = 1 / (2 * math.pi * math.e)
    small = torch.tensor([0.9 * threshold, 0.01, 1e-4])
    assert (gaussian_efl_weight(small, 0.5) > 1).all()
    middle = torch.tensor([1.1 * threshold, 0.3, 0.9])
    assert ((gaussian_efl_weight(middle, 0.5) < 1) & (gaussian_efl_weight(middle, 0.5) > 0)).all()
    v = torch.linspace(0.001, 0.999, 200, dtype=torch.float64)
    w = gaussian_efl_weight(v, 0.5)
    torch.testing.assert_close(w, (1 - 0.5 * torch.log(2 * math.pi * math.e * v) / (0.5 * LOG_2PIE)).sqrt())
    assert (w.diff() < 0).all()
    torch.testing.assert_close(gaussian_efl_weight(v, 0.0), torch.ones_like(v))
    assert torch.isfinite(gaussian_efl_weight(torch.tensor([0.0, 1.5]), 0.5)).all()
    assert gaussian_efl_weight(torch.tensor([1.5]), 0.5).item() == 0.0  # negative base clamped


def test_laplace_efl_weight():
    assert laplace_efl_weight(torch.tensor([1.0]), 0.5).item() == pytest.approx(0.0, abs=1e-6)
    v = torch.linspace(0.001, 0.999, 50, dtype=torch.float64)
    expected = (1 - (1 + 0.5 * torch.log(4 * v)) / (1 + math.log(2))).sqrt()
    torch.testing.assert_close(laplace_efl_weight(v, 0.5), expected)
    torch.testing.assert_close(laplace_efl_weight(v, 0.0), torch.ones_like(v))


def test_gradients_are_finite_at_extremes():
    mu = torch.tensor([0.0, 5.0, -100.0, 0.1], requires_grad=True)
    s_raw = torch.tensor([-30.0, 30.0, 0.0, -5.0], requires_grad=True)
    target = torch.tensor([0.0, -5.0, 100.0, 0.0])
    total = gaussian_nll(mu, s_raw, target).sum() + laplace_nll(mu, s_raw, target).sum()
    v_p = torch.sigmoid(torch.tensor([-10.0, 0.0, 10.0, 2.0])) * 0.5
    v_q = torch.sigmoid(s_raw)
    total = total + gaussian_kl(target, v_p, mu, v_q).sum() + laplace_kl(target, v_p, mu, v_q).sum()
    logits = torch.tensor([[50.0, -50.0, 0.0], [0.0, 0.0, 0.0]], requires_grad=True)
    total = total + soft_cross_entropy(logits, torch.tensor([[-40.0, 40.0, 0.0], [1.0, 2.0, 3.0]]), 0.5).sum()
    total.backward()
    for tensor in (mu, s_raw, logits):
        assert torch.isfinite(tensor.grad).all()
    assert torch.isfinite(total)
    assert s_raw.grad.abs().sum() > 0
