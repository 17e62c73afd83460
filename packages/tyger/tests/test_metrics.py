import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from tyger.metrics import accuracy, aulc, reconstruction_accuracy, rmse, roc_auc, smiles_validity


def test_roc_auc_matches_sklearn_with_ties_and_missing():
    rng = np.random.default_rng(0)
    scores = np.round(rng.random((300, 3)), 1)  # many ties
    labels = (rng.random((300, 3)) < 0.3).astype(float)
    mask = rng.random((300, 3)) < 0.8
    labels[:, 2] = 0  # no positives: left out of the mean
    expected = np.mean([roc_auc_score(labels[mask[:, k], k], scores[mask[:, k], k]) for k in range(2)])
    assert roc_auc(scores, labels, mask) == pytest.approx(expected, abs=1e-12)
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert math.isnan(roc_auc([0.1, 0.2], [1, 1]))


def test_rmse_masked_and_accuracy():
    pred = np.array([[1.0, 0.0], [3.0, 5.0]])
    y = np.array([[0.0, 100.0], [1.0, 1.0]])
    mask = np.array([[True, False], [True, True]])
    assert rmse(pred, y, mask) == pytest.approx((math.sqrt((1 + 4) / 2) + 4.0) / 2)
    assert rmse([1.0, 2.0], [1.0, 4.0]) == pytest.approx(math.sqrt(2))
    assert accuracy(np.array([[2.0, 0.0], [0.0, 1.0], [5.0, 0.0]]), [0, 1, 1]) == pytest.approx(2 / 3)


def test_aulc_trapezoid_normalised():
    assert aulc([32, 64, 96], [0.5, 0.7, 0.9]) == pytest.approx(0.7)
    assert aulc([10, 20, 40], [1.0, 1.0, 4.0]) == pytest.approx((10 * 1.0 + 20 * 2.5) / 30)


def test_smiles_validity_and_reconstruction():
    assert smiles_validity(["CCO", "C1CC", "", "c1ccccc1"]) == 0.5
    assert reconstruction_accuracy(["OCC", "C1CC", "CCN"], ["CCO", "C1CC", "CCC"]) == pytest.approx(1 / 3)
