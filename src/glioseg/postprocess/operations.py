"""Post-processing operations on canonical label maps, each linear in the volume.

Every function takes a canonical ``uint8`` label map ``(X, Y, Z)`` (0 background, 1 NETC,
2 SNFH, 3 ET; see :mod:`glioseg.data.labels`), never modifies it, and returns a new one.

Targets
-------
An operation acts on the 26-connected components of a *target*: one of the nested regions
``WT`` = {1, 2, 3}, ``TC`` = {1, 3}, ``ET`` = {3}, or one of the labels ``NETC`` = {1} and
``SNFH`` = {2}.  Voxels of a removed component get the target's *fill* label, by default
(:data:`DEFAULT_FILL`):

========  =========  ==========================================================
target    fill       why
========  =========  ==========================================================
``WT``    0          a removed whole-tumour component is not tumour at all
``TC``    2 (SNFH)   a removed core component stays whole tumour, as edema
``ET``    1 (NETC)   a removed enhancing component stays tumour core
``NETC``  2 (SNFH)   as for TC
``SNFH``  0          edema without core: background
========  =========  ==========================================================

Relabelling removed ET to NETC follows the BraTS-Africa 2024 winners, who turned small or
implausible enhancement into necrosis/non-enhancing core rather than erasing it.  A fill of
the removed component's *surroundings* was considered and not used: it depends on the
neighbourhood of each voxel and makes the operations order-dependent inside a component.

Cost
----
Each operation labels the target's components once with ``cc3d`` (26-connectivity), counts
their sizes with one ``np.bincount`` and edits the map through a lookup table indexed by
component number: ``O(volume)`` whatever the number of components (no per-component pass
over the volume).  The work happens in the bounding box of the target.
"""

from __future__ import annotations

from dataclasses import dataclass

import cc3d
import numpy as np

from glioseg.data.labels import ET, NETC, REGION_LABELS, SNFH, region_mask
from glioseg.evaluate.components import CONNECTIVITY, bounding_box

#: Labels that make up each target (regions and single labels).
TARGET_LABELS: dict[str, tuple[int, ...]] = {**REGION_LABELS, "NETC": (NETC,), "SNFH": (SNFH,)}
#: Label given to the voxels of a removed component of each target.
DEFAULT_FILL: dict[str, int] = {"WT": 0, "TC": SNFH, "ET": NETC, "NETC": SNFH, "SNFH": 0}


@dataclass(frozen=True)
class Components:
    """26-connected components of a target inside its bounding box.

    Attributes
    ----------
    box : tuple of 3 slices or None
        Bounding box of the target in the full map (``None`` when the target is empty).
    ids : ndarray of unsigned int, shape of the box
        Component number of each voxel of the box (0 outside the target); numbered
        1..n in C raster order of each component's first voxel.
    sizes : ndarray of int64, shape (n + 1,)
        Voxel count of each component (``sizes[0]`` counts the box's background).
    """

    box: tuple[slice, slice, slice] | None
    ids: np.ndarray
    sizes: np.ndarray

    @property
    def n(self) -> int:
        """Number of components."""
        return int(self.sizes.size - 1)


