"""GLCM texture: hand-derived matrices and features, and scikit-image's 2-D implementation as a reference."""

import itertools
import math

import numpy as np
import pytest
from skimage.feature import graycomatrix, graycoprops

from glioseg.data.radiomics.texture import (
    DIRECTIONS_3D,
    GLCM_FEATURES,
    glcm_features,
    glcm_features_from_levels,
    glcm_matrices,
    quantise,
)


def checkerboard(n=4):
    i, j, k = np.indices((n, n, n))
    return ((i + j + k) % 2 + 1).astype(np.int32)  # levels 1 and 2


def test_thirteen_directions_cover_the_26_neighbourhood_once():
    both = {d for d in DIRECTIONS_3D} | {tuple(-v for v in d) for d in DIRECTIONS_3D}
    every = {d for d in itertools.product((-1, 0, 1), repeat=3) if d != (0, 0, 0)}
    assert len(DIRECTIONS_3D) == 13 and both == every


def test_checkerboard_matrices():
    m = glcm_matrices(checkerboard(), 2)
    # face neighbour (1, 0, 0): 3 x 4 x 4 = 48 pairs, always of different levels, counted both ways
    assert m[DIRECTIONS_3D.index((1, 0, 0))].tolist() == [[0, 48], [48, 0]]
    # in-plane diagonal (1, 1, 0): 3 x 3 x 4 = 36 pairs of equal levels, half of each level
    assert m[DIRECTIONS_3D.index((1, 1, 0))].tolist() == [[36, 0], [0, 36]]
    # body diagonal (1, 1, 1): 27 pairs of different levels
    assert m[DIRECTIONS_3D.index((1, 1, 1))].tolist() == [[0, 27], [27, 0]]


def test_checkerboard_features_averaged_over_13_directions():
    # 3 face + 4 body diagonals pair different levels: P = [[0, .5], [.5, 0]] -> contrast 1,
    # homogeneity 1/2, correlation -1, energy sqrt(1/2); 6 face diagonals pair equal levels:
    # P = [[.5, 0], [0, .5]] -> contrast 0, homogeneity 1, correlation 1, energy sqrt(1/2).
    f = glcm_features_from_levels(checkerboard(), 2)
    assert f["contrast"] == pytest.approx(7 / 13)
    assert f["dissimilarity"] == pytest.approx(7 / 13)
    assert f["homogeneity"] == pytest.approx((7 * 0.5 + 6 * 1.0) / 13)
    assert f["correlation"] == pytest.approx((7 * -1 + 6 * 1) / 13)
    assert f["energy"] == pytest.approx(math.sqrt(0.5))
    assert f["entropy"] == pytest.approx(1.0)


def test_glcm_features_quantise_the_range_to_n_levels():
    # a two-valued image quantised to 32 levels uses levels 1 and 32: differences of 31
    image = checkerboard().astype(np.float64) * 1.7 - 0.3
    f = glcm_features(image, np.ones(image.shape, bool), n_levels=32)
    assert f["contrast"] == pytest.approx(31**2 * 7 / 13)
    assert f["dissimilarity"] == pytest.approx(31 * 7 / 13)
    assert f["homogeneity"] == pytest.approx((7 / (1 + 31**2) + 6) / 13)
    assert f["correlation"] == pytest.approx(-1 / 13)


def test_pairs_leaving_the_mask_are_not_counted():
    levels = np.array([1, 2, 0, 1], dtype=np.int32).reshape(4, 1, 1)
    m = glcm_matrices(levels, 2)
    assert m[DIRECTIONS_3D.index((1, 0, 0))].tolist() == [[0, 1], [1, 0]]
    assert m.sum() == 2  # no other direction has a pair on a 4 x 1 x 1 line


def test_matches_scikit_image_on_a_single_slice():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 8, size=(23, 19))
    ours = glcm_features_from_levels((img + 1)[:, :, None], 8)  # only the 4 in-plane directions have pairs
    angles = [0, np.pi / 4, np.pi / 2, 3 * np.pi / 4]
    p = graycomatrix(
        img.astype(np.uint8), distances=[1], angles=angles, levels=8, symmetric=True, normed=True
    )
    for name in ("contrast", "dissimilarity", "homogeneity", "correlation", "energy"):
        assert ours[name] == pytest.approx(graycoprops(p, name).mean()), name
    natural_log_entropy = graycoprops(p, "entropy").mean()
    assert ours["entropy"] == pytest.approx(natural_log_entropy / math.log(2))


def test_quantise():
    mask = np.ones((1, 4), bool)
    assert quantise(np.array([[0.0, 1.0, 2.0, 4.0]]), mask, 4).tolist() == [[1, 2, 3, 4]]
    mask[0, 0] = False
    assert quantise(np.array([[-9.0, 1.0, 2.0, 4.0]]), mask, 3).tolist() == [[0, 1, 2, 3]]
    assert quantise(np.full((1, 4), 5.0), mask, 3).tolist() == [[0, 1, 1, 1]]


def test_constant_region_and_empty_mask():
    f = glcm_features(np.full((3, 3, 3), 2.0), np.ones((3, 3, 3), bool))
    assert (f["contrast"], f["homogeneity"], f["energy"], f["correlation"]) == (0, 1, 1, 1)
    empty = glcm_features(np.zeros((3, 3, 3)), np.zeros((3, 3, 3), bool))
    assert set(empty) == set(GLCM_FEATURES) and all(math.isnan(v) for v in empty.values())
    single = np.zeros((3, 3, 3), bool)
    single[1, 1, 1] = True
    assert math.isnan(glcm_features(np.ones((3, 3, 3)), single)["contrast"])
