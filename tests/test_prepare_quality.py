"""prepare's quality checks: the ghosting measure on the real raw study and on ghosted copies of it
(the measurements behind its threshold, docs/prepare.md "Warnings"), and the registration check."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest

from glioseg.data.synthetic.degrade import ghosting
from glioseg.prepare.quality import (
    GHOST_RATIO,
    ghost_ratio,
    registration_warning,
    series_quality,
    series_warnings,
    shift_at,
    slice_axis,
)

#: The lower bound of ``glioseg degrade``'s severe ghosting (data/degrade.py, SEVERITIES["severe"]).
SEVERE_GHOST = 0.08


@pytest.mark.realdata
def test_still_real_series_pass_and_their_severely_ghosted_copies_are_flagged(real_data):
    files = sorted((real_data / "raw" / "TCGA-FG-6692").glob("*.nii.gz"))
    assert len(files) == 4
    for f in files:
        image = nib.load(str(f))
        data, zooms = np.asarray(image.dataobj, dtype=np.float32), image.header.get_zooms()
        still, _ = ghost_ratio(data, zooms)
        assert still < GHOST_RATIO / 1.5, (f.name, still)  # measured 0.012-0.036
        for axis in (0, 1):
            ratio, found = ghost_ratio(ghosting(data, axis, SEVERE_GHOST), zooms)
            assert ratio > GHOST_RATIO and found == axis, (f.name, axis, ratio)  # measured 0.075-0.100


def _head(shape=(96, 80, 20)) -> np.ndarray:
    rng = np.random.default_rng(0)
    x, y, z = np.indices(shape)
    head = ((x - 48) / 30) ** 2 + ((y - 40) / 24) ** 2 + ((z - 10) / 14) ** 2 < 1
    return head * 500.0 + np.abs(rng.normal(0, 8, shape))


@pytest.mark.parametrize("axis", [0, 1])
def test_a_ghost_is_found_along_its_axis_and_warned_about(axis):
    still = series_quality(_head(), (1.0, 1.0, 5.0))
    assert still["ghost_ratio"] < GHOST_RATIO and series_warnings("t2f", "3 (FLAIR)", still) == [
        "t2f (3 (FLAIR)): 5.0 mm slices (> 3 mm)"
    ]
    ghosted = series_quality(ghosting(_head(), axis, 0.15), (1.0, 1.0, 5.0))
    assert ghosted["ghost_axis"] == axis and ghosted["ghost_ratio"] > GHOST_RATIO
    assert "heavy motion or ghosting along voxel axis" in series_warnings("t2f", "3", ghosted)[1]
    # the slice axis is the thickest one: the same volume stored with slices along axis 0
    moved = np.moveaxis(ghosting(_head(), axis, 0.15), 2, 0)
    assert ghost_ratio(moved, (5.0, 1.0, 1.0))[1] == axis + 1
    assert slice_axis((1.0, 1.0, 1.05)) == 2 and slice_axis((0.9, 5.5, 0.9)) == 1


def test_a_large_registration_correction_is_warned_about():
    turn = np.eye(4)
    turn[:2, :2] = [[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]]  # 22.9 deg about z
    assert shift_at(turn, (0, 0, 0)) == 0 and shift_at(turn, (100, 0, 0)) == pytest.approx(200 * np.sin(0.2))
    assert registration_warning("t2w", "2", 13.4, 17.5) is None  # the real study's largest correction
    assert "rotation 22.9 deg" in registration_warning("t2w", "2", 22.9, 0.0)
    assert "shift 31.0 mm" in registration_warning("t1n", "4", 2.0, 31.0)
