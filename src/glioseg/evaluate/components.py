"""Lesion building blocks of the BraTS lesion-wise metrics: components, dilation merging, touching.

Every function works on a 3-D array (usually a crop of the case around the tumour) and
is exact on such a crop as long as the crop keeps a margin of :data:`DILATION_ITERATIONS`
voxels around every foreground voxel (or reaches the volume border): a voxel that the
dilation can reach lies at most that many steps from the mask, so neither the dilated
mask nor its connected components change when the empty margin beyond is cut away.

Numbering conventions follow the official BraTS scripts, because the 2024 definition
depends on them (ET lesions are grouped through the *lowest-numbered* NETC lesion they
touch, and the legacy HD95 / sensitivity of that definition are computed on lesion-label
maps):

* connected components of a mask are numbered by ``cc3d`` in the memory order of the
  array it is given; the official code labels the loaded (Fortran-ordered) volumes, so
  :func:`label_components` labels a Fortran-ordered copy;
* components of a *dilated* mask are numbered in C (row-major) order, because scipy's
  ``binary_dilation`` returns a C-ordered array and the official code labels that.

Both orders are invariant under cropping (a crop keeps the relative raster order of its
voxels), which is what makes the crop-based evaluation exact.
"""

from __future__ import annotations

import cc3d
import numpy as np
from scipy import ndimage

from glioseg.data.arrays import Box, bounding_box

#: Connectivity of connected components (26-neighbourhood in 3-D).
CONNECTIVITY = 26
#: Number of binary dilations used to merge nearby lesions.
DILATION_ITERATIONS = 3
#: scipy's 3-D structuring element of connectivity 2: the centre and its 18 face/edge neighbours.
DILATION_STRUCTURE = ndimage.generate_binary_structure(3, 2)
#: Offsets of the 18-neighbourhood (without the centre), shape (18, 3).
NEIGHBOURS_18 = np.argwhere(DILATION_STRUCTURE) - 1
NEIGHBOURS_18 = NEIGHBOURS_18[np.any(NEIGHBOURS_18 != 0, axis=1)]

#: Fixed cost of one small dilation call, in voxels of a whole-array dilation (order of magnitude).
_CALL_COST = 5_000
#: Below this many voxels scipy's dilation (less fixed cost) beats the shifted-OR one.
_SMALL_ARRAY = 20_000


def pad_box(box: Box, margin: int | tuple[int, int, int], shape: tuple[int, ...]) -> Box:
    """Grow ``box`` by ``margin`` voxels on each side, clipped to an array of ``shape``."""
    margins = (margin,) * 3 if isinstance(margin, int) else margin
    return tuple(
        slice(max(s.start - m, 0), min(s.stop + m, n)) for s, m, n in zip(box, margins, shape, strict=True)
    )


def union_box(*boxes: Box) -> Box:
    """Smallest box holding all ``boxes``."""
    return tuple(
        slice(min(b[axis].start for b in boxes), max(b[axis].stop for b in boxes)) for axis in range(3)
    )


def shift_box(box: Box, origin: tuple[int, int, int]) -> Box:
    """Express ``box`` (absolute) relative to a crop that starts at ``origin``."""
    return tuple(slice(s.start - o, s.stop - o) for s, o in zip(box, origin, strict=True))


def label_components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """26-connected components of ``mask``, numbered 1..n in Fortran raster order.

    Returns
    -------
    labels : ndarray of unsigned int (uint16 or wider), same shape, Fortran-ordered
    n : int
    """
    labels, n = cc3d.connected_components(
        np.asfortranarray(mask, dtype=bool), connectivity=CONNECTIVITY, return_N=True
    )
    return labels, int(n)


def _grow_along(mask: np.ndarray, axis: int) -> np.ndarray:
    """``mask`` dilated by one voxel both ways along ``axis`` (nothing enters from outside)."""
    out = mask.copy()
    low = [slice(None)] * 3
    high = [slice(None)] * 3
    low[axis], high[axis] = slice(0, -1), slice(1, None)
    out[tuple(low)] |= mask[tuple(high)]
    out[tuple(high)] |= mask[tuple(low)]
    return out


