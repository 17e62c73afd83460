"""The mutual information gap against codes whose answer is known, and the linear probe."""

import numpy as np
import pytest

from knowfactor.metrics import linear_probe, mutual_information_gap

RNG = np.random.default_rng(0)
FACTORS = np.stack([RNG.integers(0, 4, 2000), RNG.integers(0, 6, 2000)], axis=1)


def test_mig_is_one_when_each_factor_has_its_own_dimension():
    codes = np.concatenate([FACTORS * 10.0, RNG.normal(size=(2000, 2))], axis=1)  # + two noise dimensions
    assert mutual_information_gap(codes, FACTORS) == pytest.approx(1.0, abs=0.03)


def test_mig_is_zero_when_a_factor_is_copied_into_two_dimensions():
    codes = np.stack([FACTORS[:, 0], FACTORS[:, 0] * 0.5, FACTORS[:, 1], FACTORS[:, 1] * 3.0], axis=1).astype(float)
    assert mutual_information_gap(codes, FACTORS) == pytest.approx(0.0, abs=1e-9)


def test_mig_is_near_zero_for_codes_without_information():
    assert abs(mutual_information_gap(RNG.normal(size=(2000, 6)), FACTORS)) < 0.02


def test_mig_needs_matching_shapes():
    with pytest.raises(ValueError, match="MIG needs"):
        mutual_information_gap(np.zeros((5, 1)), FACTORS[:5])


def test_linear_probe_reads_a_linearly_coded_label():
    x = np.concatenate([FACTORS[:, :1] * 1.0, RNG.normal(size=(2000, 3))], axis=1)
    assert linear_probe((x[:1500], FACTORS[:1500, 0] > 1), (x[1500:], FACTORS[1500:, 0] > 1)) == 100.0
    noise = RNG.normal(size=(2000, 4))
    assert linear_probe((noise[:1500], FACTORS[:1500, 1]), (noise[1500:], FACTORS[1500:, 1])) < 30.0
