"""Lesion-wise BraTS metrics on hand-built volumes whose scores are derived by hand.

Geometry used throughout: cubes of voxels.  A cube occupying voxels ``[a, b)`` on an axis
has its surface on grid corners ``a .. b`` (corner ``i`` lies between voxels ``i-1`` and
``i``).  Two cubes that differ by a shift of ``k`` voxels along one axis have surfaces that
coincide on the side faces and are ``k`` voxels apart on the end faces; an end face holds
far more than 5 % of the surface area, so the 95th percentile distance is that of the
farthest end face.
"""

from __future__ import annotations

import numpy as np
import pytest

from glioseg.evaluate import MISSED_HD95, evaluate_labels, hd95, robust_hausdorff, surface_distances
from glioseg.evaluate.components import group_by_touching, merge_by_dilation, touching_pairs

SHAPE = (40, 40, 40)
N_VOXELS = 40**3
BOTH = ("brats2023", "brats2024-ssa")


def cube(
    labels: np.ndarray, start: tuple[int, int, int], size: int | tuple[int, int, int], value: int
) -> np.ndarray:
    sizes = (size,) * 3 if isinstance(size, int) else size
    labels[tuple(slice(s, s + n) for s, n in zip(start, sizes, strict=True))] = value
    return labels


def empty() -> np.ndarray:
    return np.zeros(SHAPE, np.uint8)


@pytest.mark.parametrize("definition", BOTH)
def test_one_lesion_shifted_by_one_voxel(definition):
    gt = cube(empty(), (10, 10, 10), 5, 3)
    pred = cube(empty(), (11, 10, 10), 5, 3)
    result = evaluate_labels(pred, gt, definition=definition)
    for region in ("WT", "TC", "ET"):  # label 3 belongs to all three regions
        r = result.regions[region]
        # overlap 4x5x5 = 100 of 125 + 125 voxels
        assert r.lesionwise_dice == pytest.approx(0.8) and r.legacy_dice == pytest.approx(0.8)
        assert r.lesionwise_hd95 == pytest.approx(1.0) and r.legacy_hd95 == pytest.approx(1.0)
        assert (r.n_tp, r.n_fp, r.n_fn) == (1, 0, 0)
        assert r.sensitivity == pytest.approx(100 / 125)
        assert r.specificity == pytest.approx((N_VOXELS - 150) / (N_VOXELS - 150 + 25))
        assert r.gt_volume_mm3 == 125 and r.pred_volume_mm3 == 125


@pytest.mark.parametrize("definition", BOTH)
def test_missed_lesion_scores_zero_and_374(definition):
    gt = cube(cube(empty(), (5, 10, 10), 5, 3), (25, 10, 10), 5, 3)  # 10 voxels apart: two lesions
    pred = cube(empty(), (5, 10, 10), 5, 3)
    r = evaluate_labels(pred, gt, definition=definition).regions["ET"]
    assert (r.n_tp, r.n_fp, r.n_fn) == (1, 0, 1)
    assert r.lesionwise_dice == pytest.approx((1.0 + 0.0) / 2)
    assert r.lesionwise_hd95 == pytest.approx((0.0 + MISSED_HD95) / 2)
    assert r.legacy_dice == pytest.approx(2 * 125 / 375)
    # GT surfels of the missed cube lie 15..20 mm from the found one; its far face (x = 30)
    # alone carries more than 5 % of the GT surface: HD95 = 30 - 10 = 20.
    assert r.legacy_hd95 == pytest.approx(20.0)
    missed = [rec for rec in r.lesions if rec.kind == "FN"]
    assert len(missed) == 1 and missed[0].dice == 0.0 and missed[0].hd95 == MISSED_HD95


def test_false_positive_component_adds_a_penalised_term():
    gt = cube(empty(), (5, 5, 5), 5, 3)
    pred = cube(gt.copy(), (25, 25, 25), 4, 3)  # 64 voxels, far away
    for definition in BOTH:  # 64 > 50 voxels: kept by the 2024 rule too
        r = evaluate_labels(pred, gt, definition=definition).regions["ET"]
        assert (r.n_tp, r.n_fp, r.n_fn) == (1, 1, 0)
        assert r.lesionwise_dice == pytest.approx(0.5)
        assert r.lesionwise_hd95 == pytest.approx(MISSED_HD95 / 2)
        fp = [rec for rec in r.lesions if rec.kind == "FP"]
        assert len(fp) == 1 and fp[0].pred_volume == 64