def dilate(mask: np.ndarray, iterations: int = DILATION_ITERATIONS) -> np.ndarray:
    """Binary dilation with the 18-neighbourhood element (:data:`DILATION_STRUCTURE`), ``iterations`` times.

    Same result as ``scipy.ndimage.binary_dilation(mask, DILATION_STRUCTURE, iterations)``
    (outside the array counts as background), computed about twice as fast: the
    18-neighbourhood is the union of the three 3x3 plates through the centre, and a plate
    is the product of two 3-voxel lines, so each iteration is a handful of shifted ORs.

    Returns
    -------
    ndarray of bool, C-ordered, same shape
    """
    if np.size(mask) < _SMALL_ARRAY:  # scipy's call is cheaper on small boxes
        return ndimage.binary_dilation(mask, structure=DILATION_STRUCTURE, iterations=iterations)
    out = np.ascontiguousarray(mask, dtype=bool)
    for _ in range(iterations):
        along0, along1 = _grow_along(out, 0), _grow_along(out, 1)
        out = _grow_along(along0, 1)
        out |= _grow_along(along0, 2)
        out |= _grow_along(along1, 2)
    return out


def merge_by_dilation(
    mask: np.ndarray, iterations: int = DILATION_ITERATIONS
) -> tuple[np.ndarray, np.ndarray, int]:
    """Merge the components of ``mask`` that fall into one component of its dilation.

    Each foreground voxel gets the number of the 26-connected component of the dilated
    mask that contains it; components of the dilated mask are numbered 1..n in C raster
    order (as the official scripts number them).  Every component of the dilated mask
    holds foreground voxels, so the result uses every number 1..n.

    The dilated components are returned too: component ``k`` of the dilated mask *is* the
    dilation of merged lesion ``k`` (dilation distributes over the voxels of the mask, and
    the dilation of each voxel lies in the one component that contains the voxel), so it
    is the region in which predicted lesions match lesion ``k``.

    Parameters
    ----------
    mask : ndarray of bool, shape (X, Y, Z)
        A crop must keep ``iterations`` empty voxels around the foreground (or reach the
        volume border) for the result to equal that on the full volume.
    iterations : int

    Returns
    -------
    lesions : ndarray of unsigned int, same shape
        0 outside ``mask``.
    dilated : ndarray of unsigned int, same shape
        Numbered components of the dilated mask (0 outside it).
    n : int
        Number of merged lesions.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        zeros = np.zeros(mask.shape, np.uint16)
        return zeros, zeros.copy(), 0
    dilated_mask = np.ascontiguousarray(_dilate_by_parts(mask, iterations))
    dilated, n = cc3d.connected_components(dilated_mask, connectivity=CONNECTIVITY, return_N=True)
    lesions = np.where(mask, dilated, dilated.dtype.type(0))
    return lesions, dilated, int(n)


def _dilate_by_parts(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Dilation of ``mask``, computed per component box when that touches less of the array.

    A mask made of a few small scattered components (typical of predictions) would cost
    a full-array dilation per iteration; dilating each component inside its own box grown
    by ``iterations`` is exact (dilation distributes over the union of the components, and
    a voxel reached in ``iterations`` steps lies in the grown box) and proportional to
    lesion size instead.
    """
    out = np.zeros(mask.shape, dtype=bool)
    whole = pad_box(bounding_box(mask), iterations, mask.shape)
    if _volume(whole) * 4 < mask.size:  # compact: one dilation in the mask's own box
        out[whole] = dilate(mask[whole], iterations)
        return out
    labels = cc3d.connected_components(mask, connectivity=CONNECTIVITY)
    grown = [pad_box(b, iterations, mask.shape) for b in ndimage.find_objects(labels)]
    if sum(_volume(b) + _CALL_COST for b in grown) >= _volume(whole):
        out[whole] = dilate(mask[whole], iterations)
        return out
    for box in grown:
        out[box] |= dilate(mask[box], iterations)
    return out


def _volume(box: Box) -> int:
    return int(np.prod([s.stop - s.start for s in box]))


