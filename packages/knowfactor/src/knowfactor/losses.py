"""The objectives of Knowledge Factorization (Yang, Ye, Wang; ECCV 2022), as the official release computes them.

The paper's InfoMax-Bottleneck (IMB) objective keeps the common feature z_c informative (the InfoMax term,
max I(x; z_c), estimated against the teacher's features) and each task feature z_i minimal (the bottleneck
term, min β·I(x; z_i), bounded by a KL to N(0, I)), beside distillation from the teacher and the tasks'
cross-entropies. The release (github.com/Adamdad/KnowledgeFactor: ``cls/mmcls/models/losses/kd_loss.py``,
``KFImageClassifier.forward_train`` in ``cls/mmcls/models/classifiers/kf.py``) sums
``L_infomax + L_kd + L_cls + L_task + L_infomin``; this module holds each term's per-call function:

* :func:`infomax_loss` -- the InfoMax term, between projected teacher features and common features;
* :func:`batch_gaussian_stats` + :func:`infomin_loss` -- the bottleneck term on the task features;
* :func:`soft_target_kd` -- the distillation term, Hinton KD on logits (:func:`logits_kd`, MSE, in the
  disentanglement configs);
* :func:`label_smooth_ce` -- the tasks' cross-entropies ``L_cls`` (on z_c + z_i) and ``L_task`` (on z_i).

Each docstring names the term of the paper's objective and the official function whose exact form it
reproduces. All functions are device-agnostic and differentiable in every input.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

INFOMAX_MODES = ("official", "dv", "infonce")
LABEL_SMOOTH_MODES = ("classy_vision", "original")
INFONCE_TEMPERATURE = 0.1


def _row_normalise(x: Tensor) -> Tensor:
    # Official: x / (||x||_2 + 1e-10), not F.normalize (which clamps the norm instead).
    return x / (x.norm(p=2, dim=1, keepdim=True) + 1e-10)


def infomax_loss(a: Tensor, c: Tensor, mode: str = "official") -> Tensor:
    """The InfoMax term of the paper's IMB objective, max I(x; z_c), as a critic loss between two batches of
    features ``a`` (B, D) and ``c`` (B, D): the official ``InfoMax_loss`` (``kd_loss.py``) by default.

    With row-normalised â, ĉ and the B×B cosine matrix S = â ĉᵀ:

    * ``"official"`` (the release's ``InfoMax_loss``): E_J = (1/B²) Σ_i S_ii -- divided by B², not B --,
      E_M = (1/B²) (Σ_{i≠j} exp(S_ij) + B) -- the masked diagonal contributes exp(0) = 1 each --, and
      ℓ = −(E_J − log E_M).
    * ``"dv"`` (textbook Donsker–Varadhan): E_J = mean_i S_ii, E_M = mean_{i≠j} exp(S_ij), ℓ = −(E_J − log E_M);
      needs B ≥ 2.
    * ``"infonce"``: cross-entropy of the rows of S/τ (τ = 0.1) against the diagonal.
    """
    if a.ndim != 2 or a.shape != c.shape:
        raise ValueError(
            f"infomax_loss needs two (B, D) tensors of the same shape, got {tuple(a.shape)}, {tuple(c.shape)}"
        )
    if mode not in INFOMAX_MODES:
        raise ValueError(f"unknown infomax mode {mode!r}: choose from {INFOMAX_MODES}")
    s = _row_normalise(a) @ _row_normalise(c).T
    b = s.shape[0]
    if mode == "official":
        joint = torch.eye(b, device=s.device, dtype=s.dtype)
        e_joint = (s * joint).mean()
        e_marginal = torch.exp(s * (1 - joint)).mean()
        return -(e_joint - torch.log(e_marginal))
    if mode == "dv":
        if b < 2:
            raise ValueError("infomax_loss(mode='dv') needs a batch of at least 2 (no off-diagonal pairs)")
        off_diagonal = ~torch.eye(b, dtype=torch.bool, device=s.device)
        e_joint = s.diagonal().mean()
        e_marginal = torch.exp(s[off_diagonal]).mean()
        return -(e_joint - torch.log(e_marginal))
    return F.cross_entropy(s / INFONCE_TEMPERATURE, torch.arange(b, device=s.device))


def batch_gaussian_stats(z: Tensor) -> tuple[Tensor, Tensor]:
    """Per-dimension batch mean μ and log of the unbiased batch variance log σ² of ``z`` (B, d).

    The Gaussian of the bottleneck term (:func:`infomin_loss`) as the official ``TSN_backbone``
    (``cls/mmcls/models/backbones/tsn.py``) returns it beside its feature: one Gaussian fitted to the batch.
    """
    if z.ndim != 2 or z.shape[0] < 2:
        raise ValueError(f"batch_gaussian_stats needs a (B, d) tensor with B >= 2, got {tuple(z.shape)}")
    return z.mean(dim=0), torch.log(z.var(dim=0, unbiased=True))


def infomin_loss(mu: Tensor, logvar: Tensor) -> Tensor:
    """The bottleneck (InfoMin) term of the paper's IMB objective, min β·I(x; z_i), bounded by
    KL(N(μ, σ²) ‖ N(0, 1)), as the official ``InfoMin_loss`` (``kd_loss.py``) computes it (β applied by the caller).

    * 1-D (d,) batch statistics: ℓ_min = −½ · mean_d(1 + log σ²_d − μ_d² − σ²_d), the mean over d of the KL.
    * 2-D (B, d) per-sample statistics (VAE-style): −½ Σ_d(1 + log σ² − μ² − σ²), averaged over the batch.
    """
    if mu.shape != logvar.shape or mu.ndim not in (1, 2):
        raise ValueError(f"infomin_loss needs mu and logvar of the same 1-D or 2-D shape, got {tuple(mu.shape)}")
    terms = 1 + logvar - mu**2 - logvar.exp()
    if mu.ndim == 1:
        return -0.5 * terms.mean()
    return (-0.5 * terms.sum(dim=1)).mean()


def soft_target_kd(student_logits: Tensor, teacher_logits: Tensor, temperature: float) -> Tensor:
    """The distillation term of the paper's objective: Hinton KD as the official ``SoftTarget`` (``kd_loss.py``)
    computes it, T² · (1/B) Σ_b KL(softmax(t_b/T) ‖ softmax(s_b/T))."""
    t = float(temperature)
    log_student = F.log_softmax(student_logits / t, dim=1)
    teacher = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_student, teacher, reduction="batchmean") * t * t


def logits_kd(student_logits: Tensor, teacher_logits: Tensor) -> Tensor:
    """The distillation term of the release's disentanglement configs: the official ``Logits`` loss
    (``kd_loss.py``, Ba & Caruana), the mean squared difference of the logits."""
    return F.mse_loss(student_logits, teacher_logits)


#: The distillation losses of the release's configs by their ``kd_loss`` type: (student, teacher, T) -> loss.
KD_LOSSES = {
    "soft_target": soft_target_kd,
    "logits": lambda student, teacher, temperature: logits_kd(student, teacher),
}


def label_smooth_ce(logits: Tensor, target: Tensor, smoothing: float = 0.1, mode: str = "classy_vision") -> Tensor:
    """The tasks' cross-entropy terms of the paper's objective (``loss_cls`` on z_c + z_i, ``loss_task`` on z_i):
    the label-smoothed cross-entropy of mmcls ``LabelSmoothLoss`` as the official configs set it, mean over the batch.

    ``target`` holds class indices (B,) or soft labels (B, K) (e.g. after Mixup, smoothed the same way).
    With ε = ``smoothing`` and K classes the target distribution is

    * ``"classy_vision"`` (the official configs): q = (onehot + ε/K) / (1 + ε);
    * ``"original"``: q = (1 − ε) · onehot + ε/K;

    and the loss is mean_b −Σ_k q_bk log softmax(logits)_bk.
    """
    if mode not in LABEL_SMOOTH_MODES:
        raise ValueError(f"unknown label smoothing mode {mode!r}: choose from {LABEL_SMOOTH_MODES}")
    k = logits.shape[1]
    if target.ndim == 1:
        onehot = F.one_hot(target.long(), k).to(logits.dtype)
    elif target.shape == logits.shape:
        onehot = target.to(logits.dtype)
    else:
        raise ValueError(f"target must be (B,) indices or (B, K) soft labels, got {tuple(target.shape)}")
    if mode == "classy_vision":
        q = (onehot + smoothing / k) / (1 + smoothing)
    else:
        q = (1 - smoothing) * onehot + smoothing / k
    return -(q * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
