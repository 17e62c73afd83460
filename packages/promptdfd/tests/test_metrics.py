"""Tests of the student and synthetic-set scores (promptdfd.metrics)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from promptdfd.metrics import accuracy, distinct_n, macro_f1


def test_accuracy_hand_case():
    assert accuracy(np.array([0, 1, 2, 1]), np.array([0, 2, 2, 1])) == pytest.approx(0.75)
    assert accuracy([1, 1], [1, 1]) == 1.0
    assert accuracy([0, 0], [1, 1]) == 0.0


def test_accuracy_of_nothing_is_nan():
    assert math.isnan(accuracy(np.array([]), np.array([])))


def test_macro_f1_hand_case():
    predictions = np.array([0, 0, 1, 1, 1, 2])
    labels = np.array([0, 1, 1, 1, 2, 2])
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: tp 2 fp 1 fn 1 -> 4/6; class 2: tp 1 fp 0 fn 1 -> 2/3
    assert macro_f1(predictions, labels, 3) == pytest.approx(2 / 3)


def test_macro_f1_counts_a_class_never_predicted_as_zero():
    predictions = np.array([0, 0, 1, 1])
    labels = np.array([0, 2, 1, 1])
    # class 0: tp 1 fp 1 fn 0 -> 2/3; class 1: 1; class 2 (never predicted): tp 0 fp 0 fn 1 -> 0
    assert macro_f1(predictions, labels, 3) == pytest.approx((2 / 3 + 1 + 0) / 3)


def test_macro_f1_averages_over_n_classes_including_absent_ones():
    # class 3 is neither present nor predicted: it scores 0 and still counts in the mean
    assert macro_f1([0, 1], [0, 1], 2) == pytest.approx(1.0)
    assert macro_f1([0, 1], [0, 1], 4) == pytest.approx(0.5)


def test_macro_f1_differs_from_accuracy_on_imbalanced_data():
    labels = np.array([0] * 9 + [1])
    predictions = np.zeros(10, dtype=int)
    assert accuracy(predictions, labels) == pytest.approx(0.9)
    # class 0: 2*9/(18+1) = 18/19; class 1: 0
    assert macro_f1(predictions, labels, 2) == pytest.approx(9 / 19)


def test_distinct_n_hand_case():
    texts = ["a b a b", "a b c"]
    # bigrams: ab ba ab | ab bc -> 5 total, 3 unique
    assert distinct_n(texts, 2) == pytest.approx(3 / 5)
    # unigrams: a b a b a b c -> 7 total, 3 unique
    assert distinct_n(texts, 1) == pytest.approx(3 / 7)
    # trigrams: aba bab | abc -> all unique
    assert distinct_n(texts, 3) == pytest.approx(1.0)


def test_distinct_n_does_not_cross_text_boundaries():
    # "x y" + "z" would form the bigram (y, z) if texts were concatenated
    assert distinct_n(["x y", "z"], 2) == pytest.approx(1.0)
    assert distinct_n(["x", "y"], 2) == 0.0


def test_distinct_n_of_repeated_text_and_of_nothing():
    assert distinct_n(["the cat sat"] * 4, 2) == pytest.approx(2 / 8)
    assert distinct_n([], 2) == 0.0
