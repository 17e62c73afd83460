"""The objectives of DivideMix (Li, Socher, Hoi, "DivideMix: Learning with Noisy Labels as Semi-supervised
Learning", ICLR 2020) as LC-Booster trains them; equation numbers are DivideMix's.

The total co-training loss is Eq. (12), L = L_X + λu·L_U + λr·L_reg (:mod:`lcbooster.engine`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def sharpen(probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """Temperature sharpening q = p^(1/T) / sum_c p^(1/T) of co-refined / co-guessed labels (Eq. (4), T = 0.5)."""
    powered = probs.pow(1.0 / temperature)
    return powered / powered.sum(dim=1, keepdim=True)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_X of Eq. (9): -mean_i sum_c y_ic log softmax(z_i)_c over mixed soft targets (also ``SmoothCE``, λu = 0)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def unlabeled_mse(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """L_U of Eq. (10): mean over rows and classes of (softmax(z) - q)^2, as the official code averages it."""
    return (torch.softmax(logits, dim=1) - targets).pow(2).mean()


def linear_rampup(progress: float, warmup_epochs: int, lambda_u: float, length: int = 16) -> float:
    """λu(t) = λu_max * clip((t - E_w) / length, 0, 1), t = (epoch - 1) + batch / iterations (1-based epochs).

    The weight of L_U in Eq. (12), ramped as the official code's ``linear_rampup`` (``Train_cifar.py``).
    """
    return lambda_u * min(max((progress - warmup_epochs) / length, 0.0), 1.0)


def uniform_prior_penalty(logits: torch.Tensor) -> torch.Tensor:
    """L_reg of Eq. (11): KL(π || p̄) = sum_c π_c log(π_c / p̄_c), π uniform, p̄ the batch-mean prediction."""
    mean_prob = torch.softmax(logits, dim=1).mean(dim=0)
    num_classes = logits.shape[1]
    return (math.log(1.0 / num_classes) - mean_prob.clamp_min(1e-12).log()).sum() / num_classes


def negative_entropy(logits: torch.Tensor) -> torch.Tensor:
    """Confidence penalty of the warm-up under asymmetric noise: -H of Eq. (2), mean_i sum_c p_ic log p_ic."""
    probs = torch.softmax(logits, dim=1)
    return (probs * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def mixup_lambda(alpha: float) -> float:
    """λ ~ Beta(α, α) (Eq. (5)), then λ <- max(λ, 1 - λ) (Eq. (6)) so the mixed sample stays closer to its own input."""
    lam = torch.distributions.Beta(alpha, alpha).sample().item() if alpha > 0 else 1.0
    return max(lam, 1.0 - lam)


def mixup(
    inputs: torch.Tensor, targets: torch.Tensor, lam: float, permutation: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """MixMatch's mix with one permutation over all rows: λX + (1-λ)X[π], λY + (1-λ)Y[π] (Eqs. (7) and (8))."""
    return (
        lam * inputs + (1.0 - lam) * inputs[permutation],
        lam * targets + (1.0 - lam) * targets[permutation],
    )
