"""The objectives of FaceMAE: MAE reconstruction, instance relation matching (IRM), margin softmax."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from shared.errors import UserError

__all__ = ["IRM_KINDS", "LOSS_ON", "irm_loss", "margin_logits", "margin_softmax_loss", "reconstruction_loss"]

LOSS_ON = ("masked", "all")
IRM_KINDS = ("kl", "mse", "mean")


def reconstruction_loss(
    pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, loss_on: str = "masked"
) -> torch.Tensor:
    """Per-patch MSE averaged over the masked patches (``forward_loss`` of facebookresearch/mae ``models_mae.py``).

    ``pred`` and ``target`` are (B, N, p*p*3) patches, ``mask`` (B, N) with 1 on masked patches;
    ``loss_on="all"`` averages over every patch (the visible ones are left unsupervised by MAE).
    """
    if loss_on not in LOSS_ON:
        raise UserError(f"loss_on must be one of {', '.join(LOSS_ON)}, got {loss_on!r}")
    per_patch = (pred - target).pow(2).mean(dim=-1)
    if loss_on == "all":
        return per_patch.mean()
    if not mask.any():
        raise UserError("the mask ratio masks no patch, so the masked-patch loss is undefined: use loss_on='all'")
    return (per_patch * mask).sum() / mask.sum()


def irm_loss(real_emb: torch.Tensor, recon_emb: torch.Tensor, kind: str = "kl", tau: float = 0.1) -> torch.Tensor:
    """Instance relation matching between a batch of real faces and their reconstructions (FaceMAE's IRM).

    Embeddings are L2-normalised here; the real ones are detached, so the gradient reaches only the
    reconstructions. ``kl``: mean over i of KL(P_i || P^_i), P_i the softmax over j != i of e_i.e_j / tau
    (relations within each set, the diagonal excluded); ``mse``: mean over i != j of
    (e_i.e_j - e^_i.e^_j)^2; ``mean``: squared distance of the two mean embeddings.
    The paper's exact form is not public; these are the variants this package offers.
    """
    if kind not in IRM_KINDS:
        raise UserError(f"IRM kind must be one of {', '.join(IRM_KINDS)}, got {kind!r}")
    if real_emb.shape != recon_emb.shape or real_emb.ndim != 2:
        raise ValueError(f"need two (B, D) embedding batches, got {tuple(real_emb.shape)} and {tuple(recon_emb.shape)}")
    real = F.normalize(real_emb.detach(), dim=1)
    recon = F.normalize(recon_emb, dim=1)
    if kind == "mean":
        return (real.mean(0) - recon.mean(0)).pow(2).sum()
    batch = real.shape[0]
    if batch < (3 if kind == "kl" else 2):
        raise UserError(f"IRM '{kind}' relates the images of a batch to each other: batch size {batch} is too small")
    off_diagonal = ~torch.eye(batch, dtype=torch.bool, device=real.device)
    if kind == "mse":
        return (real @ real.T - recon @ recon.T)[off_diagonal].pow(2).mean()
    if tau <= 0:
        raise UserError(f"the IRM temperature tau must be positive, got {tau}")
    log_p = _row_log_softmax(real @ real.T / tau, off_diagonal)
    log_q = _row_log_softmax(recon @ recon.T / tau, off_diagonal)
    return (log_p.exp() * (log_p - log_q)).sum(1).mean()


def _row_log_softmax(relations: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """Each row's log-softmax over its entries where ``keep`` holds: (B, B) -> (B, B-1) without the diagonal."""
    rows = relations[keep].view(relations.shape[0], -1)
    return torch.log_softmax(rows, dim=1)


def margin_logits(
    cosine: torch.Tensor, labels: torch.Tensor, s: float, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0
) -> torch.Tensor:
    """Combined-margin logits: s*(cos(m1*theta + m2) - m3) for the target class, s*cos(theta) elsewhere.

    (m1, m2, m3) = (1, 0.5, 0) is ArcFace, (1, 0, 0.4) CosFace (Deng et al. CVPR 2019, Eq. 3 and 4). Not the
    easy margin: where m1*theta + m2 > pi the target uses cos(theta) - m2*sin(m2) - m3, which keeps it
    falling with theta (``CombinedMarginLoss`` of insightface arcface_torch ``losses.py``).
    ``cosine`` is (B, C), ``labels`` (B,) class indices.
    """
    rows = torch.arange(cosine.shape[0], device=cosine.device)
    target = cosine[rows, labels]
    if m1 == 1.0:  # cos(theta + m2) from cos(theta) alone: exact, with a finite gradient at theta = 0
        sine = (1 - target.pow(2)).clamp_min(1e-12).sqrt()
        shifted = target * math.cos(m2) - sine * math.sin(m2)
    else:
        shifted = torch.cos(m1 * torch.acos(target.clamp(-1 + 1e-7, 1 - 1e-7)) + m2)
    in_range = target >= math.cos(min((math.pi - m2) / m1, math.pi))  # m1*theta + m2 <= pi
    margined = torch.where(in_range, shifted, target - m2 * math.sin(m2)) - m3
    return s * cosine.index_put((rows, labels), margined)


def margin_softmax_loss(
    cosine: torch.Tensor, labels: torch.Tensor, s: float, m1: float = 1.0, m2: float = 0.5, m3: float = 0.0
) -> torch.Tensor:
    """Softmax cross-entropy over :func:`margin_logits` (the recognition loss of ArcFace/CosFace)."""
    return F.cross_entropy(margin_logits(cosine, labels, s, m1, m2, m3), labels)
