"""Surface distances and the robust (95th percentile) Hausdorff distance.

The definition is the one of DeepMind's ``surface-distance`` package, in the version the
BraTS metric scripts bundle:

* Surface elements ("surfels") sit on the corners of the voxel grid.  Each corner gets an
  8-bit code from the 2x2x2 voxels around it (bit weights 128, 64, ..., 1; voxels outside
  the volume count as 0); a corner is on the surface when its code is neither 0 nor 255.
  The code is formed modulo 256, as the reference's ``scipy.ndimage.correlate`` on a uint8
  array forms it, which matters only for the label-valued maps of the BraTS 2024 legacy
  HD95 (for masks the codes are 0..255 anyway).
* Each surfel has an area: the marching-cubes normals of its code (unit spacing; DeepMind's
  table, shipped with glioseg as ``assets/surfel_normals.npy``) scaled by the voxel spacing,
  see :func:`surfel_area_table`.
* The distance of a surfel to the other surface is the Euclidean distance (mm, spacing
  honoured) to the nearest surfel of the other mask.  The reference reads it off
  ``scipy.ndimage.distance_transform_edt(~border, sampling=spacing)`` over the whole box;
  glioseg searches the nearest surfel directly (nearby offsets first, a k-d tree for the
  rest), which finds the same nearest distance with far less work, and evaluates it from
  the integer offset with the floating-point steps of scipy's transform (scale by the
  spacing, square, add the axes in order, square root).
* The robust Hausdorff distance at ``p`` % is, in each direction, the distance of the
  first surfel (sorted by distance, then area) at which the cumulative area fraction
  reaches ``p / 100``; the larger of the two directions is returned.  An empty mask has no
  surfels: every distance to it is infinite.

Everything runs on the bounding box of the two masks (one voxel larger), which gives the
same surfels and the same distances as the full volume: every surfel of either mask lies
in that box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy import ndimage
from scipy.spatial import cKDTree

from glioseg.evaluate.components import bounding_box

#: Bit weight of each voxel of a 2x2x2 neighbourhood in the surfel code.
CODE_KERNEL = np.array([[[128, 64], [32, 16]], [[8, 4], [2, 1]]])
#: Radius (voxels) of the neighbourhood searched offset by offset before a k-d tree takes over.
SEARCH_RADIUS = 3
#: Cost of one k-d tree query for a far point, in voxels of a distance transform (measured,
#: order of magnitude): above ``grid size / this`` far points, the transform is used instead.
_KD_QUERY_COST = 20
#: Shells always searched before the distance-transform shortcut is considered.
_SHELLS_BEFORE_GIVING_UP = 4
#: The surfel normals table shipped with glioseg (written by ``scripts/make_surfel_table.py``).
NORMALS_FILE = Path(__file__).resolve().parents[1] / "assets" / "surfel_normals.npy"


@dataclass(frozen=True)
class SurfaceDistances:
    """Distances from every surfel of one mask to the other surface, sorted, with the surfel areas.

    Attributes
    ----------
    gt_to_pred, pred_to_gt : ndarray of float64
        Distances in mm, sorted by (distance, area).
    gt_areas, pred_areas : ndarray of float64
        Areas in mm^2 of the same surfels, in the same order.
    """

    gt_to_pred: np.ndarray
    gt_areas: np.ndarray
    pred_to_gt: np.ndarray
    pred_areas: np.ndarray


# ----------------------------------------------------------------------------- surfel areas


@lru_cache(maxsize=1)
def _shipped_normals() -> np.ndarray:
    """The table in :data:`NORMALS_FILE`, read once per process (read-only array)."""
    table = np.load(NORMALS_FILE, allow_pickle=False)
    if table.shape != (256, 4, 3) or table.dtype != np.float64:
        raise ValueError(
            f"{NORMALS_FILE}: expected a (256, 4, 3) float64 normals table, got {table.dtype} {table.shape}"
        )
    table.flags.writeable = False
    return table


#: A table set by :func:`install_surfel_normals` in this process (none by default).
_installed_normals: list[np.ndarray] = []


def surfel_normals() -> np.ndarray:
    """Marching-cubes surfel normals of each of the 256 neighbourhood codes, shape (256, 4, 3).

    A vector's length is the area of one triangle at unit spacing; unused rows are zero.
    The table is DeepMind's, as carried by ``monai.metrics.utils`` (MONAI's copy differs
    from the one bundled with the BraTS scripts only by the sign of a component in codes
    251 and 253, which leaves every area unchanged).  glioseg ships it as package data
    (:data:`NORMALS_FILE`, generated from MONAI's copy by ``scripts/make_surfel_table.py``),
    so nothing needs to be built, cached or passed to worker processes: every process
    reads the file on first use.  All entries are multiples of 1/8, exact in any float type.
    """
    if _installed_normals:
        return _installed_normals[0]
    return _shipped_normals()


def install_surfel_normals(table: np.ndarray) -> None:
    """Use ``table`` instead of the shipped table in this process.

    Not needed to use glioseg in worker processes (each reads the shipped table itself);
    kept for callers that still hand :func:`surfel_normals` of a parent process to a pool
    initialiser.
    """
    table = np.asarray(table, dtype=np.float64)
    if table.shape != (256, 4, 3):
        raise ValueError(f"expected a (256, 4, 3) normals table, got {table.shape}")
    _installed_normals[:] = [table]
    surfel_area_table.cache_clear()


@lru_cache(maxsize=32)
def surfel_area_table(spacing: tuple[float, float, float]) -> np.ndarray:
    """Area (mm^2) of the surface elements of each neighbourhood code, shape (256,).

    For each triangle normal ``n`` of a code the area is
    ``|(n0 * s1 * s2, n1 * s0 * s2, n2 * s0 * s1)|``; a code's area is the sum over its
    triangles, accumulated in float64 in the reference's order of operations.
    """
    normals = surfel_normals()
    s0, s1, s2 = (float(s) for s in spacing)
    table = np.zeros(256)
    for code in range(256):
        total = 0.0
        for n in normals[code]:
            if n.any():
                total += np.linalg.norm(np.array([n[0] * s1 * s2, n[1] * s0 * s2, n[2] * s0 * s1]))
        table[code] = total
    return table


# ----------------------------------------------------------------------------- surfels


def neighbourhood_codes(values: np.ndarray, box: tuple[slice, ...], margin: int = 0) -> np.ndarray:
    """8-bit neighbourhood code of every grid corner of ``values[box]``.

    Corner ``(i, j, k)`` lies between voxels ``i - 1`` and ``i`` of the box on the first
    axis (and likewise on the others); voxels outside the box count as 0.  The weighted
    sum is formed in uint8 arithmetic, i.e. modulo 256 (values are taken modulo 256 too).

    Returns
    -------
    ndarray of uint8, shape = box shape + 1 + 2 * margin
        The corner codes, surrounded by ``margin`` zero codes on every side.
    """
    inner = values[box].astype(np.uint8, copy=False)
    padded = np.zeros(tuple(n + 2 for n in inner.shape), np.uint8)
    padded[1:-1, 1:-1, 1:-1] = inner
    out = np.zeros(tuple(n + 1 + 2 * margin for n in inner.shape), np.uint8)
    n0, n1, n2 = (n + 1 for n in inner.shape)
    codes = out[margin : margin + n0, margin : margin + n1, margin : margin + n2]
    for a in (0, 1):
        for b in (0, 1):
            for c in (0, 1):
                weight = np.uint8(CODE_KERNEL[a, b, c])
                window = padded[a : a + n0, b : b + n1, c : c + n2]
                codes += window if weight == 1 else window * weight
    return out


# ----------------------------------------------------------------------------- distances


def _offset_lengths(offsets: np.ndarray, sampling: np.ndarray) -> np.ndarray:
    """Length (mm) of integer offsets, with the floating-point steps of scipy's ``distance_transform_edt``."""
    scaled = offsets.astype(np.float64) * sampling
    scaled *= scaled
    return np.sqrt(scaled[:, 0] + scaled[:, 1] + scaled[:, 2])


@lru_cache(maxsize=32)
def _ball_shells(spacing: tuple[float, float, float], radius: int) -> list[tuple[float, np.ndarray]]:
    """Integer offsets no longer than ``radius * min(spacing)`` mm, grouped by length, shortest first.

    Every offset of that length or shorter has coordinates within ``radius`` voxels, so the
    shells are complete up to that length.

    Returns
    -------
    list of (length in mm, offsets of shape (k, 3))
    """
    r = np.arange(-radius, radius + 1)
    offsets = np.stack(np.meshgrid(r, r, r, indexing="ij"), axis=-1).reshape(-1, 3)
    lengths = _offset_lengths(offsets, np.asarray(spacing, dtype=np.float64))
    inside = lengths <= radius * min(spacing)
    offsets, lengths = offsets[inside], lengths[inside]
    return [(float(length), offsets[lengths == length]) for length in np.unique(lengths)]


def nearest_distances(
    queries: np.ndarray,
    targets: np.ndarray,
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    target_grid: np.ndarray | None = None,
) -> np.ndarray:
    """Distance (mm) from each query grid point to the nearest target grid point.

    Offsets up to :data:`SEARCH_RADIUS` voxels are tried shell by shell in order of
    increasing length (most surfels meet the other surface within a voxel or two); the
    points left are answered by a k-d tree over the targets, or, when they are many, by
    ``scipy.ndimage.distance_transform_edt`` over the grid (the reference's own method).  The cost grows with the number of points,
    not with the size of the grid.

    Parameters
    ----------
    queries, targets : ndarray of int
        Flat (C-order) indices into a grid of ``shape`` whose outer :data:`SEARCH_RADIUS`
        layers hold no point.
    shape : tuple of 3 ints
    spacing : tuple of 3 floats
        Grid spacing in mm.
    target_grid : ndarray of bool, flat, optional
        The targets as a flat mask of the grid (built when not given).

    Returns
    -------
    ndarray of float64, shape (N,)
        ``inf`` everywhere when there is no target.  Each value is computed from the
        integer offset as ``scipy.ndimage.distance_transform_edt`` computes it.
    """
    result = np.full(queries.shape[0], np.inf)
    if queries.shape[0] == 0 or targets.shape[0] == 0:
        return result
    if target_grid is None:
        target_grid = np.zeros(int(np.prod(shape)), dtype=bool)
        target_grid[targets] = True
    pending, slots = _search_near(queries, target_grid, shape, spacing, result)
    _fill_far(pending, slots, targets, target_grid, shape, spacing, result)
    return result


def _search_near(
    queries: np.ndarray,
    target_grid: np.ndarray,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    result: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Shell search; fills ``result`` for the points found and returns the others (indices, slots).

    Every point left has a larger distance than every point found (shells go outwards).
    """
    spacing = tuple(float(s) for s in spacing)
    strides = np.array([shape[1] * shape[2], shape[2], 1])
    pending = queries
    slots = np.arange(queries.shape[0])
    for shell, (length, offsets) in enumerate(_ball_shells(spacing, SEARCH_RADIUS)):
        if shell >= _SHELLS_BEFORE_GIVING_UP and pending.size * _KD_QUERY_COST > target_grid.size:
            break  # many points still far: one distance transform for them instead
        steps = (offsets @ strides).tolist()
        hit = target_grid[pending + steps[0]]
        for step in steps[1:]:
            hit |= target_grid[pending + step]
        if hit.any():
            result[slots[hit]] = length
            miss = ~hit
            pending, slots = pending[miss], slots[miss]
            if pending.size == 0:
                break
    return pending, slots


def _fill_far(
    pending: np.ndarray,
    slots: np.ndarray,
    targets: np.ndarray,
    target_grid: np.ndarray,
    shape: tuple[int, ...],
    spacing: tuple[float, ...],
    result: np.ndarray,
) -> None:
    """Exact distances of the points the shell search left: k-d tree, or one distance transform if many."""
    if pending.size == 0:
        return
    sampling = np.asarray(spacing, dtype=np.float64)
    if pending.size * _KD_QUERY_COST > target_grid.size:
        grid = ~target_grid.reshape(shape)
        result[slots] = ndimage.distance_transform_edt(grid, sampling=sampling).ravel()[pending]
        return
    points = np.stack(np.unravel_index(targets, shape), axis=1)
    where = np.stack(np.unravel_index(pending, shape), axis=1)
    tree = cKDTree(points * sampling, balanced_tree=False, compact_nodes=False)
    _, nearest = tree.query(where * sampling, k=1)
    result[slots] = _offset_lengths(points[nearest] - where, sampling)


def _sorted(distances: np.ndarray, areas: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    order = np.lexsort((areas, distances))
    return distances[order], areas[order]


def surface_distances(
    gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float]
) -> SurfaceDistances:
    """Distances between the surfaces of ``gt`` and ``pred``, both ways, with surfel areas.

    Parameters
    ----------
    gt, pred : ndarray, shape (X, Y, Z)
        Masks (bool or 0/1).  Integer label maps are accepted and treated as the reference
        treats them (values modulo 256 in the 8-bit surfel code); only the BraTS 2024 legacy
        HD95 relies on that.
    spacing : tuple of 3 floats
        Voxel size in mm along each array axis.

    Returns
    -------
    SurfaceDistances
        Empty arrays for an empty mask; distances to an empty mask are ``inf``.
    """
    gt = np.asarray(gt)
    pred = np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"expected two 3-D arrays of one shape, got {gt.shape} and {pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    found = _surfels(gt, pred, spacing)
    if found is None:
        empty = np.array([])
        return SurfaceDistances(empty, empty, empty, empty)
    shape, (at_gt, border_gt, areas_gt), (at_pred, border_pred, areas_pred) = found
    gt_to_pred, gt_areas = _sorted(nearest_distances(at_gt, at_pred, shape, spacing, border_pred), areas_gt)
    pred_to_gt, pred_areas = _sorted(nearest_distances(at_pred, at_gt, shape, spacing, border_gt), areas_pred)
    return SurfaceDistances(gt_to_pred, gt_areas, pred_to_gt, pred_areas)


def _percentile_distance(distances: np.ndarray, areas: np.ndarray, percent: float) -> float:
    if distances.size == 0:
        return float("inf")
    cumulative = np.cumsum(areas) / np.sum(areas)
    index = int(np.searchsorted(cumulative, percent / 100.0))
    return float(distances[min(index, distances.size - 1)])


def robust_hausdorff(distances: SurfaceDistances, percent: float = 95.0) -> float:
    """Area-weighted ``percent``-th percentile Hausdorff distance (mm); ``inf`` when a mask is empty."""
    return max(
        _percentile_distance(distances.gt_to_pred, distances.gt_areas, percent),
        _percentile_distance(distances.pred_to_gt, distances.pred_areas, percent),
    )


def _surfels(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float]):
    """Surfel grid shape, flat positions, border masks and areas of both masks (None when both are empty)."""
    box = bounding_box((gt != 0) | (pred != 0))
    if box is None:
        return None
    table = surfel_area_table(spacing)
    code_gt = neighbourhood_codes(gt, box, SEARCH_RADIUS).ravel()
    code_pred = neighbourhood_codes(pred, box, SEARCH_RADIUS).ravel()
    shape = tuple(s.stop - s.start + 1 + 2 * SEARCH_RADIUS for s in box)
    border_gt = (code_gt != 0) & (code_gt != 255)
    border_pred = (code_pred != 0) & (code_pred != 255)
    at_gt, at_pred = np.flatnonzero(border_gt), np.flatnonzero(border_pred)
    return shape, (at_gt, border_gt, table[code_gt[at_gt]]), (at_pred, border_pred, table[code_pred[at_pred]])


def _prefix_percentile(
    distances: np.ndarray, areas: np.ndarray, all_areas: np.ndarray, percent: float
) -> float | None:
    """The percentile distance when it is settled by the nearest surfels alone, else None.

    ``distances``/``areas`` are the surfels nearer than all the others.  In the reference's
    order (sorted by distance, then area) they come first, so their cumulative areas are the
    reference's first cumulative sums, bit for bit.  Only the divisor (the sum of all areas
    in that order) is unknown without the far distances; it lies within ``4 n u`` of the
    exact sum (u = 2**-53, any summation order), so if both ends of that interval put the
    crossing at the same surfel, that surfel's distance is the reference's answer.
    """
    if distances.size == 0:
        return None
    dist, area = _sorted(distances, areas)
    cumulative = np.cumsum(area)
    exact = math.fsum(all_areas.tolist())
    slack = 4.0 * all_areas.size * 2.0**-53 * exact
    target = percent / 100.0
    earliest = int(np.searchsorted(cumulative / (exact - slack), target))
    latest = int(np.searchsorted(cumulative / (exact + slack), target))
    if earliest == latest < dist.size:
        return float(dist[latest])
    return None


def _direction_percentile(
    queries: tuple[np.ndarray, np.ndarray, np.ndarray],
    targets: tuple[np.ndarray, np.ndarray, np.ndarray],
    shape: tuple[int, ...],
    spacing: tuple[float, float, float],
    percent: float,
) -> float:
    """Area-weighted percentile of the distances from one surface to the other (inf if either is empty)."""
    at_q, _, areas = queries
    at_t, grid_t, _ = targets
    if at_q.size == 0 or at_t.size == 0:
        return float("inf")
    result = np.full(at_q.size, np.inf)
    pending, slots = _search_near(at_q, grid_t, shape, spacing, result)
    if pending.size:
        near = np.isfinite(result)
        settled = _prefix_percentile(result[near], areas[near], areas, percent)
        if settled is not None:
            return settled  # the far surfels lie beyond the percentile: no need to measure them
        _fill_far(pending, slots, at_t, grid_t, shape, spacing, result)
    return _percentile_distance(*_sorted(result, areas), percent)


def hd95(gt: np.ndarray, pred: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> float:
    """Robust Hausdorff distance at 95 % between two masks (mm); ``inf`` when either is empty.

    Same value as ``robust_hausdorff(surface_distances(gt, pred, spacing), 95)``, but the
    distances of surfels beyond the percentile are only measured when they can matter.

    Examples
    --------
    >>> a = np.zeros((8, 8, 8), bool); a[2:5, 2:5, 2:5] = True
    >>> b = np.zeros((8, 8, 8), bool); b[3:6, 2:5, 2:5] = True
    >>> hd95(a, b)
    1.0
    """
    gt, pred = np.asarray(gt), np.asarray(pred)
    if gt.shape != pred.shape or gt.ndim != 3:
        raise ValueError(f"expected two 3-D arrays of one shape, got {gt.shape} and {pred.shape}")
    spacing = tuple(float(s) for s in spacing)
    found = _surfels(gt, pred, spacing)
    if found is None:
        return float("inf")
    shape, surf_gt, surf_pred = found
    return max(
        _direction_percentile(surf_gt, surf_pred, shape, spacing, 95.0),
        _direction_percentile(surf_pred, surf_gt, shape, spacing, 95.0),
    )
