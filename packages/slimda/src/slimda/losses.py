"""SymNets' domain-confusion objectives and SlimDA's SEED.

The domain confusion L_dc of Slimmable Domain Adaptation (CVPR 2022, Fig. 2) is SymNets' (Zhang et al.,
"Domain-Symmetric Networks for Adversarial Domain Adaptation", CVPR 2019); each term below is checked against
``train()`` in the official ``symnets/trainer.py`` and named after its variable there. SEED's formula is
unverified against the paper (Fig. 2 names the loss and the head it trains, Ca).

Notation: ``z`` are the 2K logits of Cs ⊕ Ct, P = softmax(z) over all 2K, ``u`` the K logits of Ca.
Domain masses log Σ_{k≤K} P_k and log Σ_{k>K} P_k are computed as differences of log-sum-exps: exact and
finite where SymNets adds ε = 1e-6 inside the log.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def lambda_schedule(progress: float) -> float:
    """λ_p = 2 / (1 + exp(−10·p)) − 1 (``lam`` in SymNets' ``train()``): 0 at p = 0, ≈ 0.99991 at p = 1."""
    return 2.0 / (1.0 + math.exp(-10.0 * progress)) - 1.0


def lr_schedule(progress: float, base_lr: float) -> float:
    """lr_p = lr₀ / (1 + 10·p)^0.75 (SymNets' ``adjust_learning_rate``; a pretrained backbone takes 0.1× of it)."""
    return base_lr / (1.0 + 10.0 * progress) ** 0.75


def source_mass_log(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log Σ_{k≤K} P_k(x): log-mass of the source half (Cs), per sample (−mean: SymNets' ``DClassifierForSource``)."""
    return torch.logsumexp(z[:, :num_classes], dim=1) - torch.logsumexp(z, dim=1)


def target_mass_log(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """log Σ_{k>K} P_k(x): log-mass of the target half (Ct), per sample (−mean: SymNets' ``DClassifierForTarget``)."""
    return torch.logsumexp(z[:, num_classes:], dim=1) - torch.logsumexp(z, dim=1)


def folded_entropy(z: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Mean H(q) with q_k = P_k + P_{K+k}: SymNets' entropy minimisation on target data.

    H = −mean_t Σ_k q_k(x_t) log q_k(x_t) (``loss_target_em``, ``EMLossForTarget`` in SymNets' code).
    """
    p = z.softmax(dim=1)
    q = p[:, :num_classes] + p[:, num_classes:]
    return -torch.special.xlogy(q, q).sum(dim=1).mean()


def symnets_classifier_loss(z_s: torch.Tensor, y_s: torch.Tensor, z_t: torch.Tensor) -> torch.Tensor:
    """L_C (updates Cs ⊕ Ct only): CE of Cs and of Ct on source, and each half winning its own domain.

    L_C = CE(p^s(x_s), y_s) + CE(p^t(x_s), y_s) − mean_s log Σ_{k≤K} P_k(x_s) − mean_t log Σ_{k>K} P_k(x_t),
    SymNets' ``loss_classifier`` (``loss_task_s_Cs + loss_task_s_Ct + loss_domain_st_Cst_part1 + _part2``).
    """
    k = z_s.shape[1] // 2
    task = F.cross_entropy(z_s[:, :k], y_s) + F.cross_entropy(z_s[:, k:], y_s)
    return task - source_mass_log(z_s, k).mean() - target_mass_log(z_t, k).mean()


def symnets_feature_loss(
    z_s: torch.Tensor, y_s: torch.Tensor, z_t: torch.Tensor, lam: float, entropy_min: bool = True
) -> torch.Tensor:
    """L_G (updates the backbone only): category-level and domain-level confusion plus entropy minimisation.

    L_G = ½·CE_2K(z_s, y_s) + ½·CE_2K(z_s, y_s + K)
          + λ_p·[½·(−mean_t log Σ_{k>K} P_k) + ½·(−mean_t log Σ_{k≤K} P_k) + mean_t H(q)],
    SymNets' ``loss_G`` (``loss_category_st_G + lam * (loss_domain_st_G + loss_target_em)``);
    ``entropy_min=False`` is its ``no_em`` flag.
    """
    k = z_s.shape[1] // 2
    category = 0.5 * F.cross_entropy(z_s, y_s) + 0.5 * F.cross_entropy(z_s, y_s + k)
    domain = -0.5 * target_mass_log(z_t, k).mean() - 0.5 * source_mass_log(z_t, k).mean()
    entropy = folded_entropy(z_t, k) if entropy_min else z_t.new_zeros(())
    return category + lam * (domain + entropy)


def temper(probabilities: torch.Tensor, temperature: float) -> torch.Tensor:
    """π^{1/T} / Σ_k π_k^{1/T}: a distribution at temperature T (softmax(z / T) when π = softmax(z))."""
    if temperature == 1.0:
        return probabilities
    return F.softmax(probabilities.clamp_min(1e-12).log() / temperature, dim=1)


def ensemble_target(predictions: list[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """SEED's teacher p̄(x_t) = (1/n) Σ_{a∈S_t} π_a(x_t)^{1/T} (each π_a tempered as the student is), with the
    gradient stopped (formula unverified)."""
    return torch.stack([temper(p, temperature) for p in predictions]).mean(dim=0).detach()


def seed_loss(teacher: torch.Tensor, logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """SEED, Stochastic EnsEmble Distillation (L_seed of Fig. 2 of Slimmable Domain Adaptation; formula unverified):

    L_seed(a) = T² · mean_t KL(p̄_T(x_t) ‖ softmax(u_a(x_t) / T)), u_a the logits of Ca (of Ct without OSTC) and
    p̄_T the teacher tempered alike (:func:`ensemble_target` with the same T).
    """
    log_student = F.log_softmax(logits / temperature, dim=1)
    kl = (torch.special.xlogy(teacher, teacher) - teacher * log_student).sum(dim=1)
    return temperature**2 * kl.mean()
