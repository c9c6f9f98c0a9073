"""First-order features against values derived by hand."""

import math

import numpy as np
import pytest

from glioseg.data.radiomics.firstorder import FIRSTORDER_FEATURES, discretise_fixed_width, firstorder_features


def test_moments_of_an_asymmetric_sample():
    # x = [0, 0, 0, 3]: mean 3/4; central moments m2 = 27/16, m3 = 81/32, m4 = 1701/256
    f = firstorder_features(np.array([0.0, 0.0, 0.0, 3.0]))
    assert f["mean"] == pytest.approx(0.75)
    assert f["std"] == pytest.approx(math.sqrt(27 / 16))
    assert f["skewness"] == pytest.approx((81 / 32) / (27 / 16) ** 1.5)  # = 2 / sqrt(3)
    assert f["skewness"] == pytest.approx(2 / math.sqrt(3))
    assert f["kurtosis"] == pytest.approx((1701 / 256) / (27 / 16) ** 2 - 3)  # excess: 7/3 - 3
    assert f["mad"] == pytest.approx((3 * 0.75 + 2.25) / 4)
    assert f["energy"] == 9.0
    assert f["rms"] == pytest.approx(1.5)
    assert f["minimum"] == 0 and f["maximum"] == 3 and f["range"] == 3


def test_percentiles_with_linear_interpolation():
    f = firstorder_features(np.arange(1.0, 12.0))  # 1 .. 11
    assert (f["p10"], f["p25"], f["median"], f["p75"], f["p90"]) == pytest.approx((2, 3.5, 6, 8.5, 10))
    assert f["iqr"] == pytest.approx(5)
    assert f["skewness"] == pytest.approx(0, abs=1e-12)
    # excess kurtosis of a discrete uniform on 11 points: -6 (n^2 + 1) / (5 (n^2 - 1))
    assert f["kurtosis"] == pytest.approx(-6 * 122 / (5 * 120))


def test_entropy_and_uniformity_use_fixed_width_bins_anchored_at_zero():
    # bin width 0.25: bins 0, 0, 1, 2, 2, 3, 3, 4 -> p = (2, 1, 2, 2, 1) / 8
    values = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.8, 0.9, 1.1])
    f = firstorder_features(values, bin_width=0.25)
    assert f["entropy"] == pytest.approx(3 * 0.25 * 2 + 2 * 0.125 * 3)
    assert f["uniformity"] == pytest.approx(3 / 16 + 2 / 64)
    # a wider bin merges them: width 2 puts everything in bin 0
    g = firstorder_features(values, bin_width=2.0)
    assert g["entropy"] == 0 and g["uniformity"] == 1
    assert discretise_fixed_width(np.array([-0.01, 0.0, 0.49, 0.5]), 0.5).tolist() == [-1, 0, 0, 1]


def test_constant_and_empty_inputs():
    f = firstorder_features(np.full(10, 2.0))
    assert f["std"] == 0 and f["skewness"] == 0 and f["kurtosis"] == 0 and f["entropy"] == 0
    empty = firstorder_features(np.array([]))
    assert set(empty) == set(FIRSTORDER_FEATURES)
    assert all(math.isnan(v) for v in empty.values())


def test_bad_bin_width():
    with pytest.raises(ValueError, match="bin width"):
        firstorder_features(np.ones(3), bin_width=0)