def remove_small_lesions(lesions: np.ndarray, max_voxels: int) -> np.ndarray:
    """Set to 0 every lesion (label) with at most ``max_voxels`` voxels; numbers are kept (gaps allowed)."""
    counts = np.bincount(lesions.ravel(order="K"), minlength=1)
    small = np.flatnonzero(counts <= max_voxels)
    small = small[small > 0]
    if small.size == 0:
        return lesions
    out = lesions.copy()
    out[np.isin(out, small)] = 0
    return out


def touching_pairs(first: np.ndarray, second: np.ndarray) -> set[tuple[int, int]]:
    """Pairs ``(a, b)`` of labels of ``first`` and ``second`` that touch in the 18-neighbourhood.

    Two labelled regions touch when a voxel of one is the same voxel as, or a face/edge
    neighbour (18-neighbourhood) of, a voxel of the other: the relation the official
    code tests by dilating each region once with :data:`DILATION_STRUCTURE`.

    Parameters
    ----------
    first, second : ndarray of int, same shape (X, Y, Z); 0 is background.
    """
    if not np.any(first) or not np.any(second):
        return set()
    a = np.pad(np.asarray(first, dtype=np.int64), 1)
    b = np.pad(np.asarray(second, dtype=np.int64), 1).ravel()
    at = np.flatnonzero(b)
    strides = np.array([a.shape[1] * a.shape[2], a.shape[2], 1])
    steps = np.vstack([np.zeros((1, 3), dtype=int), NEIGHBOURS_18]) @ strides
    found = a.ravel()[at[:, None] + steps[None, :]]
    hit = found > 0
    span = int(b.max()) + 1
    codes = np.unique(found[hit] * span + np.broadcast_to(b[at][:, None], found.shape)[hit])
    return {(int(c // span), int(c % span)) for c in codes}


def group_by_touching(et_lesions: np.ndarray, netc_lesions: np.ndarray) -> np.ndarray:
    """Group ET lesions through the NETC lesions they touch (BraTS 2024 SSA rule), then number 1..k.

    The rule, as in the official ``metrics_SSA.py``:

    1. find the touching pairs (ET lesion, NETC lesion), see :func:`touching_pairs`;
    2. only when there are at least two pairs: every touching ET lesion is renamed after
       the *lowest-numbered* NETC lesion it touches, so ET lesions that share that NETC
       lesion become one lesion (an ET lesion touching NETC lesions 1 and 2 and another
       touching only 2 stay apart); new names follow the existing ones, in the order in
       which the NETC numbers first appear in the sorted pairs;
    3. the names in use are renumbered 1..k in increasing order.

    Parameters
    ----------
    et_lesions, netc_lesions : ndarray of int, shape (X, Y, Z)
        Lesion maps (0 = background), e.g. from :func:`merge_by_dilation`.

    Returns
    -------
    lookup : ndarray of uint32, shape (max ET label + 1,)
        New number of each old ET lesion number (0 stays 0; numbers not in use map to 0):
        ``lookup[et_lesions]`` is the grouped map.
    """
    et_lesions = np.asarray(et_lesions)
    top = int(et_lesions.max(initial=0))
    names = np.arange(top + 1, dtype=np.int64)
    pairs = sorted(touching_pairs(et_lesions, netc_lesions))
    if len(pairs) > 1:
        next_name = top + 1
        group_name: dict[int, int] = {}
        for _, netc in pairs:
            if netc not in group_name:
                group_name[netc] = next_name
                next_name += 1
        renamed: set[int] = set()
        for et, netc in pairs:
            if et not in renamed:
                names[et] = group_name[netc]
                renamed.add(et)
    in_use = np.bincount(et_lesions.ravel(order="K"), minlength=top + 1) > 0
    in_use[0] = False
    used_names = np.unique(names[in_use])
    compact = np.zeros(int(names.max(initial=0)) + 1, dtype=np.uint32)
    compact[used_names] = np.arange(1, used_names.size + 1, dtype=np.uint32)
    lookup = np.where(in_use, compact[names], 0).astype(np.uint32)
    return lookup
