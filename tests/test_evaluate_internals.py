"""The fast building blocks of glioseg.evaluate agree with the plain computations they replace."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from glioseg.data.io import load_label
from glioseg.errors import InputError
from glioseg.evaluate.components import DILATION_STRUCTURE, dilate, merge_by_dilation
from glioseg.evaluate.runner import read_labels
from glioseg.evaluate.surface import SEARCH_RADIUS, nearest_distances, neighbourhood_codes


def _random_mask(rng, shape, density):
    return ndimage.binary_dilation(rng.random(shape) < density, iterations=int(rng.integers(0, 2)))


@pytest.mark.parametrize("shape", [(9, 8, 7), (40, 36, 30)])  # below and above the small-array switch
def test_dilate_equals_scipy_including_borders(shape):
    rng = np.random.default_rng(0)
    for _ in range(5):
        mask = _random_mask(rng, shape, 0.01)
        mask[0, :, 3] = mask[:, -1, -1] = True  # touch the borders
        for iterations in (1, 3):
            expected = ndimage.binary_dilation(mask, structure=DILATION_STRUCTURE, iterations=iterations)
            assert np.array_equal(dilate(mask, iterations), expected)


def test_merge_by_dilation_equals_full_volume_recipe():
    """Per-component dilation and the returned numbering match dilating everything at once."""
    import cc3d

    rng = np.random.default_rng(1)
    for density in (0.0005, 0.002, 0.02):
        mask = _random_mask(rng, (50, 45, 40), density)
        lesions, reach, n = merge_by_dilation(mask)
        dilated = ndimage.binary_dilation(mask, structure=DILATION_STRUCTURE, iterations=3)
        expected_reach = cc3d.connected_components(dilated, connectivity=26)
        assert np.array_equal(reach, expected_reach) and n == expected_reach.max()
        assert np.array_equal(lesions, np.where(mask, expected_reach, 0))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.5, 1.0, 2.5), (0.7, 0.7, 3.0)])
def test_nearest_distances_equal_the_distance_transform(spacing):
    rng = np.random.default_rng(2)
    shape = (40, 34, 30)
    # Few far queries (k-d tree), near queries (shell search), many far queries (distance transform).
    for target_density, query_density in ((0.0005, 0.02), (0.05, 0.05), (0.0005, 0.3)):
        targets = np.zeros(shape, bool)
        queries = np.zeros(shape, bool)
        inner = tuple(slice(SEARCH_RADIUS, n - SEARCH_RADIUS) for n in shape)
        targets[inner] = rng.random(tuple(n - 2 * SEARCH_RADIUS for n in shape)) < target_density
        queries[inner] = rng.random(tuple(n - 2 * SEARCH_RADIUS for n in shape)) < query_density
        if not targets.any():
            continue
        at_t, at_q = np.flatnonzero(targets), np.flatnonzero(queries)
        found = nearest_distances(at_q, at_t, shape, spacing, targets.ravel())
        expected = ndimage.distance_transform_edt(~targets, sampling=spacing).ravel()[at_q]
        np.testing.assert_allclose(found, expected, rtol=1e-15, atol=0)
    assert np.all(np.isinf(nearest_distances(at_q, at_t[:0], shape, spacing)))


def test_neighbourhood_codes_equal_scipy_correlate():
    """The codes are the reference's correlate of a uint8 crop, also for label values (mod 256)."""
    rng = np.random.default_rng(3)
    kernel = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
    values = (rng.random((12, 10, 9)) < 0.4) * rng.integers(1, 300, (12, 10, 9))
    box = (slice(2, 11), slice(1, 9), slice(0, 9))
    crop = np.zeros(tuple(s.stop - s.start + 1 for s in box), np.uint8)
    crop[:-1, :-1, :-1] = values[box].astype(np.uint8)
    expected = ndimage.correlate(crop, kernel, mode="constant", cval=0)
    assert np.array_equal(neighbourhood_codes(values, box), expected)


@pytest.mark.parametrize(
    "data",
    [
        np.array([0, 1, 2, 3], np.uint8),
        np.array([0, 1, 2, 4, 4], np.int16),
        np.array([0, 0, 0], np.uint8),
        np.array([0, 1, 2, 3], np.float32),
    ],
)
def test_read_labels_equals_load_label(tmp_path, data):
    volume = np.zeros((6, 5, 4), data.dtype)
    volume.flat[: data.size] = data
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    fast, _ = read_labels(path)
    slow, _ = load_label(path)
    assert fast.dtype == slow.dtype == np.uint8 and np.array_equal(fast, slow)
    assert fast.flags.f_contiguous == slow.flags.f_contiguous


@pytest.mark.parametrize(
    ("values", "message"),
    [([0, 3, 4], "mix ET = 3 and legacy ET = 4"), ([0, 1, 9], "outside"), ([0, -1], "outside")],
)
def test_read_labels_rejects_like_load_label(tmp_path, values, message):
    volume = np.zeros((6, 5, 4), np.int16)
    volume.flat[: len(values)] = values
    path = tmp_path / "seg.nii.gz"
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    with pytest.raises(InputError, match=message) as fast:
        read_labels(path)
    with pytest.raises(InputError) as slow:
        load_label(path)
    assert str(fast.value) == str(slow.value) and str(path) in str(fast.value)


def test_hd95_shortcut_equals_full_surface_distances():
    """hd95 skips measuring far surfels when the percentile is settled without them: same value."""
    from glioseg.evaluate.surface import hd95, robust_hausdorff, surface_distances

    rng = np.random.default_rng(4)
    for spacing in ((1.0, 1.0, 1.0), (1.2, 0.9, 2.5)):
        for _ in range(8):
            gt = np.zeros((48, 44, 40), bool)
            gt[10:30, 12:30, 8:26] = True
            pred = np.roll(gt, tuple(rng.integers(-2, 3, 3)), axis=(0, 1, 2))
            for _ in range(int(rng.integers(0, 12))):  # far false positives of random size
                c = rng.integers(0, 38, 3)
                size = rng.integers(1, 6, 3)
                pred[c[0] : c[0] + size[0], c[1] : c[1] + size[1], c[2] : c[2] + size[2]] = True
            labels = pred.astype(np.uint8) * rng.integers(1, 4)  # label values too (2024 legacy HD95)
            for a, b in ((gt, pred), (pred, gt), (gt, labels)):
                assert hd95(a, b, spacing) == robust_hausdorff(surface_distances(a, b, spacing), 95)
