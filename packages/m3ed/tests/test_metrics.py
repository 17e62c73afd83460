"""Metrics equal to sklearn's (single- and multi-label), run aggregation and the benchmark table."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, hamming_loss, recall_score

from m3ed.metrics import aggregate_runs, benchmark_table, classification_report, multilabel_report


def _sklearn(y_true, y_pred):
    return {
        "weighted_f1": f1_score(y_true, y_pred, average="weighted", zero_division=0),
        "macro_f1": f1_score(y_true, y_pred, average="macro", zero_division=0),
        "accuracy": accuracy_score(y_true, y_pred),
        "uar": recall_score(y_true, y_pred, average="macro", zero_division=0),
        "per_class_f1": f1_score(y_true, y_pred, labels=range(7), average=None, zero_division=0),
    }


def _assert_matches_sklearn(y_true, y_pred):
    ours, ref = classification_report(y_true, y_pred), _sklearn(y_true, y_pred)
    for key in ("weighted_f1", "macro_f1", "accuracy", "uar"):
        assert ours[key] == pytest.approx(ref[key], abs=1e-12), key
    np.testing.assert_allclose(ours["per_class_f1"], ref["per_class_f1"], atol=1e-12)
    np.testing.assert_array_equal(ours["confusion"], confusion_matrix(y_true, y_pred, labels=range(7)))


def test_fixed_example_by_hand_and_sklearn():
    # class 5 never appears; class 6 only predicted; class 3 only true
    y_true = np.array([0, 0, 1, 1, 1, 2, 3, 4, 4, 1])
    y_pred = np.array([0, 1, 1, 1, 2, 2, 4, 4, 6, 1])
    report = classification_report(y_true, y_pred)
    # per-class F1 = 2tp / (support + predicted): 0: 2/3, 1: 6/8, 2: 2/3, 3: 0, 4: 2/4, 5: 0, 6: 0
    np.testing.assert_allclose(report["per_class_f1"], [2 / 3, 0.75, 2 / 3, 0, 0.5, 0, 0])
    assert report["weighted_f1"] == pytest.approx((2 * 2 / 3 + 4 * 0.75 + 2 / 3 + 2 * 0.5) / 10)
    assert report["accuracy"] == pytest.approx(0.6)
    assert report["macro_f1"] == pytest.approx((2 * 2 / 3 + 0.75 + 0.5) / 6)  # 6 classes present, 5 excluded
    _assert_matches_sklearn(y_true, y_pred)


@pytest.mark.parametrize("seed", range(20))
def test_random_examples_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 60))
    true_classes = rng.choice(7, size=rng.integers(1, 8), replace=False)
    pred_classes = rng.choice(7, size=rng.integers(1, 8), replace=False)
    _assert_matches_sklearn(rng.choice(true_classes, n), rng.choice(pred_classes, n))


def test_report_rejects_padding_labels():
    with pytest.raises(ValueError, match="padding"):
        classification_report(np.array([0, -1]), np.array([0, 1]))


def _assert_multilabel_matches_sklearn(y_true, y_pred, zero_division):
    ours = multilabel_report(y_true, y_pred, zero_division=zero_division)
    for average in ("micro", "macro"):
        expected = f1_score(y_true, y_pred, average=average, zero_division=zero_division)
        assert ours[f"{average}_f1"] == pytest.approx(expected, abs=1e-12), (average, zero_division)
    expected = f1_score(y_true, y_pred, average=None, zero_division=zero_division)
    np.testing.assert_allclose(ours["per_class_f1"], expected, atol=1e-12)
    assert ours["hamming_loss"] == pytest.approx(hamming_loss(y_true, y_pred), abs=1e-12)
    assert ours["subset_accuracy"] == pytest.approx(accuracy_score(y_true, y_pred), abs=1e-12)


# 4 utterances x 7 emotions (Happy, Neutral, Sad, Disgust, Anger, Fear, Surprise). Fear (5) is neither true nor
# predicted anywhere; Surprise (6) has no true positive but one false one; Disgust (3) is missed once.
MULTI_TRUE = np.array(
    [
        [0, 0, 0, 1, 1, 0, 0],  # Anger + Disgust
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 1, 0, 0],  # Sad + Anger
        [1, 0, 0, 0, 0, 0, 0],
    ]
)
MULTI_PRED = np.array(
    [
        [0, 0, 0, 0, 1, 0, 0],  # Disgust missed
        [0, 1, 0, 0, 0, 0, 0],
        [0, 0, 1, 0, 1, 0, 0],
        [1, 0, 0, 0, 0, 0, 1],  # Surprise wrongly added
    ]
)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_multilabel_report_by_hand_and_sklearn(zero_division):
    report = multilabel_report(MULTI_TRUE, MULTI_PRED, zero_division=zero_division)
    # per class 2tp / (2tp + fp + fn): Happy 2/2, Neutral 2/2, Sad 2/2, Disgust 0/1, Anger 4/4, Fear 0/0, Surprise 0/1
    per_class = [1.0, 1.0, 1.0, 0.0, 1.0, zero_division, 0.0]
    np.testing.assert_allclose(report["per_class_f1"], per_class)
    assert report["macro_f1"] == pytest.approx(sum(per_class) / 7)
    assert report["micro_f1"] == pytest.approx(2 * 5 / (2 * 5 + 1 + 1))  # tp 5, fp 1, fn 1
    assert report["hamming_loss"] == pytest.approx(2 / 28)
    assert report["subset_accuracy"] == pytest.approx(0.5)
    _assert_multilabel_matches_sklearn(MULTI_TRUE, MULTI_PRED, zero_division)


@pytest.mark.parametrize("zero_division", [0.0, 1.0])
def test_multilabel_report_with_nothing_true_or_predicted(zero_division):
    nothing = np.zeros((3, 7), dtype=int)
    report = multilabel_report(nothing, nothing, zero_division=zero_division)
    assert report["micro_f1"] == report["macro_f1"] == zero_division
    assert report["hamming_loss"] == 0.0 and report["subset_accuracy"] == 1.0
    _assert_multilabel_matches_sklearn(nothing, nothing, zero_division)


@pytest.mark.parametrize("seed", range(10))
def test_multilabel_random_examples_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    y_true, y_pred = (rng.random((n, 7)) < rng.uniform(0.05, 0.4, 7)).astype(int), rng.integers(0, 2, (n, 7))
    y_true[:, rng.integers(7)] = 0  # one class with no positives
    for zero_division in (0.0, 1.0):
        _assert_multilabel_matches_sklearn(y_true, y_pred, zero_division)


def test_multilabel_report_rejects_bad_matrices():
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        multilabel_report(np.zeros((2, 6)), np.zeros((2, 6)))
    with pytest.raises(ValueError, match=r"\(N, 7\)"):
        multilabel_report(np.zeros((2, 7)), np.zeros((3, 7)))
    with pytest.raises(ValueError, match="0 or 1"):
        multilabel_report(np.full((1, 7), 2), np.zeros((1, 7)))


def test_aggregate_drops_worst_validation_run():
    runs = [
        {"val_weighted_f1": 0.50, "test_weighted_f1": 0.40},
        {"val_weighted_f1": 0.40, "test_weighted_f1": 0.90},  # worst val: dropped despite best test
        {"val_weighted_f1": 0.60, "test_weighted_f1": 0.44},
    ]
    agg = aggregate_runs(runs)
    assert agg["kept"] == [0, 2]
    assert agg["val_mean"] == pytest.approx(0.55) and agg["test_mean"] == pytest.approx(0.42)
    assert agg["val_std"] == pytest.approx(np.std([0.5, 0.6], ddof=1))
    assert agg["test_std"] == pytest.approx(np.std([0.40, 0.44], ddof=1))
    everything = aggregate_runs(runs, drop_worst_val=False)
    assert everything["kept"] == [0, 1, 2] and everything["test_mean"] == pytest.approx(1.74 / 3)
    single = aggregate_runs(runs[1:2])
    assert single == {"val_mean": 0.40, "val_std": 0.0, "test_mean": 0.90, "test_std": 0.0, "kept": [0]}
    custom = aggregate_runs([{"v": 1.0, "t": 2.0}, {"v": 3.0, "t": 4.0}], key_val="v", key_test="t")
    assert custom["kept"] == [1] and custom["test_mean"] == 4.0


def test_benchmark_table():
    agg = {"val_mean": 55.123, "val_std": 1.0, "test_mean": 50.0, "test_std": 0.456, "kept": [0, 2]}
    table = benchmark_table({("MDI", "A+V+L"): agg, ("MLP", "L"): agg, ("MDI", "A"): agg})
    lines = table.splitlines()
    assert len(lines) == 4
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header[:3] == ["model", "A val", "A test"] and header[-2:] == ["A+V+L val", "A+V+L test"]
    assert len(header) == 15
    mdi = [c.strip() for c in lines[2].strip("|").split("|")]
    mlp = [c.strip() for c in lines[3].strip("|").split("|")]
    assert mdi[0] == "MDI" and mdi[1:3] == ["55.12 ± 1.00", "50.00 ± 0.46"] and mdi[-1] == "50.00 ± 0.46"
    assert mdi[3] == "-" and mlp[0] == "MLP" and mlp[5] == "55.12 ± 1.00" and mlp[1] == "-"
    with pytest.raises(ValueError, match="modality"):
        benchmark_table({("MDI", "AVL"): agg})
