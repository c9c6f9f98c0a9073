"""Grey-level co-occurrence (GLCM) texture features in 3-D.

scikit-image's ``graycomatrix`` is 2-D only, so the co-occurrences are counted here in
3-D with NumPy (one ``bincount`` per direction) over the 13 unique directions of the
26-neighbourhood at distance 1, as pyradiomics does.  Only pairs with both voxels
inside the mask count.  Each direction's matrix is made symmetric and normalised,
features are computed per direction and averaged over the directions that have at
least one pair (pyradiomics' default aggregation).  The features are defined as in
scikit-image's ``graycoprops`` (``energy`` is the square root of the angular second
moment), plus the joint entropy.
"""

from __future__ import annotations

import math

import numpy as np

#: Number of grey levels of the quantised image (fixed bin number, IBSI "FBN").
DEFAULT_LEVELS = 32

#: Values within this fraction of a bin below a bin edge count as on the edge, so that rounding
#: (e.g. after rescaling an integer-valued image) does not move voxels between levels.
_EDGE_TOLERANCE = 1e-9

#: The 13 unique offsets of the 3-D 26-neighbourhood (one of each opposite pair).
DIRECTIONS_3D: tuple[tuple[int, int, int], ...] = (
    (1, 0, 0),
    (0, 1, 0),
    (0, 0, 1),
    (1, 1, 0),
    (1, -1, 0),
    (1, 0, 1),
    (1, 0, -1),
    (0, 1, 1),
    (0, 1, -1),
    (1, 1, 1),
    (1, 1, -1),
    (1, -1, 1),
    (1, -1, -1),
)

#: Feature names, in output order.
GLCM_FEATURES: tuple[str, ...] = (
    "contrast",
    "dissimilarity",
    "homogeneity",
    "correlation",
    "energy",
    "entropy",
)


