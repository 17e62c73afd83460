"""Evaluation: masked RMSE, ROC-AUC over tasks, multiclass accuracy, the area under an AL curve, and the
validity and exact-match accuracy of decoded SMILES."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from tyger.chem import canonical_smiles

__all__ = ["accuracy", "aulc", "reconstruction_accuracy", "rmse", "roc_auc", "roc_auc_binary", "smiles_validity"]


def _numpy(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def rmse(pred, y, mask=None) -> float:
    """Root mean squared error per task over the present labels, averaged over tasks that have labels."""
    pred, y = _numpy(pred).astype(np.float64), _numpy(y).astype(np.float64)
    pred, y = pred.reshape(len(pred), -1), y.reshape(len(y), -1)
    m = np.ones_like(y, dtype=bool) if mask is None else _numpy(mask).astype(bool).reshape(y.shape)
    count = m.sum(0)
    sq = ((pred - y) ** 2 * m).sum(0)
    keep = count > 0
    return float(np.sqrt(sq[keep] / count[keep]).mean()) if keep.any() else math.nan


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, tied values sharing their average rank."""
    _, inverse, counts = np.unique(x, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + 1 + ends) / 2.0)[inverse]


def roc_auc_binary(scores, labels) -> float:
    """ROC-AUC by the Mann-Whitney rank statistic; NaN when a class is absent."""
    scores, labels = _numpy(scores).ravel().astype(np.float64), _numpy(labels).ravel().astype(bool)
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def roc_auc(scores, labels, mask=None) -> float:
    """Mean ROC-AUC over the tasks (columns) whose present labels hold both classes; NaN when none does."""
    scores, labels = _numpy(scores), _numpy(labels)
    scores, labels = scores.reshape(len(scores), -1), labels.reshape(len(labels), -1)
    m = np.ones_like(labels, dtype=bool) if mask is None else _numpy(mask).astype(bool).reshape(labels.shape)
    aucs = [roc_auc_binary(scores[m[:, k], k], labels[m[:, k], k]) for k in range(labels.shape[1])]
    aucs = [a for a in aucs if not math.isnan(a)]
    return float(np.mean(aucs)) if aucs else math.nan


def accuracy(logits, y, mask=None) -> float:
    """Multiclass accuracy of argmax over the rows with a label."""
    pred = _numpy(logits).argmax(1)
    y = _numpy(y).reshape(-1).astype(int)
    m = np.ones_like(y, dtype=bool) if mask is None else _numpy(mask).astype(bool).reshape(-1)
    return float((pred[m] == y[m]).mean()) if m.any() else math.nan


def aulc(budgets: Sequence[float], values: Sequence[float]) -> float:
    """Area under an active-learning curve: the trapezoid rule over the budgets, divided by their range."""
    x, v = np.asarray(budgets, dtype=np.float64), np.asarray(values, dtype=np.float64)
    if len(x) != len(v) or len(x) == 0:
        raise ValueError("budgets and values must be non-empty and of equal length")
    if len(x) == 1 or x[-1] == x[0]:
        return float(v.mean())
    area = float(((v[1:] + v[:-1]) / 2 * np.diff(x)).sum())
    return area / float(x[-1] - x[0])


def smiles_validity(smiles: Sequence[str]) -> float:
    """Fraction of strings RDKit parses into a molecule (empty strings are invalid)."""
    return float(np.mean([canonical_smiles(s) is not None for s in smiles])) if len(smiles) else math.nan


def reconstruction_accuracy(decoded: Sequence[str], targets: Sequence[str]) -> float:
    """Fraction of decoded strings that are valid and name the target molecule (canonical SMILES equality)."""
    if len(decoded) != len(targets):
        raise ValueError("decoded and target lists differ in length")
    if not len(decoded):
        return math.nan
    hits = [
        (c := canonical_smiles(d)) is not None and c == canonical_smiles(t)
        for d, t in zip(decoded, targets, strict=True)
    ]
    return float(np.mean(hits))
