"""Small array helpers shared by every stage."""

from __future__ import annotations

import numpy as np

Box = tuple[slice, ...]


def bounding_box(mask: np.ndarray, margin: int = 0) -> Box | None:
    """Smallest box (tuple of slices) holding every non-zero voxel of ``mask``, grown by ``margin``
    voxels on each side and clipped to the array; ``None`` when the mask is empty.

    Examples
    --------
    >>> m = np.zeros((5, 6, 7), bool); m[1:3, 2, 4:6] = True
    >>> bounding_box(m)
    (slice(1, 3, None), slice(2, 3, None), slice(4, 6, None))
    >>> bounding_box(m, margin=2)
    (slice(0, 5, None), slice(0, 5, None), slice(2, 7, None))
    """
    mask = np.asarray(mask) != 0
    spans = []
    for axis in range(mask.ndim):
        hit = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hit.size == 0:
            return None
        spans.append(slice(max(int(hit[0]) - margin, 0), min(int(hit[-1]) + 1 + margin, mask.shape[axis])))
    return tuple(spans)
