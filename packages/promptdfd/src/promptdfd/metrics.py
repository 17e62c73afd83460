"""Scores of a student (accuracy, macro-F1) and of a synthetic set (distinct-n, keyword coverage)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of ``predictions`` equal to ``labels``."""
    return float(np.mean(np.asarray(predictions) == np.asarray(labels))) if len(labels) else float("nan")


def macro_f1(predictions: np.ndarray, labels: np.ndarray, n_classes: int) -> float:
    """Unweighted mean over classes of F1 (a class never predicted nor present scores 0)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    scores = []
    for c in range(n_classes):
        tp = np.sum((predictions == c) & (labels == c))
        fp = np.sum((predictions == c) & (labels != c))
        fn = np.sum((predictions != c) & (labels == c))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 0.0)
    return float(np.mean(scores))


def distinct_n(texts: Sequence[str], n: int = 2) -> float:
    """Distinct-n: unique word n-grams over all word n-grams of ``texts`` (Li et al., 2016)."""
    grams = [tuple(words[i : i + n]) for words in (t.split() for t in texts) for i in range(len(words) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0
