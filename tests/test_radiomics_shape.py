"""Shape features against values derived by hand for boxes (marching cubes at level 0.5 on a voxel box)."""

import math

import numpy as np
import pytest

from glioseg.data.radiomics.shape import largest_component, shape_features

SQRT_HALF = math.sqrt(0.5)
MC_REL = 1e-6  # marching cubes returns float32 vertices


def box_labels(n=(3, 5, 7), pad=2, value=2):
    labels = np.zeros(tuple(k + 2 * pad for k in n), dtype=np.uint8)
    labels[pad : pad + n[0], pad : pad + n[1], pad : pad + n[2]] = value
    return labels


def box_mesh_area(n, s):
    """Marching cubes on an n1 x n2 x n3 voxel box: flat faces between the outer voxel centres, a
    chamfer strip of width |(s_i/2, s_j/2)| along each of the 12 edges and a corner triangle with
    vertices at half a voxel along each axis at each of the 8 corners."""
    a, b, c = (k - 1 for k in n)
    sx, sy, sz = s
    faces = 2 * (b * sy * c * sz + a * sx * c * sz + a * sx * b * sy)
    strips = 4 * (
        c * sz * math.hypot(sx / 2, sy / 2)
        + b * sy * math.hypot(sx / 2, sz / 2)
        + a * sx * math.hypot(sy / 2, sz / 2)
    )
    # corner triangle: half the norm of the cross product of two of its edges
    corner = 0.5 * math.sqrt((sy * sz / 4) ** 2 + (sx * sz / 4) ** 2 + (sx * sy / 4) ** 2)
    return faces + strips + 8 * corner


def box_mesh_volume(n, s):
    """The box [-1/2, n - 1/2] per axis, less a right prism of cross-section 1/8 voxel^2 along each
    edge's inner length (n_k - 1) and, at each corner, the octant (1/8) less the kept tetrahedron (1/48)."""
    a, b, c = (k - 1 for k in n)
    return math.prod(s) * (math.prod(n) - 4 * (a + b + c) / 8 - 8 * (1 / 8 - 1 / 48))


@pytest.mark.parametrize("spacing", [(1.0, 1.0, 1.0), (1.0, 2.0, 3.0), (0.5, 0.5, 4.0)])
def test_box_volume_area_sphericity_axes(spacing):
    n = (3, 5, 7)
    f = shape_features(box_labels(n), spacing)
    voxel_ml = math.prod(spacing) / 1000
    assert f["wt_volume_ml"] == pytest.approx(math.prod(n) * voxel_ml)
    area = box_mesh_area(n, spacing)
    volume = box_mesh_volume(n, spacing)
    assert f["surface_area_cm2"] == pytest.approx(area / 100, rel=MC_REL)
    assert f["mesh_volume_ml"] == pytest.approx(volume / 1000, rel=MC_REL)
    assert f["surface_volume_ratio"] == pytest.approx(10 * area / volume, rel=MC_REL)
    assert f["sphericity"] == pytest.approx(math.pi ** (1 / 3) * (6 * volume) ** (2 / 3) / area, rel=MC_REL)
    # covariance of voxel centres along axis k: s_k^2 (n_k^2 - 1) / 12 (discrete uniform)
    lambdas = sorted((s * s * (k * k - 1) / 12 for k, s in zip(n, spacing, strict=True)), reverse=True)
    assert f["elongation"] == pytest.approx(math.sqrt(lambdas[1] / lambdas[0]))
    assert f["flatness"] == pytest.approx(math.sqrt(lambdas[2] / lambdas[0]))
    assert f["major_axis_mm"] == pytest.approx(4 * math.sqrt(lambdas[0]))
    assert f["least_axis_mm"] == pytest.approx(4 * math.sqrt(lambdas[2]))


