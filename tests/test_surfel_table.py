"""The surfel normals table shipped as package data (glioseg/assets/surfel_normals.npy).

It replaces the table that glioseg used to read from MONAI's private
``_get_neighbour_code_to_normals_table`` and cache under ``$GLIOSEG_CACHE``; the pinned
numbers below were computed with that code and must not change.
"""

from __future__ import annotations

import math
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np
import pytest

from glioseg.evaluate import surface
from glioseg.evaluate.surface import NORMALS_FILE, hd95, robust_hausdorff, surface_distances, surfel_normals


def test_shipped_table_equals_monai_table():
    utils = pytest.importorskip("monai.metrics.utils")
    make_table = getattr(utils, "_get_neighbour_code_to_normals_table", None)
    if make_table is None:
        pytest.skip("this MONAI has no _get_neighbour_code_to_normals_table")
    expected = np.asarray(make_table().cpu().numpy(), dtype=np.float64)
    shipped = np.load(NORMALS_FILE, allow_pickle=False)
    assert shipped.dtype == np.float64 and shipped.shape == (256, 4, 3)
    np.testing.assert_array_equal(shipped, expected)


def test_table_is_package_data_and_writes_no_cache(tmp_path, monkeypatch):
    assert NORMALS_FILE.parent.name == "assets" and NORMALS_FILE.is_file()
    monkeypatch.setenv("GLIOSEG_CACHE", str(tmp_path / "cache"))
    surface._shipped_normals.cache_clear()
    surface.surfel_area_table.cache_clear()
    table = surfel_normals()
    assert table.shape == (256, 4, 3) and not table.flags.writeable
    assert np.array_equal(table * 8, np.round(table * 8))  # multiples of 1/8: exact in float64
    assert surface.surfel_area_table((1.0, 1.0, 1.0))[255] == 0.0
    assert not (tmp_path / "cache").exists()


def _area_table(spacing):
    return surface.surfel_area_table(spacing)


def test_fresh_worker_process_needs_no_initialiser():
    spacing = (0.9, 1.2, 2.5)
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        in_worker = pool.submit(_area_table, spacing).result()
    np.testing.assert_array_equal(in_worker, surface.surfel_area_table(spacing))


def _ellipsoid(shape, centre, radii):
    grid = np.indices(shape, dtype=np.float64)
    return sum(((g - c) / r) ** 2 for g, c, r in zip(grid, centre, radii, strict=True)) <= 1.0


@pytest.mark.parametrize(
    ("spacing", "expected_hd95", "expected_hd50", "expected_sums"),
    [
        (
            (1.0, 1.0, 1.0),
            14.45683229480096,
            1.0,
            (753.3339406411455, 760.1501880963993, 2086.939779486391, 784.0817911150268),
        ),
        (
            (0.9, 1.2, 2.5),
            20.795432190748045,
            0.9,
            (953.3169883425224, 1541.4062065826706, 2798.939271306233, 1589.4902431816536),
        ),
    ],
)
def test_surface_distances_unchanged(spacing, expected_hd95, expected_hd50, expected_sums):
    """Values computed before the move, with the table built from MONAI; compared exactly."""
    shape = (40, 36, 30)
    gt = _ellipsoid(shape, (18.0, 17.0, 14.0), (9.0, 7.5, 6.0))
    pred = _ellipsoid(shape, (19.5, 16.0, 14.5), (8.0, 8.5, 5.5))
    pred |= _ellipsoid(shape, (35.0, 5.0, 25.0), (2.0, 2.0, 2.5))  # far away: exercises the k-d tree
    distances = surface_distances(gt, pred, spacing)
    sums = tuple(
        math.fsum(getattr(distances, name).tolist())
        for name in ("gt_to_pred", "gt_areas", "pred_to_gt", "pred_areas")
    )
    assert sums == expected_sums
    assert hd95(gt, pred, spacing) == expected_hd95
    assert robust_hausdorff(distances, 95.0) == expected_hd95
    assert robust_hausdorff(distances, 50.0) == expected_hd50
