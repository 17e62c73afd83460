"""SymNets' domain-confusion objectives and SlimDA's SEED (spec §2.4).

Notation: ``z`` are the 2K logits of Cs ⊕ Ct, P = softmax(z) over all 2K, ``u`` the K logits of Ca.
Domain masses log Σ_{k≤K} P_k and log Σ_{k>K} P_k are computed as differences of log-sum-exps: exact and
finite where SymNets adds ε = 1e-6 inside the log.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lambda_schedule(progress: float) -> float:
    """λ_p = 2 / (1 + exp(−10·p)) − 1 (SymNets, DANN): 0 at p = 0, ≈ 0.99991 at p = 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def lr_schedule(progress: float, base_lr: float) -> float:
    """lr_p = lr₀ / (1 + 10·p)^0.75 (SymNets' annealing of the new layers; the backbone takes 0.1× of it)."""
    return base_lr / (1.0 + 10.0 * progress) ** 0.75


def source_mass_log(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log Σ_{k≤K} P_k(x): log-mass of the source half (Cs) of the 2K-way softmax, per sample."""
    return torch.logsumexp(z[:, :num_classes], dim=1) - torch.logsumexp(z, dim=1)


def target_mass_log(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log Σ_{k>K} P_k(x): log-mass of the target half (Ct), per sample."""
    return torch.logsumexp(z[:, num_classes:], dim=1) - torch.logsumexp(z, dim=1)


def folded_entropy(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean H(q) with q_k = P_k + P_{K+k}: SymNets' entropy-minimisation term on target data."""
    p = z.softmax(dim=1)
    q = p[:, :num_classes] + p[:, num_classes:]
    return -torch.special.xlogy(q, q).sum(dim=1).mean()


def symnets_classifier_loss(z_s: torch.Tensor, y_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """L_C (updates Cs ⊕ Ct only): CE of Cs and of Ct on source, and each half winning its own domain.

    L_C = CE(p^s(x_s), y_s) + CE(p^t(x_s), y_s) − mean_s log Σ_{k≤K} P_k(x_s) − mean_t log Σ_{k>K} P_k(x_t).
    """
    k = z_s.shape[1] // 2
    task = F.cross_entropy(z_s[:, :k], y_s) + F.cross_entropy(z_s[:, k:], y_s)
    return task - source_mass_log(z_s, k).mean() - target_mass_log(z_t, k).mean()


def symnets_feature_loss(
    z_s: torch.Tensor, y_s: torch.Tensor, z_t: torch.Tensor, lam: float, entropy_min: bool = True
) -> torch.Tensor:
    """L_G (updates the backbone only): category-level and domain-level confusion plus entropy minimisation.

    L_G = ½·CE_2K(z_s, y_s) + ½·CE_2K(z_s, y_s + K)
          + λ_p·[½·(−mean_t log Σ_{k>K} P_k) + ½·(−mean_t log Σ_{k≤K} P_k) + mean_t H(q)]
    ``entropy_min=False`` is SymNets' ``no_em`` ablation.
    """
    k = z_s.shape[1] // 2
    category = 0.5 * F.cross_entropy(z_s, y_s) + 0.5 * F.cross_entropy(z_s, y_s + k)
    domain = -0.5 * target_mass_log(z_t, k).mean() - 0.5 * source_mass_log(z_t, k).mean()
    entropy = folded_entropy(z_t, k) if entropy_min else z_t.new_zeros(())
    return category + lam * (domain + entropy)


def ensemble_target(predictions: list[torch.Tensor]) -> torch.Tensor:
    """SEED's teacher p̄(x_t) = (1/n) Σ_{a∈S_t} π_a(x_t), with the gradient stopped."""
    return torch.stack(predictions).mean(dim=0).detach()


def seed_loss(teacher: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """L_seed(a) = T² · mean_t KL(p̄(x_t) ‖ softmax(u_a(x_t) / T)) (spec §2.4b)."""
    log_student = F.log_softmax(logits / temperature, dim=1)
    kl = (torch.special.xlogy(teacher, teacher) - teacher * log_student).sum(dim=1)
    return temperature**2 * kl.mean()
