import numpy as np
import pytest

from glioseg.data.labels import (
    labels_to_regions,
    probabilities_to_labels,
    region_mask,
    regions_to_labels,
    to_canonical,
)


def test_legacy_et_is_mapped_to_3():
    out = to_canonical(np.array([[0, 1], [2, 4]], dtype=np.int16))
    assert out.dtype == np.uint8
    assert out.tolist() == [[0, 1], [2, 3]]


def test_canonical_labels_unchanged():
    arr = np.array([0, 1, 2, 3], dtype=np.uint8)
    assert to_canonical(arr).tolist() == [0, 1, 2, 3]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (np.array([0, 1, 5]), "outside"),
        (np.array([0.0, 1.5]), "not integers"),
        (np.array([0, 3, 4]), "mix"),
        (np.array([0.0, np.nan]), "NaN"),
        (np.array([-1, 0]), "outside"),
    ],
)
def test_bad_labels_rejected(values, message):
    with pytest.raises(ValueError, match=message):
        to_canonical(values)


def test_integral_floats_accepted():
    assert to_canonical(np.array([0.0, 2.0, 4.0])).tolist() == [0, 2, 3]


def test_region_definitions():
    labels = np.array([0, 1, 2, 3])
    wt, tc, et = labels_to_regions(labels)
    assert wt.tolist() == [False, True, True, True]
    assert tc.tolist() == [False, True, False, True]
    assert et.tolist() == [False, False, False, True]
    assert region_mask(labels, "TC").tolist() == tc.tolist()
    with pytest.raises(ValueError, match="unknown region"):
        region_mask(labels, "XX")


def test_round_trip_is_lossless_on_random_maps():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 4, size=(20, 21, 22)).astype(np.uint8)
    assert np.array_equal(regions_to_labels(labels_to_regions(labels)), labels)
    regions = labels_to_regions(labels)
    assert np.array_equal(labels_to_regions(regions_to_labels(regions)), regions)


def test_nesting_enforced_for_inconsistent_regions():
    wt = np.array([0, 1, 1, 0], bool)
    tc = np.array([0, 0, 1, 1], bool)  # last voxel TC without WT
    et = np.array([1, 0, 1, 0], bool)  # first voxel ET without TC
    out = regions_to_labels(np.stack([wt, tc, et]))
    assert out.tolist() == [0, 2, 3, 0]


def test_probability_thresholds():
    prob = np.array([[0.9, 0.9, 0.4], [0.8, 0.2, 0.9], [0.7, 0.9, 0.9]])
    assert probabilities_to_labels(prob).tolist() == [3, 2, 0]
    assert probabilities_to_labels(prob, thresholds=(0.5, 0.85, 0.5)).tolist() == [2, 2, 0]
