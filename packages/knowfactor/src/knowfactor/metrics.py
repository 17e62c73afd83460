"""Measures of learned features against ground-truth labels: linear probes and the mutual information gap (MIG)."""

from __future__ import annotations

import numpy as np

MIG_BINS = 20  # disentanglement_lib's histogram discretisation


def linear_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray]) -> float:
    """Test accuracy (%) of a linear probe (closed-form ridge classifier) on standardised frozen features."""
    from sklearn.linear_model import RidgeClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=1.0))
    probe.fit(*train)
    return 100.0 * float(probe.score(*test))


def mutual_information_gap(codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS) -> float:
    """MIG (Chen et al., "Isolating Sources of Disentanglement in VAEs", NeurIPS 2018) of ``codes`` (N, D), the
    features as they are (no standardisation), against discrete ground-truth ``factors`` (N, K).

    As disentanglement_lib's ``mig.py`` computes it: every code dimension discretised into ``bins`` equal-width
    histogram bins, I(code_d; factor_k) by counting, and per factor the gap between its two most informative
    dimensions divided by H(factor_k), averaged over the factors. 0: no single dimension stands out for a factor;
    1: each factor is captured by one dimension alone.
    """
    from sklearn.metrics import mutual_info_score

    if codes.ndim != 2 or factors.ndim != 2 or len(codes) != len(factors) or codes.shape[1] < 2:
        raise ValueError(f"MIG needs codes (N, D >= 2) and factors (N, K), got {codes.shape} and {factors.shape}")
    discrete = [np.digitize(c, np.histogram(c, bins)[1][:-1]) for c in codes.T]
    info = np.array([[mutual_info_score(f, c) for f in factors.T] for c in discrete])  # (D, K)
    entropy = np.array([mutual_info_score(f, f) for f in factors.T])
    top = np.sort(info, axis=0)[::-1]
    return float(np.mean((top[0] - top[1]) / entropy))
