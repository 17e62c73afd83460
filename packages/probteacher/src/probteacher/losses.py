"""The Probabilistic Teacher objectives (Chen et al., ICML 2022), as the official code computes them.

Localisation: every box delta is a univariate Gaussian N(mu, v) with v = sigmoid(s) from the head's raw
output s. Source (supervised) boxes use a negative log-likelihood, target (unsupervised) boxes a KL
divergence towards the teacher's Gaussian, target classes a soft cross-entropy towards the temperature-scaled
teacher distribution. The Entropy Focal Loss (EFL) multiplies each unsupervised term by
(1 - H(teacher) / H_max)^lambda, down-weighting targets the teacher is unsure about.

All functions are element-wise (or row-wise for class vectors) and broadcast; reductions are the caller's.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shared.errors import UserError

__all__ = [
    "categorical_efl_weight",
    "gaussian_efl_weight",
    "gaussian_kl",
    "gaussian_nll",
    "laplace_efl_weight",
    "laplace_kl",
    "laplace_nll",
    "soft_cross_entropy",
]


def gaussian_nll(
    mu: torch.Tensor, s_raw: torch.Tensor, target: torch.Tensor, floor: float = 0.3, eps: float = 1e-9
) -> torch.Tensor:
    """-log( exp(-(mu - g)^2 / (2 (v + eps))) / sqrt(2 pi (v + floor)) + eps ), v = sigmoid(s_raw), per element.

    The official supervised box loss: the exponent uses v + 1e-9, the normaliser v + 0.3 (a floor that stops
    the loss from rewarding v -> 0), and 1e-9 is added to the density inside the log, which caps the loss at
    -log(1e-9) ~ 20.7 for far-off predictions (their gradient then vanishes, as in the official code).
    """
    v = torch.sigmoid(s_raw)
    density = torch.exp(-((mu - target) ** 2) / (2 * (v + eps))) / torch.sqrt(2 * math.pi * (v + floor))
    return -torch.log(density + eps)


def laplace_nll(
    mu: torch.Tensor, s_raw: torch.Tensor, target: torch.Tensor, floor: float = 0.3, eps: float = 1e-9
) -> torch.Tensor:
    """-log( exp(-|mu - g| / sqrt(v + eps)) / sqrt(4 (v + floor)) + eps ), v = sigmoid(s_raw), per element.

    The official ``MODEL_TYPE = "LAPLACE"`` box loss (scale b = sqrt(v)), with the same asymmetric constants
    as :func:`gaussian_nll`.
    """
    v = torch.sigmoid(s_raw)
    density = torch.exp(-(mu - target).abs() / torch.sqrt(v + eps)) / torch.sqrt(4 * (v + floor))
    return -torch.log(density + eps)


def gaussian_kl(mu_p: torch.Tensor, v_p: torch.Tensor, mu_q: torch.Tensor, v_q: torch.Tensor) -> torch.Tensor:
    """KL(N(mu_p, v_p) || N(mu_q, v_q)) per element, from variances (not raw outputs).

    = 1/2 log(v_q / v_p) - 1/2 + (v_p + (mu_q - mu_p)^2) / (2 v_q); p is the (detached) teacher, q the
    student, as in the official unsupervised box loss.
    """
    return 0.5 * torch.log(v_q / v_p) - 0.5 + (v_p + (mu_q - mu_p) ** 2) / (2 * v_q)


def laplace_kl(mu_p: torch.Tensor, v_p: torch.Tensor, mu_q: torch.Tensor, v_q: torch.Tensor) -> torch.Tensor:
    """KL(Laplace(mu_p, b_p) || Laplace(mu_q, b_q)) per element with b = sqrt(v).

    = b_p exp(-|mu_q - mu_p| / b_p) / b_q + |mu_q - mu_p| / b_q + log(b_q / b_p) - 1 (the official Laplace form).
    """
    b_p, b_q = torch.sqrt(v_p), torch.sqrt(v_q)
    d = (mu_q - mu_p).abs()
    return b_p * torch.exp(-d / b_p) / b_q + d / b_q + torch.log(b_q / b_p) - 1


def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor, tau: float) -> torch.Tensor:
    """Per row: sum_c softmax(teacher / tau)_c * -log_softmax(student)_c (the official soft class loss).

    Logits are (..., C); returns (...). The teacher logits are the target: pass them detached.
    """
    if not tau > 0:
        raise UserError(f"the classification temperature tau must be > 0, got {tau}")
    target = torch.softmax(teacher_logits / tau, dim=-1)
    return -(target * F.log_softmax(student_logits, dim=-1)).sum(-1)


def _focal(base: torch.Tensor, lam: float) -> torch.Tensor:
    if lam < 0:
        raise UserError(f"the EFL exponent lambda must be >= 0, got {lam}")
    return base.clamp_min(0) ** lam


def categorical_efl_weight(teacher_logits: torch.Tensor, lam: float) -> torch.Tensor:
    """Per row: (1 - H(softmax(logits)) / log C)^lam, the EFL weight of a categorical teacher over C classes.

    The entropy is that of the un-tempered teacher (as the official code). One-hot teacher -> 1, uniform -> 0,
    lam = 0 -> 1. Logits (..., C) -> weights (...).
    """
    p = torch.softmax(teacher_logits, dim=-1)
    entropy = -torch.special.xlogy(p, p).sum(-1)
    return _focal(1 - entropy / math.log(teacher_logits.shape[-1]), lam)


def gaussian_efl_weight(v: torch.Tensor, lam: float) -> torch.Tensor:
    """Per element: (1 - H_N(v) / H_N(1))^lam with H_N(v) = 1/2 log(2 pi e v), the base clamped at >= 0.

    ``v`` is the un-tempered teacher variance sigmoid(s) in (0, 1): the weight is 0 at v = 1 and exceeds 1
    for v < 1/(2 pi e) (the official code's form). v is clamped at the smallest normal float so that a
    variance that underflowed to 0 gives a large finite weight instead of inf.
    """
    v = v.clamp_min(torch.finfo(v.dtype).tiny)
    h_max = 0.5 * math.log(2 * math.pi * math.e)
    return _focal(1 - 0.5 * torch.log(2 * math.pi * math.e * v) / h_max, lam)


def laplace_efl_weight(v: torch.Tensor, lam: float) -> torch.Tensor:
    """Per element: (1 - H_L(v) / H_L(1))^lam with H_L(v) = 1 + 1/2 log(4 v) (Laplace, b = sqrt(v)).

    H_L(1) = 1 + log 2; the base is clamped at >= 0 and v at the smallest normal float, as in
    :func:`gaussian_efl_weight`.
    """
    v = v.clamp_min(torch.finfo(v.dtype).tiny)
    return _focal(1 - (1 + 0.5 * torch.log(4 * v)) / (1 + math.log(2)), lam)