def _check_labels(labels: np.ndarray) -> np.ndarray:
    arr = np.asarray(labels)
    if arr.ndim != 3:
        raise ValueError(f"expected a 3-D label map, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise ValueError(f"labels have dtype {arr.dtype}, expected integers (canonical 0..3)")
    if arr.size and int(arr.max()) > ET:
        raise ValueError("labels outside 0..3; convert with glioseg.data.labels.to_canonical first")
    return arr


def _check_target(target: str) -> tuple[int, ...]:
    try:
        return TARGET_LABELS[target]
    except KeyError:
        raise ValueError(f"unknown target {target!r}; expected one of {', '.join(TARGET_LABELS)}") from None


def _check_fill(target: str, fill: int | None) -> int:
    _check_target(target)
    value = DEFAULT_FILL[target] if fill is None else int(fill)
    if value < 0 or value > ET:
        raise ValueError(f"fill label must be in 0..3, got {value}")
    if value in TARGET_LABELS[target]:
        raise ValueError(f"fill label {value} is part of target {target}; removed voxels would stay in it")
    return value


def target_mask(labels: np.ndarray, target: str) -> np.ndarray:
    """Boolean mask of a target (``WT``, ``TC``, ``ET``, ``NETC`` or ``SNFH``) of a canonical label map."""
    members = _check_target(target)
    lab = np.asarray(labels)
    return region_mask(lab, target) if target in REGION_LABELS else lab == members[0]


def components(labels: np.ndarray, target: str) -> Components:
    """Label the 26-connected components of ``target`` and count their voxels (one pass each).

    Examples
    --------
    >>> lab = np.zeros((6, 6, 6), np.uint8); lab[0, 0, 0] = 3; lab[3:5, 3:5, 3:5] = 1
    >>> components(lab, "TC").sizes[1:].tolist()
    [1, 8]
    """
    mask = target_mask(_check_labels(labels), target)
    box = bounding_box(mask)
    if box is None:
        return Components(None, np.zeros((0, 0, 0), np.uint16), np.zeros(1, np.int64))
    sub = np.ascontiguousarray(mask[box])
    ids, n = cc3d.connected_components(sub, connectivity=CONNECTIVITY, return_N=True)
    sizes = np.bincount(ids.ravel(), minlength=int(n) + 1).astype(np.int64)
    return Components(box, ids, sizes)


def _replace_components(labels: np.ndarray, comps: Components, remove: np.ndarray, fill: int) -> np.ndarray:
    """Copy of ``labels`` with the voxels of components flagged in ``remove`` (length n + 1) set to ``fill``."""
    out = np.array(labels, dtype=np.uint8, copy=True)
    if comps.box is None:
        return out
    remove = np.asarray(remove, dtype=bool).copy()
    remove[0] = False
    if not remove.any():
        return out
    sub = out[comps.box]
    sub[remove[comps.ids]] = fill
    return out


def remove_small_components(
    labels: np.ndarray, target: str, min_size: int, fill: int | None = None
) -> np.ndarray:
    """Remove the 26-connected components of ``target`` that have fewer than ``min_size`` voxels.

    Parameters
    ----------
    labels : ndarray of uint8, shape (X, Y, Z)
        Canonical label map.
    target : ``"WT"``, ``"TC"``, ``"ET"``, ``"NETC"`` or ``"SNFH"``
    min_size : int
        Components of at least this many voxels stay; ``min_size <= 1`` changes nothing.
    fill : int, optional
        Label of the removed voxels (default :data:`DEFAULT_FILL` of the target: WT -> 0,
        TC -> SNFH, ET -> NETC).

    Returns
    -------
    ndarray of uint8, same shape

    Examples
    --------
    >>> lab = np.zeros((8, 8, 8), np.uint8); lab[1:4, 1:4, 1:4] = 2; lab[2, 2, 2] = 3; lab[6, 6, 6] = 2
    >>> out = remove_small_components(lab, "WT", 2)
    >>> int(out[6, 6, 6]), int(out[2, 2, 2])
    (0, 3)
    >>> int(remove_small_components(lab, "ET", 2)[2, 2, 2])  # a lone ET voxel becomes NETC
    1
    """
    value = _check_fill(target, fill)
    comps = components(labels, target)
    return _replace_components(labels, comps, comps.sizes < int(min_size), value)


def largest_components(sizes: np.ndarray, k: int) -> np.ndarray:
    """Flags (length n + 1) of the ``k`` largest components given ``sizes`` (``sizes[0]`` ignored).

    Ties go to the lower component number (the earlier component in raster order), so the
    choice is deterministic; ``k <= 0`` keeps every component.
    """
    sizes = np.asarray(sizes)
    keep = np.ones(sizes.size, dtype=bool)
    if k <= 0 or sizes.size - 1 <= k:
        return keep
    order = np.lexsort((np.arange(1, sizes.size), -sizes[1:])) + 1
    keep[:] = False
    keep[0] = True
    keep[order[:k]] = True
    return keep


def keep_largest_components(labels: np.ndarray, target: str, k: int, fill: int | None = None) -> np.ndarray:
    """Keep only the ``k`` largest 26-connected components of ``target``; the others get ``fill``.

    Ties in size go to the component met first in C raster order.  ``k <= 0`` changes nothing.

    Examples
    --------
    >>> lab = np.zeros((9, 9, 9), np.uint8); lab[0:2, 0:2, 0:2] = 2; lab[5:8, 5:8, 5:8] = 1
    >>> out = keep_largest_components(lab, "WT", 1)
    >>> int(out[0, 0, 0]), int(out[6, 6, 6])
    (0, 1)
    """
    value = _check_fill(target, fill)
    comps = components(labels, target)
    return _replace_components(labels, comps, ~largest_components(comps.sizes, int(k)), value)


def redefine_label(
    labels: np.ndarray, label: int = ET, into: int = NETC, min_fraction: float = 0.0, of: str = "WT"
) -> np.ndarray:
    """Relabel every voxel of ``label`` to ``into`` when ``voxels(label) / voxels(of) < min_fraction``.

    The BraTS-Africa winners' rule for cases with almost no enhancement: an ET volume that is
    a tiny fraction of the whole tumour is more likely noise than enhancing tumour, so it
    becomes NETC (it stays tumour core).  Nothing changes when ``of`` is empty or
    ``min_fraction <= 0``.

    Parameters
    ----------
    labels : ndarray of uint8, shape (X, Y, Z)
    label, into : int
        Canonical labels (default ET -> NETC).
    min_fraction : float
        The ratio threshold ``r``; the comparison is strict (``ratio < r`` relabels).
    of : str
        Target whose voxel count is the denominator (default ``WT``).

    Examples
    --------
    >>> lab = np.zeros((10, 10, 10), np.uint8); lab[:, :, :5] = 2; lab[0, 0, 0] = 3
    >>> int(redefine_label(lab, min_fraction=0.01)[0, 0, 0]), int(redefine_label(lab, min_fraction=0.001)[0, 0, 0])
    (1, 3)
    """
    lab = _check_labels(labels)
    for name, value in (("label", label), ("into", into)):
        if not 0 <= int(value) <= ET:
            raise ValueError(f"{name} must be a canonical label 0..3, got {value}")
    out = np.array(lab, dtype=np.uint8, copy=True)
    if min_fraction <= 0 or int(label) == int(into):
        return out
    source = out == int(label)
    n_source = int(np.count_nonzero(source))
    n_reference = int(np.count_nonzero(target_mask(out, of)))
    if n_source and n_reference and n_source / n_reference < float(min_fraction):
        out[source] = int(into)
    return out
