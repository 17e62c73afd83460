"""The objectives of Tyger (arXiv 2205.11279) and of its task learner.

The abstract fixes three terms of the querying module: translating a molecule graph into its SMILES string,
an objective from domain knowledge, and one from the task learner's feedback. The paper body is not public;
the forms here are this package's reconstruction, each a documented switch:

- domain knowledge ``dk``: ``fingerprint`` (default: embedding similarity follows ECFP4 Tanimoto similarity),
  ``descriptors`` (predict eleven RDKit descriptors from z), ``none``;
- feedback ``fb``: ``loss-rank`` (default: the ranking loss of Learning Loss for Active Learning, Yoo & Kweon,
  CVPR 2019, on the task learner's per-molecule losses), ``relation`` (match the task learner's in-batch
  similarity distribution on a labelled batch), ``relation-pool`` (the same on the unlabelled pool batch: the
  task learner's features need no labels), ``none``;
- weights lambda_DK = lambda_FB = 1 and margin xi = 1, tau = 0.1 (not from the paper).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from shared.errors import UserError

__all__ = [
    "DK_KINDS",
    "FB_KINDS",
    "dk_descriptor_loss",
    "dk_fingerprint_loss",
    "feedback_rank_loss",
    "feedback_relation_loss",
    "standardize_targets",
    "tanimoto",
    "task_loss",
    "translation_loss",
]

DK_KINDS = ("fingerprint", "descriptors", "none")
FB_KINDS = ("loss-rank", "relation", "relation-pool", "none")


def standardize_targets(y: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-task mean and std over the present labels (std 1 where fewer than two labels or no spread)."""
    m = mask.to(y.dtype)
    count = m.sum(0)
    mean = (y * m).sum(0) / count.clamp_min(1)
    var = ((y - mean) ** 2 * m).sum(0) / (count - 1).clamp_min(1)
    std = var.sqrt()
    return mean, torch.where((count > 1) & (std > 0), std, torch.ones_like(std))


def task_loss(
    outputs: torch.Tensor,
    y: torch.Tensor,
    mask: torch.Tensor,
    task_type: str,
    mean: torch.Tensor | None = None,
    std: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Per-molecule task loss l_i, averaged over present labels; ``reduction="none"`` gives (B,), else the mean.

    binary / multilabel: sum_k m_ik BCE(sigmoid(o_ik), y_ik) / max(1, sum_k m_ik); multiclass:
    -log softmax(o_i)[y_i]; regression: sum_k m_ik (o_ik - (y_ik - mu_k) / sigma_k)^2 / max(1, sum_k m_ik),
    with ``mean``/``std`` of the labelled set (none given: ``y`` is already standardised).
    """
    m = mask.to(outputs.dtype)
    if task_type in ("binary", "multilabel"):
        per_label = F.binary_cross_entropy_with_logits(outputs, y, reduction="none")
    elif task_type == "regression":
        target = y if mean is None else (y - mean) / std
        per_label = (outputs - target) ** 2
    elif task_type == "multiclass":
        per_mol = F.cross_entropy(outputs, y[:, 0].long().clamp_min(0), reduction="none") * m[:, 0]
        return per_mol if reduction == "none" else per_mol.mean()
    else:
        raise UserError(f"unknown task type {task_type!r}: use regression, binary, multilabel or multiclass")
    per_mol = (per_label * m).sum(1) / m.sum(1).clamp_min(1)
    return per_mol if reduction == "none" else per_mol.mean()


def translation_loss(logits: torch.Tensor, targets: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """L_trans = -(1/|B|) sum_i (1/T_i) sum_t log p_D(s_it | s_i,<t, z_i): token cross-entropy with ``<pad>``
    ignored, averaged per molecule and then over the batch. ``logits`` (B, T, V), ``targets`` (B, T)."""
    ce = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=pad_id, reduction="none")
    present = (targets != pad_id).to(ce.dtype)
    return ((ce * present).sum(1) / present.sum(1).clamp_min(1)).mean()


def tanimoto(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Tanimoto similarity of bit-vector rows, (N, M): |a & b| / |a | b| (1 for two empty vectors)."""
    a, b = a.float(), b.float()
    inter = a @ b.T
    union = a.sum(1, keepdim=True) + b.sum(1)[None] - inter
    return torch.where(union > 0, inter / union.clamp_min(1), torch.ones_like(inter))


def _off_diagonal(n: int, device: torch.device) -> torch.Tensor:
    return ~torch.eye(n, dtype=torch.bool, device=device)


def dk_fingerprint_loss(z: torch.Tensor, fingerprints: torch.Tensor) -> torch.Tensor:
    """Domain knowledge, fingerprint form: L_DK = 1/(|B|(|B|-1)) sum_{i != j} (S^z_ij - S^fp_ij)^2 with
    S^z_ij = (1 + cos(z_i, z_j)) / 2 and S^fp_ij the Tanimoto similarity of ECFP4 bits."""
    if z.shape[0] < 2:
        return z.new_zeros(())
    zn = F.normalize(z, dim=1)
    s_z = (1 + zn @ zn.T) / 2
    s_fp = tanimoto(fingerprints, fingerprints).to(z.dtype)
    off = _off_diagonal(z.shape[0], z.device)
    return (s_z - s_fp)[off].pow(2).mean()


def dk_descriptor_loss(predicted: torch.Tensor, descriptors: torch.Tensor) -> torch.Tensor:
    """Domain knowledge, descriptor form: L_DK = (1/|B|) sum_i ||g(z_i) - r_i||^2 / n_desc on standardised r."""
    return (predicted - descriptors).pow(2).mean()


def feedback_rank_loss(predicted: torch.Tensor, target: torch.Tensor, margin: float = 1.0) -> torch.Tensor:
    """Task-learner feedback, loss-rank form (the loss-prediction loss of Yoo & Kweon, CVPR 2019, Eq. (2)):
    pairs (i, i + |B|/2) of the batch, L = (2/|B|) sum max(0, -sign(l_i - l_j) (l^_i - l^_j) + xi).

    ``target`` holds the task learner's per-molecule losses and is detached: the gradient reaches the
    predictor (and through it the encoder), never the task learner. An odd last molecule is left out.
    """
    half = predicted.shape[0] // 2
    if half == 0:
        return predicted.new_zeros(())
    target = target.detach()
    p_i, p_j = predicted[:half], predicted[half : 2 * half]
    sign = torch.sign(target[:half] - target[half : 2 * half])
    return F.relu(-sign * (p_i - p_j) + margin).mean()


def feedback_relation_loss(task_features: torch.Tensor, z: torch.Tensor, tau: float = 0.1) -> torch.Tensor:
    """Task-learner feedback, relation form: L = (1/|B|) sum_i KL(R^T_i || R^z_i), R_i = softmax over j != i of
    cos(., .)/tau, on the task learner's pooled features (detached) and on z."""
    n = z.shape[0]
    if n < 3:
        return z.new_zeros(())
    if tau <= 0:
        raise UserError(f"the relation temperature tau must be positive, got {tau}")
    off = _off_diagonal(n, z.device)

    def log_relations(x: torch.Tensor) -> torch.Tensor:
        x = F.normalize(x, dim=1)
        return ((x @ x.T) / tau)[off].view(n, n - 1).log_softmax(1)

    log_t, log_z = log_relations(task_features.detach().to(z.dtype)), log_relations(z)
    return (log_t.exp() * (log_t - log_z)).sum(1).mean()