def quantise(image: np.ndarray, mask: np.ndarray, n_levels: int = DEFAULT_LEVELS) -> np.ndarray:
    """Quantise the voxels inside ``mask`` to grey levels ``1 .. n_levels``; 0 outside.

    Fixed bin number over the range of the masked voxels (IBSI):
    ``level = floor(n_levels (x - min) / (max - min)) + 1``, with the maximum put in the
    top level.  A constant region is all level 1.

    Parameters
    ----------
    image : ndarray of float, shape (X, Y, Z)
    mask : ndarray of bool, same shape
    n_levels : int

    Returns
    -------
    ndarray of int32, same shape

    Examples
    --------
    >>> quantise(np.array([[0.0, 1.0, 2.0, 4.0]]), np.ones((1, 4), bool), 4).tolist()
    [[1, 2, 3, 4]]
    """
    if n_levels < 2:
        raise ValueError(f"need at least 2 grey levels, got {n_levels}")
    img = np.asarray(image, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    out = np.zeros(img.shape, dtype=np.int32)
    if not m.any():
        return out
    values = img[m]
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        out[m] = 1
        return out
    levels = np.floor(n_levels * (values - lo) / (hi - lo) + _EDGE_TOLERANCE).astype(np.int64) + 1
    out[m] = np.minimum(levels, n_levels)
    return out


def _shifted(n: int, offset: int) -> tuple[slice, slice]:
    if offset >= 0:
        return slice(0, n - offset), slice(offset, n)
    return slice(-offset, n), slice(0, n + offset)


def glcm_matrices(
    levels: np.ndarray, n_levels: int, directions: tuple[tuple[int, ...], ...] = DIRECTIONS_3D
) -> np.ndarray:
    """Symmetric co-occurrence counts per direction.

    Parameters
    ----------
    levels : ndarray of int, shape (X, Y, Z)
        Grey levels ``1 .. n_levels`` inside the region, 0 outside (see :func:`quantise`).
    n_levels : int
    directions : tuple of offsets
        Each offset ``d`` counts the pairs ``(v, v + d)``; the matrix is symmetrised, so
        ``d`` and ``-d`` give the same matrix.

    Returns
    -------
    ndarray of int64, shape (len(directions), n_levels, n_levels)
        ``C[k, i - 1, j - 1]``: how often levels ``i`` and ``j`` are neighbours along
        direction ``k`` (both orders counted).
    """
    lev = np.asarray(levels)
    if lev.ndim != len(directions[0]):
        raise ValueError(f"levels are {lev.ndim}-D but the directions are {len(directions[0])}-D")
    out = np.zeros((len(directions), n_levels, n_levels), dtype=np.int64)
    for k, direction in enumerate(directions):
        pairs = [_shifted(n, o) for n, o in zip(lev.shape, direction, strict=True)]
        a = lev[tuple(p[0] for p in pairs)]
        b = lev[tuple(p[1] for p in pairs)]
        valid = (a > 0) & (b > 0)
        index = (a[valid].astype(np.int64) - 1) * n_levels + (b[valid].astype(np.int64) - 1)
        counts = np.bincount(index, minlength=n_levels * n_levels).reshape(n_levels, n_levels)
        out[k] = counts + counts.T
    return out


def glcm_properties(counts: np.ndarray) -> dict[str, float]:
    """Texture features of one co-occurrence matrix (counts or probabilities, shape (Ng, Ng)).

    With ``P`` the normalised matrix over levels ``i, j``:
    ``contrast = sum P (i - j)^2``, ``dissimilarity = sum P |i - j|``,
    ``homogeneity = sum P / (1 + (i - j)^2)``, ``energy = sqrt(sum P^2)``,
    ``correlation = sum P (i - mu_i)(j - mu_j) / (sigma_i sigma_j)`` (1 when a marginal
    variance is 0, as scikit-image), ``entropy = -sum P log2 P``.  All NaN for an empty
    matrix.
    """
    c = np.asarray(counts, dtype=np.float64)
    total = c.sum()
    if total <= 0:
        return {name: math.nan for name in GLCM_FEATURES}
    p = c / total
    n = p.shape[0]
    i, j = np.meshgrid(
        np.arange(1, n + 1, dtype=np.float64), np.arange(1, n + 1, dtype=np.float64), indexing="ij"
    )
    diff = i - j
    mu_i, mu_j = float((i * p).sum()), float((j * p).sum())
    var_i = float(((i - mu_i) ** 2 * p).sum())
    var_j = float(((j - mu_j) ** 2 * p).sum())
    if var_i < 1e-15 or var_j < 1e-15:
        correlation = 1.0
    else:
        correlation = float(((i - mu_i) * (j - mu_j) * p).sum() / math.sqrt(var_i * var_j))
    nz = p[p > 0]
    return {
        "contrast": float((p * diff**2).sum()),
        "dissimilarity": float((p * np.abs(diff)).sum()),
        "homogeneity": float((p / (1.0 + diff**2)).sum()),
        "correlation": correlation,
        "energy": math.sqrt(float((p * p).sum())),
        "entropy": float(-(nz * np.log2(nz)).sum()) + 0.0,
    }


def glcm_features_from_levels(
    levels: np.ndarray, n_levels: int, directions: tuple[tuple[int, ...], ...] = DIRECTIONS_3D
) -> dict[str, float]:
    """Average of :func:`glcm_properties` over the directions with at least one pair (NaN if none)."""
    matrices = glcm_matrices(levels, n_levels, directions)
    per_direction = [glcm_properties(m) for m in matrices if m.sum() > 0]
    if not per_direction:
        return {name: math.nan for name in GLCM_FEATURES}
    return {name: float(np.mean([d[name] for d in per_direction])) for name in GLCM_FEATURES}


def glcm_features(image: np.ndarray, mask: np.ndarray, n_levels: int = DEFAULT_LEVELS) -> dict[str, float]:
    """3-D GLCM features of ``image`` inside ``mask``.

    The image is cropped to the mask's bounding box, quantised to ``n_levels`` grey levels
    over the range of the masked voxels (:func:`quantise`), and the 13-direction,
    distance-1 matrices are counted over pairs inside the mask (:func:`glcm_matrices`).

    Parameters
    ----------
    image : ndarray of float, shape (X, Y, Z)
        Best z-scored (the quantisation uses the region's own range, so only the
        intensity *order* and relative spacing matter).
    mask : ndarray of bool, shape (X, Y, Z)
    n_levels : int

    Returns
    -------
    dict with keys :data:`GLCM_FEATURES`; NaN when the mask has no neighbouring voxel pair.
    """
    m = np.asarray(mask, dtype=bool)
    if not m.any():
        return {name: math.nan for name in GLCM_FEATURES}
    coords = np.argwhere(m)
    box = tuple(slice(int(a), int(b) + 1) for a, b in zip(coords.min(0), coords.max(0), strict=True))
    levels = quantise(np.asarray(image)[box], m[box], n_levels)
    return glcm_features_from_levels(levels, n_levels)
