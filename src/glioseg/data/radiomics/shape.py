"""Shape features of the whole tumour and volumes of its sub-regions, in physical units.

Units: volumes in mL (= cm^3), areas in cm^2, lengths in mm.  Voxel spacing is
honoured everywhere (anisotropic spacing included).  Mesh-based quantities come from
scikit-image's marching cubes on the binary mask at level 0.5, as in pyradiomics.
"""

from __future__ import annotations

import math

import cc3d
import numpy as np
from skimage.measure import marching_cubes, mesh_surface_area

from glioseg.data.labels import ET, NETC, SNFH

#: Feature names, in output order.
SHAPE_FEATURES: tuple[str, ...] = (
    "wt_volume_ml",
    "tc_volume_ml",
    "et_volume_ml",
    "netc_volume_ml",
    "snfh_volume_ml",
    "et_wt_ratio",
    "tc_wt_ratio",
    "netc_tc_ratio",
    "mesh_volume_ml",
    "surface_area_cm2",
    "surface_volume_ratio",
    "sphericity",
    "elongation",
    "flatness",
    "major_axis_mm",
    "minor_axis_mm",
    "least_axis_mm",
    "wt_components",
    "largest_component_fraction",
)

_MM3_PER_ML = 1000.0
_MM2_PER_CM2 = 100.0


def largest_component(mask: np.ndarray, connectivity: int = 26) -> np.ndarray:
    """The largest connected component of a boolean mask (``connectivity`` 6, 18 or 26).

    Ties are broken by the lowest component number (cc3d's scan order), so the result
    is deterministic.  An empty mask gives an empty mask.

    Examples
    --------
    >>> m = np.zeros((5, 5, 5), bool); m[0, 0, 0] = m[2:4, 2:4, 2:4] = True
    >>> int(largest_component(m).sum())
    8
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return np.zeros(m.shape, dtype=bool)
    components = cc3d.connected_components(m.astype(np.uint8), connectivity=connectivity)
    counts = np.bincount(components.ravel())
    counts[0] = 0
    return components == int(np.argmax(counts))


def count_components(mask: np.ndarray, connectivity: int = 26) -> int:
    """Number of connected components of a boolean mask."""
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return 0
    _, n = cc3d.connected_components(m.astype(np.uint8), connectivity=connectivity, return_N=True)
    return int(n)


def mesh_of(mask: np.ndarray, spacing: tuple[float, float, float]) -> tuple[np.ndarray, np.ndarray]:
    """Marching-cubes triangle mesh (level 0.5) of a binary mask, vertices in mm.

    The mask is cropped to its bounding box and padded with one empty voxel so that
    the surface is closed.  Returns ``(vertices (V, 3), faces (F, 3))``.
    """
    coords = np.argwhere(mask)
    lo, hi = coords.min(0), coords.max(0) + 1
    box = np.zeros(tuple(int(v) for v in hi - lo + 2), dtype=np.float32)
    box[tuple(slice(1, 1 + int(h - a)) for a, h in zip(lo, hi, strict=True))] = mask[
        tuple(slice(int(a), int(h)) for a, h in zip(lo, hi, strict=True))
    ]
    vertices, faces, _, _ = marching_cubes(box, level=0.5, spacing=tuple(float(s) for s in spacing))
    return vertices, faces


def mesh_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed triangle mesh (divergence theorem), in the cube of the vertex unit."""
    tri = vertices[faces].astype(np.float64)
    signed = np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum() / 6.0
    return float(abs(signed))


def principal_moments(mask: np.ndarray, spacing: tuple[float, float, float]) -> np.ndarray:
    """Eigenvalues (mm^2, descending) of the covariance of the voxel-centre coordinates in mm.

    Population covariance (``ddof=0``), as pyradiomics.  For an ``a x b x c`` box of voxels
    the eigenvalues are ``s_k^2 (n_k^2 - 1) / 12``.
    """
    coords = np.argwhere(mask).astype(np.float64) * np.asarray(spacing, dtype=np.float64)
    if len(coords) == 0:
        return np.full(3, math.nan)
    centred = coords - coords.mean(0)
    covariance = centred.T @ centred / len(coords)
    return np.sort(np.clip(np.linalg.eigvalsh(covariance), 0.0, None))[::-1]