def test_small_predicted_component_deleted_by_2024_rule_only():
    gt = cube(empty(), (5, 5, 5), 5, 3)
    pred = cube(gt.copy(), (25, 25, 25), 3, 3)  # 27 voxels <= 50
    r23 = evaluate_labels(pred, gt, definition="brats2023").regions["ET"]
    r24 = evaluate_labels(pred, gt, definition="brats2024-ssa").regions["ET"]
    assert (r23.n_fp, r23.lesionwise_dice) == (1, pytest.approx(0.5))
    assert (r24.n_fp, r24.lesionwise_dice, r24.lesionwise_hd95) == (0, 1.0, 0.0)
    # The 2024 legacy metrics see the filtered prediction as well.
    assert r24.legacy_dice == 1.0 and r24.pred_volume_mm3 == 125
    assert r23.legacy_dice == pytest.approx(2 * 125 / (125 + 152))


def test_2024_merges_nearby_predicted_components_before_the_size_rule():
    gt = cube(empty(), (5, 5, 5), 5, 3)
    # Two 27-voxel components 2 voxels apart: one merged lesion of 54 > 50 voxels.
    pred = cube(cube(gt.copy(), (25, 25, 25), 3, 3), (30, 25, 25), 3, 3)
    r23 = evaluate_labels(pred, gt, definition="brats2023").regions["ET"]
    r24 = evaluate_labels(pred, gt, definition="brats2024-ssa").regions["ET"]
    assert r23.n_fp == 2 and r24.n_fp == 1
    assert r23.lesionwise_dice == pytest.approx(1 / 3) and r24.lesionwise_dice == pytest.approx(1 / 2)


def test_2024_size_rule_counts_voxels_not_mm3():
    gt = cube(empty(), (5, 5, 5), 5, 3)
    pred = cube(gt.copy(), (25, 25, 25), 3, 3)  # 27 voxels = 216 mm^3 at 2 mm
    r24 = evaluate_labels(pred, gt, (2.0, 2.0, 2.0), "brats2024-ssa").regions["ET"]
    assert r24.n_fp == 0


@pytest.mark.parametrize("definition", BOTH)
@pytest.mark.parametrize(("second_start", "lesions"), [(16, 1), (17, 2)])
def test_gt_lesions_merged_by_dilation(definition, second_start, lesions):
    # First cube: voxels 5..9.  Dilated 3 times it reaches 12; the second cube's dilation
    # starts at second_start - 3.  Adjacent or overlapping dilations (<= 13) merge.
    gt = cube(cube(empty(), (5, 10, 10), 5, 3), (second_start, 10, 10), 5, 3)
    r = evaluate_labels(gt.copy(), gt, definition=definition).regions["ET"]
    assert r.n_tp == lesions and r.n_fp == 0 and r.lesionwise_dice == 1.0 and r.lesionwise_hd95 == 0.0
    assert [rec.gt_volume for rec in r.lesions] == ([250.0] if lesions == 1 else [125.0, 125.0])


@pytest.mark.parametrize("definition", BOTH)
def test_prediction_within_dilation_matches_without_overlap(definition):
    gt = cube(empty(), (5, 10, 10), 5, 3)
    near = cube(empty(), (12, 10, 10), 5, 3)  # 2-voxel gap: inside the GT lesion dilated 3 times
    r = evaluate_labels(near, gt, definition=definition).regions["ET"]
    assert (r.n_tp, r.n_fp, r.n_fn) == (1, 0, 0)
    # No overlap: Dice 0.  GT surface x = 5..10, prediction x = 12..17: far faces 7 apart.
    assert r.lesionwise_dice == 0.0 and r.lesionwise_hd95 == pytest.approx(7.0)
    far = cube(empty(), (13, 10, 10), 5, 3)  # 3-voxel gap: out of reach
    r = evaluate_labels(far, gt, definition=definition).regions["ET"]
    assert (r.n_tp, r.n_fp, r.n_fn) == (0, 1, 1)
    assert r.lesionwise_dice == 0.0 and r.lesionwise_hd95 == MISSED_HD95