def test_cube_values_written_out():
    # a 2x2x2 cube of 1 mm voxels: faces 6 x 1, strips 12 x 1 x sqrt(1/2), corners 8 x sqrt(3)/8
    f = shape_features(box_labels((2, 2, 2)), (1.0, 1.0, 1.0))
    assert f["surface_area_cm2"] * 100 == pytest.approx(6 + 12 * SQRT_HALF + math.sqrt(3))
    assert f["mesh_volume_ml"] * 1000 == pytest.approx(8 - 1.5 - 5 / 6)
    assert f["elongation"] == pytest.approx(1.0) and f["flatness"] == pytest.approx(1.0)


def test_ball_is_nearly_spherical_and_thin_plate_is_flat():
    r = 12
    g = np.mgrid[-r - 2 : r + 3, -r - 2 : r + 3, -r - 2 : r + 3]
    ball = ((g**2).sum(0) <= r * r).astype(np.uint8)
    f = shape_features(ball, (1.0, 1.0, 1.0))
    assert 0.9 < f["sphericity"] <= 1.0
    assert f["elongation"] == pytest.approx(1.0, abs=1e-6)
    assert f["wt_volume_ml"] * 1000 == pytest.approx(4 / 3 * math.pi * r**3, rel=0.02)
    plate = shape_features(box_labels((20, 20, 2)), (1.0, 1.0, 1.0))
    assert plate["flatness"] == pytest.approx(math.sqrt(3 / 399))  # (2^2-1) / (20^2-1)
    assert plate["sphericity"] < 0.6


def test_subregion_volumes_and_ratios():
    labels = box_labels((4, 5, 6), value=2)  # SNFH 120 voxels
    core = (slice(3, 5), slice(3, 5), slice(3, 6))  # 2 x 2 x 3 = 12 voxels inside the box
    labels[core] = 3  # ET
    labels[3, 3, 3] = 1  # one NETC voxel
    f = shape_features(labels, (2.0, 2.0, 2.0))
    v = 8 / 1000
    assert f["wt_volume_ml"] == pytest.approx(120 * v)
    assert f["tc_volume_ml"] == pytest.approx(12 * v)
    assert f["et_volume_ml"] == pytest.approx(11 * v)
    assert f["netc_volume_ml"] == pytest.approx(1 * v)
    assert f["snfh_volume_ml"] == pytest.approx(108 * v)
    assert f["et_wt_ratio"] == pytest.approx(11 / 120)
    assert f["tc_wt_ratio"] == pytest.approx(12 / 120)
    assert f["netc_tc_ratio"] == pytest.approx(1 / 12)


def test_largest_26_connected_component_is_used():
    labels = box_labels((3, 3, 3), pad=3)  # 27 voxels at 3..5
    labels[6, 6, 6] = 3  # touches the box's corner (5, 5, 5): joined under 26-connectivity
    labels[0, 0, 0] = 1  # far away: a separate component
    labels[0, 0, 1] = 1
    f = shape_features(labels, (1.0, 1.0, 1.0))
    assert f["wt_volume_ml"] * 1000 == pytest.approx(28)
    assert f["et_volume_ml"] * 1000 == pytest.approx(1)
    assert f["netc_volume_ml"] == 0
    assert f["wt_components"] == 2
    assert f["largest_component_fraction"] == pytest.approx(28 / 30)
    assert largest_component(labels > 0, connectivity=6).sum() == 27


def test_empty_tumour_gives_zero_volumes_and_nan_shape():
    f = shape_features(np.zeros((6, 6, 6), np.uint8), (1.0, 1.0, 1.0))
    assert f["wt_volume_ml"] == 0 and f["et_volume_ml"] == 0 and f["wt_components"] == 0
    for name in ("sphericity", "elongation", "surface_area_cm2", "et_wt_ratio", "netc_tc_ratio"):
        assert math.isnan(f[name]), name


def test_core_free_tumour_has_undefined_netc_share():
    f = shape_features(box_labels((3, 3, 3), value=2), (1.0, 1.0, 1.0))
    assert f["tc_wt_ratio"] == 0 and f["et_wt_ratio"] == 0
    assert math.isnan(f["netc_tc_ratio"])