def shape_features(labels: np.ndarray, spacing: tuple[float, float, float]) -> dict[str, float]:
    """Shape features of the largest 26-connected component of the whole tumour.

    Parameters
    ----------
    labels : ndarray of uint8, shape (X, Y, Z)
        Canonical labels (1 NETC, 2 SNFH, 3 ET).
    spacing : tuple of 3 float
        Voxel size in mm along the array axes.

    Returns
    -------
    dict
        Keys :data:`SHAPE_FEATURES`.  The region is the largest 26-connected component of
        WT = {1, 2, 3}; sub-region volumes count the voxels of each label inside it.

        - ``*_volume_ml``: voxel count x voxel volume (WT, TC = {1, 3}, ET, NETC, SNFH);
        - ``et_wt_ratio``, ``tc_wt_ratio``, ``netc_tc_ratio``: volume ratios (NaN when the
          denominator is 0);
        - ``mesh_volume_ml`` and ``surface_area_cm2`` of the marching-cubes mesh;
          ``surface_volume_ratio`` = area / mesh volume in 1/cm;
        - ``sphericity = pi^(1/3) (6 V)^(2/3) / A`` with the mesh volume ``V`` and area ``A``
          (1 for a ball, pyradiomics' definition);
        - ``elongation = sqrt(l_minor / l_major)``, ``flatness = sqrt(l_least / l_major)`` and
          axis lengths ``4 sqrt(l)`` in mm, from the eigenvalues ``l_major >= l_minor >=
          l_least`` of the covariance of voxel coordinates in mm (IBSI/pyradiomics);
        - ``wt_components``: number of 26-connected WT components in the whole map, and
          ``largest_component_fraction``: the share of WT voxels in the largest one.

        With an empty WT every volume is 0, ``wt_components`` is 0 and the other features
        are NaN (callers impute them, see :mod:`glioseg.train.splits`).
    """
    lab = np.asarray(labels)
    spacing = tuple(float(s) for s in spacing)
    voxel_ml = math.prod(spacing) / _MM3_PER_ML
    wt_all = lab > 0
    n_all = int(wt_all.sum())
    wt = largest_component(wt_all, connectivity=26)
    sub = lab[wt]
    n_wt = int(sub.size)
    counts = {k: int(np.count_nonzero(sub == k)) for k in (NETC, SNFH, ET)}
    n_tc = counts[NETC] + counts[ET]
    out: dict[str, float] = {name: math.nan for name in SHAPE_FEATURES}
    out.update(
        wt_volume_ml=n_wt * voxel_ml,
        tc_volume_ml=n_tc * voxel_ml,
        et_volume_ml=counts[ET] * voxel_ml,
        netc_volume_ml=counts[NETC] * voxel_ml,
        snfh_volume_ml=counts[SNFH] * voxel_ml,
        wt_components=float(count_components(wt_all)),
    )
    if n_wt == 0:
        return out
    out["et_wt_ratio"] = counts[ET] / n_wt
    out["tc_wt_ratio"] = n_tc / n_wt
    out["netc_tc_ratio"] = counts[NETC] / n_tc if n_tc else math.nan
    out["largest_component_fraction"] = n_wt / n_all
    vertices, faces = mesh_of(wt, spacing)
    area_mm2 = float(mesh_surface_area(vertices, faces))
    volume_mm3 = mesh_volume(vertices, faces)
    out["mesh_volume_ml"] = volume_mm3 / _MM3_PER_ML
    out["surface_area_cm2"] = area_mm2 / _MM2_PER_CM2
    if volume_mm3 > 0:
        out["surface_volume_ratio"] = (area_mm2 / volume_mm3) * 10.0  # 1/mm -> 1/cm
    if area_mm2 > 0:
        out["sphericity"] = math.pi ** (1 / 3) * (6 * volume_mm3) ** (2 / 3) / area_mm2
    major, minor, least = principal_moments(wt, spacing)
    out["major_axis_mm"] = 4 * math.sqrt(major)
    out["minor_axis_mm"] = 4 * math.sqrt(minor)
    out["least_axis_mm"] = 4 * math.sqrt(least)
    if major > 0:
        out["elongation"] = math.sqrt(minor / major)
        out["flatness"] = math.sqrt(least / major)
    return out