@pytest.mark.parametrize("definition", BOTH)
def test_gt_lesion_under_threshold_is_not_scored(definition):
    gt = cube(cube(empty(), (5, 5, 5), 5, 3), (25, 25, 25), 3, 3)  # 125 and 27 voxels
    pred = cube(empty(), (5, 5, 5), 5, 3)
    r = evaluate_labels(pred, gt, definition=definition).regions["ET"]
    assert (r.n_tp, r.n_fp, r.n_fn) == (1, 0, 0)
    assert r.lesionwise_dice == 1.0 and r.lesionwise_hd95 == 0.0
    small = [rec for rec in r.lesions if rec.gt_volume == 27]
    assert len(small) == 1 and small[0].kind == "FN" and not small[0].counted
    # A prediction of the small lesion is not a false positive either, and the lesion stays uncounted.
    pred_both = cube(pred.copy(), (25, 25, 25), 3, 3)
    r = evaluate_labels(pred_both, gt, definition="brats2023").regions["ET"]
    assert (r.n_tp, r.n_fp, r.n_fn, r.lesionwise_dice) == (1, 0, 0, 1.0)
    # At 2 mm the same 27 voxels are 216 mm^3 > 50: counted, and missed.
    r = evaluate_labels(pred, gt, (2.0, 2.0, 2.0), definition).regions["ET"]
    assert (r.n_tp, r.n_fn) == (1, 1) and r.lesionwise_dice == pytest.approx(0.5)


def _et_touching_netc() -> np.ndarray:
    labels = cube(empty(), (5, 10, 10), (20, 3, 3), 1)  # NETC bar along x, voxels 5..24
    cube(labels, (5, 13, 10), 4, 3)  # ET block on the bar's y+ face at x 5..8
    cube(labels, (21, 13, 10), 4, 3)  # another at x 21..24: 12 voxels apart, separate by dilation
    return labels


def test_et_lesions_touching_one_netc_lesion_are_one_lesion_in_2024():
    gt = _et_touching_netc()
    r23 = evaluate_labels(gt.copy(), gt, definition="brats2023").regions["ET"]
    r24 = evaluate_labels(gt.copy(), gt, definition="brats2024-ssa").regions["ET"]
    assert r23.n_tp == 2 and r24.n_tp == 1
    assert [rec.gt_volume for rec in r24.lesions] == [128.0]
    # Predicting only one ET block: 2023 misses a lesion; 2024 scores the group with Dice 2*64/(64+128).
    pred = gt.copy()
    pred[21:25, 13:17, 10:14] = 2
    r23 = evaluate_labels(pred, gt, definition="brats2023").regions["ET"]
    r24 = evaluate_labels(pred, gt, definition="brats2024-ssa").regions["ET"]
    assert (r23.n_tp, r23.n_fn, r23.lesionwise_dice) == (1, 1, 0.5)
    assert (r24.n_tp, r24.n_fn) == (1, 0) and r24.lesionwise_dice == pytest.approx(128 / 192)


def test_touching_means_face_or_edge_neighbours():
    netc = cube(np.zeros((12, 12, 12), np.uint8), (4, 4, 4), 2, 1)  # voxels 4..5
    et = np.zeros_like(netc)
    et[6, 4, 4] = 1  # face neighbour
    et[6, 6, 4] = 2  # edge neighbour (18-neighbourhood)
    et[6, 6, 6] = 3  # corner only: not touching
    assert touching_pairs(et, netc) == {(1, 1), (2, 1)}


def test_grouping_follows_the_lowest_numbered_netc_lesion():
    netc = np.zeros((20, 20, 20), np.uint8)
    netc[2, 2, 2] = 1
    netc[2, 10, 2] = 2
    et = np.zeros_like(netc)
    et[3, 2, 2] = et[3, 10, 2] = 1  # ET lesion 1 touches NETC 1 and 2
    et[1, 10, 2] = 2  # ET lesion 2 touches NETC 2 only
    et[10, 10, 10] = 3  # untouched
    lookup = group_by_touching(et, netc)
    # 1 -> group of NETC 1, 2 -> group of NETC 2 (not merged with 1); untouched 3 comes first.
    assert lookup.tolist() == [0, 2, 3, 1]
    # A single touching pair renames nothing.
    et_single = np.zeros_like(et)
    et_single[3, 2, 2] = 1
    et_single[10, 10, 10] = 2
    assert group_by_touching(et_single, netc).tolist() == [0, 1, 2]


