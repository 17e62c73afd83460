"""Sample selection by a two-component GMM on the per-sample loss (DivideMix, Li et al., ICLR 2020, Sec. 3.1)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture


def min_max_normalise(losses: torch.Tensor) -> torch.Tensor:
    """ℓ <- (ℓ - min) / (max - min), the scale the GMM is fitted on."""
    low, high = losses.min(), losses.max()
    return (losses - low) / (high - low).clamp_min(1e-12)


def gmm_input(history: list[torch.Tensor], noise_ratio: float, average_last: int = 5, min_ratio: float = 0.9):
    """The GMM's input: the mean of the last ``average_last`` normalised losses when r >= 0.9, else the latest."""
    if noise_ratio >= min_ratio:
        return torch.stack(history[-average_last:]).mean(dim=0)
    return history[-1]


def gmm_clean_probability(losses: torch.Tensor, seed: int = 0) -> torch.Tensor:
    """w_i: posterior of the smaller-mean component of a 2-GMM fitted to the (N, 1) loss column.

    Exact arguments of the official code: ``n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4``;
    ``random_state`` is seeded for determinism (the official code leaves it unseeded).
    """
    column = losses.detach().double().cpu().numpy().reshape(-1, 1)
    gmm = GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4, random_state=seed)
    gmm.fit(column)
    clean = int(np.argmin(gmm.means_.ravel()))
    return torch.from_numpy(gmm.predict_proba(column)[:, clean]).float()


def clean_detection_auc(clean_probability: torch.Tensor, is_clean: torch.Tensor) -> float:
    """AUC of w against the true clean mask (logging only: needs the ground truth)."""
    labels = is_clean.cpu().numpy()
    if labels.all() or not labels.any():
        return float("nan")
    return float(roc_auc_score(labels, clean_probability.cpu().numpy()))
