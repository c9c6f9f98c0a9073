"""BraTS label conventions and region masks.

Canonical labels (BraTS 2023 and later): ``0`` background, ``1`` NETC (non-enhancing
tumour core / necrosis), ``2`` SNFH (surrounding FLAIR hyperintensity, edema), ``3``
ET (enhancing tumour).  Legacy files (BraTS 2018-2021) use ``4`` for ET and are
mapped ``4 -> 3`` on load.

Regions are nested: ``ET ⊆ TC ⊆ WT`` with ``WT = {1, 2, 3}``, ``TC = {1, 3}``,
``ET = {3}``.  Region arrays always have the region axis first, in the order
:data:`REGIONS`.
"""

from __future__ import annotations

import numpy as np

NETC, SNFH, ET = 1, 2, 3
LEGACY_ET = 4
LABEL_NAMES: dict[int, str] = {0: "background", NETC: "NETC", SNFH: "SNFH", ET: "ET"}
ALLOWED_LABEL_VALUES = frozenset({0, 1, 2, 3, 4})

#: Region names in the fixed order used for logits, probabilities and metrics.
REGIONS: tuple[str, str, str] = ("WT", "TC", "ET")
#: Labels that make up each region.
REGION_LABELS: dict[str, tuple[int, ...]] = {"WT": (1, 2, 3), "TC": (1, 3), "ET": (3,)}

#: Display colours (RGB, 0-1) as in the BraTS 2023 papers: NETC red, SNFH green, ET yellow.
LABEL_COLOURS: dict[int, tuple[float, float, float]] = {
    NETC: (0.90, 0.10, 0.10),
    SNFH: (0.10, 0.80, 0.20),
    ET: (1.00, 0.90, 0.10),
}


def to_canonical(labels: np.ndarray) -> np.ndarray:
    """Return a ``uint8`` copy of ``labels`` in the canonical convention (ET = 3).

    Legacy ET (4) becomes 3.  A map that uses both 3 and 4 is ambiguous and
    rejected; so are values outside ``{0, 1, 2, 3, 4}`` and non-integers.

    Parameters
    ----------
    labels : ndarray, any shape, integer or integral-valued float

    Returns
    -------
    ndarray of uint8, same shape

    Raises
    ------
    ValueError
        With a short description of the offending values.

    Examples
    --------
    >>> to_canonical(np.array([0, 1, 2, 4])).tolist()
    [0, 1, 2, 3]
    """
    arr = np.asarray(labels)
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) and arr.dtype != bool:
            raise ValueError(f"labels have dtype {arr.dtype}, expected integers")
        if arr.dtype != bool:
            if not np.all(np.isfinite(arr)):
                raise ValueError("labels contain NaN or Inf")
            if not np.array_equal(arr, np.round(arr)):
                raise ValueError("labels are not integers (found fractional values)")
    if np.issubdtype(arr.dtype, np.integer) and arr.size and 0 <= arr.min() and arr.max() <= LEGACY_ET:
        # the usual case: a few comparisons instead of sorting the whole volume
        values = np.array([v for v in range(int(arr.max()) + 1) if v == 0 or np.any(arr == v)])
    else:
        values = np.unique(arr)
    bad = [v for v in values.tolist() if int(v) not in ALLOWED_LABEL_VALUES]
    if bad:
        shown = ", ".join(str(int(v) if float(v).is_integer() else v) for v in bad[:5])
        raise ValueError(f"label values outside {{0,1,2,3,4}}: {shown}")
    present = {int(v) for v in values.tolist()}
    out = arr.astype(np.uint8, copy=True)
    if LEGACY_ET in present:
        if ET in present:
            raise ValueError("labels mix ET = 3 and legacy ET = 4; cannot tell which convention applies")
        out[out == LEGACY_ET] = ET
    return out


def labels_to_regions(labels: np.ndarray) -> np.ndarray:
    """Convert a canonical label map ``(X, Y, Z)`` to nested region masks ``(3, X, Y, Z)`` (bool).

    The region axis follows :data:`REGIONS` (WT, TC, ET).

    Examples
    --------
    >>> labels_to_regions(np.array([0, 1, 2, 3]))[:, :].astype(int).tolist()
    [[0, 1, 1, 1], [0, 1, 0, 1], [0, 0, 0, 1]]
    """
    lab = np.asarray(labels)
    return np.stack([region_mask(lab, name) for name in REGIONS])


def region_mask(labels: np.ndarray, region: str) -> np.ndarray:
    """Boolean mask of one region (``"WT"``, ``"TC"`` or ``"ET"``) of a canonical label map.

    Equals ``np.isin(labels, REGION_LABELS[region])``, computed with one comparison per label
    (far faster on a volume), in the memory layout of ``labels``.

    Examples
    --------
    >>> region_mask(np.array([0, 1, 2, 3]), "TC").tolist()
    [False, True, False, True]
    """
    try:
        members = REGION_LABELS[region]
    except KeyError:
        raise ValueError(f"unknown region {region!r}; expected one of {', '.join(REGIONS)}") from None
    lab = np.asarray(labels)
    mask = lab == members[0]
    for value in members[1:]:
        mask |= lab == value
    return mask


def regions_to_labels(regions: np.ndarray, enforce_nesting: bool = True) -> np.ndarray:
    """Convert region masks ``(3, X, Y, Z)`` (WT, TC, ET) to a canonical label map ``(X, Y, Z)``.

    With ``enforce_nesting`` (default) ``TC`` is clipped to ``WT`` and ``ET`` to
    ``TC`` first, as BraTS region-based models do; for nested masks the round
    trip with :func:`labels_to_regions` is lossless.

    Examples
    --------
    >>> regions_to_labels(labels_to_regions(np.array([0, 1, 2, 3]))).tolist()
    [0, 1, 2, 3]
    """
    reg = np.asarray(regions).astype(bool)
    if reg.shape[0] != len(REGIONS):
        raise ValueError(f"expected {len(REGIONS)} region masks on axis 0, got shape {reg.shape}")
    wt, tc, et = reg[0], reg[1], reg[2]
    if enforce_nesting:
        tc = tc & wt
        et = et & tc
    out = np.zeros(wt.shape, dtype=np.uint8)
    out[wt] = SNFH
    out[tc] = NETC
    out[et] = ET
    return out


def probabilities_to_labels(
    probabilities: np.ndarray, thresholds: tuple[float, float, float] = (0.5, 0.5, 0.5)
) -> np.ndarray:
    """Threshold region probabilities ``(3, X, Y, Z)`` into a nested canonical label map.

    WT where ``p_WT > t_WT``; TC inside WT where ``p_TC > t_TC``; ET inside TC where
    ``p_ET > t_ET``.
    """
    prob = np.asarray(probabilities)
    masks = np.stack([prob[i] > thresholds[i] for i in range(len(REGIONS))])
    return regions_to_labels(masks, enforce_nesting=True)