def test_two_et_lesions_sharing_lowest_netc_merge():
    netc = np.zeros((20, 20, 20), np.uint8)
    netc[2, 2:12, 2] = 1
    et = np.zeros_like(netc)
    et[3, 2, 2] = 1
    et[3, 11, 2] = 2
    assert group_by_touching(et, netc).tolist() == [0, 1, 1]


@pytest.mark.parametrize("definition", BOTH)
def test_empty_against_empty(definition):
    result = evaluate_labels(empty(), empty(), definition=definition)
    for r in result.regions.values():
        assert (r.lesionwise_dice, r.lesionwise_hd95, r.legacy_dice, r.legacy_hd95) == (1.0, 0.0, 1.0, 0.0)
        assert (r.sensitivity, r.specificity, r.n_tp, r.n_fp, r.n_fn) == (1.0, 1.0, 0, 0, 0)


@pytest.mark.parametrize("definition", BOTH)
def test_empty_gt_with_false_positive(definition):
    pred = cube(empty(), (10, 10, 10), 5, 3)
    for region, r in evaluate_labels(pred, empty(), definition=definition).regions.items():
        assert (r.n_tp, r.n_fp, r.n_fn) == (0, 1, 0), region
        assert r.lesionwise_dice == 0.0 and r.lesionwise_hd95 == MISSED_HD95
        assert r.legacy_dice == 0.0 and r.legacy_hd95 == MISSED_HD95
        assert r.sensitivity == 0.0 and r.specificity == pytest.approx((N_VOXELS - 125) / N_VOXELS)


@pytest.mark.parametrize("definition", BOTH)
def test_empty_prediction_with_gt(definition):
    gt = cube(empty(), (10, 10, 10), 5, 1)  # NETC: in TC and WT, not ET
    result = evaluate_labels(empty(), gt, definition=definition)
    assert result.regions["ET"].lesionwise_dice == 1.0  # nothing to find, nothing found
    tc = result.regions["TC"]
    assert (tc.n_fn, tc.lesionwise_dice, tc.lesionwise_hd95, tc.legacy_hd95) == (
        1,
        0.0,
        MISSED_HD95,
        MISSED_HD95,
    )


@pytest.mark.parametrize(
    ("spacing", "axis", "expected"),
    [
        ((1.0, 1.0, 3.0), 2, 3.0),
        ((1.0, 1.0, 3.0), 0, 1.0),
        ((0.5, 2.0, 2.0), 0, 0.5),
        ((1.0, 2.5, 1.0), 1, 2.5),
    ],
)
def test_hd95_honours_anisotropic_spacing(spacing, axis, expected):
    a = cube(np.zeros((30, 30, 30), bool), (10, 10, 10), 6, 1)
    b = np.roll(a, 1, axis=axis)
    assert hd95(a, b, spacing) == pytest.approx(expected)
    gt, pred = a.astype(np.uint8) * 3, b.astype(np.uint8) * 3
    r = evaluate_labels(pred, gt, spacing, "brats2023").regions["ET"]
    assert r.lesionwise_hd95 == pytest.approx(expected)
    assert r.gt_volume_mm3 == pytest.approx(216 * np.prod(spacing))


def test_hd95_is_area_weighted_percentile_not_max():
    a = cube(np.zeros((40, 40, 40), bool), (5, 5, 5), 20, 1)
    b = a.copy()
    b[24, 14, 14] = False  # a one-voxel dent: few surfels move by one voxel
    b[5, 5, 5] = False
    distances = surface_distances(a, b, (1.0, 1.0, 1.0))
    assert robust_hausdorff(distances, 100) > 0 and robust_hausdorff(distances, 95) == 0.0


def test_merge_by_dilation_numbers_components_in_raster_order():
    mask = np.zeros((20, 20, 20), bool)
    mask[15, 1, 1] = mask[1, 15, 15] = mask[1, 16, 15] = True
    lesions, reach, n = merge_by_dilation(mask)
    assert n == 2
    assert lesions[1, 15, 15] == lesions[1, 16, 15] == 1 and lesions[15, 1, 1] == 2  # C order: axis 0 slowest
    assert reach[1, 18, 15] == 1 and reach[12, 1, 1] == 2 and reach[11, 1, 1] == 0


def test_labels_outside_canonical_range_are_rejected():
    with pytest.raises(ValueError, match="to_canonical"):
        evaluate_labels(cube(empty(), (1, 1, 1), 2, 4), empty())
    with pytest.raises(ValueError, match="definition"):
        evaluate_labels(empty(), empty(), definition="brats2021")
