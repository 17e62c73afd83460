"""Noise protocols (label accuracy, asymmetric map, per-class counts) and the .npy/.json noise files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from lcbooster.noise import (
    CIFAR10_ASYM_TRANSITION,
    asymmetric_noise,
    check_noise_ratio,
    expected_label_accuracy,
    label_accuracy,
    load_noisy_labels,
    save_noisy_labels,
    symmetric_noise,
)
from shared.errors import UserError


def _balanced(num_classes: int, n: int = 50_000) -> np.ndarray:
    return np.random.default_rng(123).permutation(np.arange(n) % num_classes)


@pytest.mark.parametrize(("num_classes", "ratio"), [(10, 0.2), (10, 0.5), (10, 0.8), (10, 0.9), (100, 0.9)])
def test_symmetric_label_accuracy_matches_formula(num_classes, ratio):
    clean = _balanced(num_classes)
    noisy = symmetric_noise(clean, ratio, num_classes, seed=1)
    expected = 1 - ratio + ratio / num_classes
    assert expected_label_accuracy(ratio, num_classes) == pytest.approx(expected)
    assert label_accuracy(noisy, clean) == pytest.approx(expected, abs=0.01)
    assert noisy.dtype == np.int64 and noisy.min() >= 0 and noisy.max() < num_classes
    assert (noisy != clean).sum() <= int(ratio * clean.size)  # only the drawn indices may change


def test_symmetric_without_true_class_flips_every_drawn_sample():
    clean = _balanced(10)
    noisy = symmetric_noise(clean, 0.8, 10, seed=2, include_true_class=False)
    assert label_accuracy(noisy, clean) == pytest.approx(0.2, abs=1e-9)  # exactly ⌊0.8·N⌋ flipped
    assert expected_label_accuracy(0.8, 10, include_true_class=False) == pytest.approx(0.2)
    flipped = noisy[noisy != clean]
    assert np.bincount(flipped, minlength=10).min() > 0.08 * flipped.size  # spread over the other classes


def test_noise_is_deterministic_per_seed():
    clean = _balanced(10, 5000)
    assert np.array_equal(symmetric_noise(clean, 0.5, 10, seed=7), symmetric_noise(clean, 0.5, 10, seed=7))
    assert not np.array_equal(symmetric_noise(clean, 0.5, 10, seed=7), symmetric_noise(clean, 0.5, 10, seed=8))
    assert np.array_equal(asymmetric_noise(clean, 0.4, seed=3), asymmetric_noise(clean, 0.4, seed=3))
    assert not np.array_equal(asymmetric_noise(clean, 0.4, seed=3), asymmetric_noise(clean, 0.4, seed=4))


def test_asymmetric_flips_only_along_the_cifar10_map():
    clean = _balanced(10)
    ratio = 0.4
    noisy = asymmetric_noise(clean, ratio, seed=5)
    changed = noisy != clean
    assert set(np.unique(clean[changed])) == {2, 3, 4, 5, 9}
    for source, target in CIFAR10_ASYM_TRANSITION.items():
        members = clean == source
        assert np.all(noisy[members & changed] == target)
        assert changed[members].mean() == pytest.approx(ratio, abs=0.03)
    assert label_accuracy(noisy, clean) == pytest.approx(1 - ratio / 2, abs=0.01)
    assert expected_label_accuracy(ratio, 10, "asym") == pytest.approx(1 - ratio / 2)
    assert expected_label_accuracy(ratio, 10, "asym", labels=clean) == pytest.approx(1 - ratio / 2)


def test_per_class_draws_exact_counts():
    clean = np.repeat(np.arange(10), [100, 101, 102, 103, 104, 105, 106, 107, 108, 109])
    noisy = symmetric_noise(clean, 0.5, 10, seed=0, per_class=True, include_true_class=False)
    for c in range(10):
        members = clean == c
        assert (noisy[members] != c).sum() == int(0.5 * members.sum())
    noisy = asymmetric_noise(clean, 0.3, seed=0, per_class=True)
    for c in range(10):
        members = clean == c
        expected = int(0.3 * members.sum() + 1e-9) if c in CIFAR10_ASYM_TRANSITION else 0
        assert (noisy[members] != c).sum() == expected


@pytest.mark.parametrize("suffix", [".npy", ".json"])
def test_noise_file_round_trip(tmp_path, suffix):
    labels = symmetric_noise(_balanced(10, 1000), 0.5, 10, seed=0)
    path = save_noisy_labels(tmp_path / f"sym50{suffix}", labels)
    loaded = load_noisy_labels(path, num_samples=1000, num_classes=10)
    assert loaded.dtype == np.int64 and np.array_equal(loaded, labels)
    if suffix == ".npy":
        table = np.load(path)
        assert table.dtype == np.int32 and table.shape == (2, 1000)
        assert np.array_equal(table[0], np.arange(1000))
    else:
        assert json.loads(path.read_text()) == labels.tolist()


def test_npy_formats_shuffled_and_plain(tmp_path):
    labels = np.arange(20) % 7
    order = np.random.default_rng(0).permutation(20)
    np.save(tmp_path / "shuffled.npy", np.stack([order, labels[order]]).astype(np.int32))
    assert np.array_equal(load_noisy_labels(tmp_path / "shuffled.npy"), labels)
    np.save(tmp_path / "plain.npy", labels.astype(np.int32))
    assert np.array_equal(load_noisy_labels(tmp_path / "plain.npy", 20, 7), labels)


def _single_line_error(call) -> str:
    with pytest.raises(UserError) as info:
        call()
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_bad_noise_input_raises_one_line_user_errors(tmp_path):
    labels = np.arange(100) % 10
    npy = save_noisy_labels(tmp_path / "n.npy", labels)
    json_file = save_noisy_labels(tmp_path / "n.json", labels)

    for path in (npy, json_file):
        message = _single_line_error(lambda p=path: load_noisy_labels(p, num_samples=50_000))
        assert "100" in message and "50000" in message and "lcbooster-make-noise" in message
        assert "label 9" in _single_line_error(lambda p=path: load_noisy_labels(p, num_classes=5))

    for ratio in (1.5, -0.1):
        assert str(ratio) in _single_line_error(lambda r=ratio: check_noise_ratio(r))
        _single_line_error(lambda r=ratio: symmetric_noise(labels, r, 10))
        _single_line_error(lambda r=ratio: asymmetric_noise(labels, r))

    (tmp_path / "garbage.npy").write_bytes(b"\x00\x01 not numpy at all \xff" * 10)
    (tmp_path / "garbage.json").write_bytes(b"\xff\xfe{[ not json")
    (tmp_path / "strings.json").write_text('["a", "b"]')
    for name in ("garbage.npy", "garbage.json", "strings.json"):
        assert name in _single_line_error(lambda n=name: load_noisy_labels(tmp_path / n))

    np.save(tmp_path / "wrong_shape.npy", np.zeros((3, 4), dtype=np.int32))
    assert "shape" in _single_line_error(lambda: load_noisy_labels(tmp_path / "wrong_shape.npy"))
    np.save(tmp_path / "repeated.npy", np.zeros((2, 4), dtype=np.int32))
    assert "permutation" in _single_line_error(lambda: load_noisy_labels(tmp_path / "repeated.npy"))

    assert ".txt" in _single_line_error(lambda: save_noisy_labels(tmp_path / "n.txt", labels))
    (tmp_path / "n.txt").write_text("1 2 3")
    assert "n.txt" in _single_line_error(lambda: load_noisy_labels(tmp_path / "n.txt"))
    assert "not found" in _single_line_error(lambda: load_noisy_labels(tmp_path / "absent.npy"))
