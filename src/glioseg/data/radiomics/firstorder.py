"""First-order (intensity histogram) features of the voxels inside a mask.

Intensities are expected z-scored inside the brain (see
:func:`glioseg.data.radiomics.extract.zscore_in_brain`), so that the numbers are in
units of the brain's standard deviation and comparable across scanners.  Definitions
follow IBSI (Zwanenburg et al., Radiology 2020) and pyradiomics where they agree;
where they differ, the choice is stated.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import stats

#: Histogram bin width for entropy and uniformity, in z units (brain standard deviations).
#: pyradiomics' common setting for normalised images (``normalizeScale=100``, ``binWidth=25``)
#: amounts to the same 0.25 standard deviations.
DEFAULT_BIN_WIDTH = 0.25

#: Values within this fraction of a bin below a bin edge count as on the edge (rounding).
_EDGE_TOLERANCE = 1e-9

#: Feature names, in output order.
FIRSTORDER_FEATURES: tuple[str, ...] = (
    "mean",
    "std",
    "minimum",
    "maximum",
    "p10",
    "p25",
    "median",
    "p75",
    "p90",
    "iqr",
    "range",
    "mad",
    "skewness",
    "kurtosis",
    "energy",
    "rms",
    "entropy",
    "uniformity",
)


def discretise_fixed_width(values: np.ndarray, bin_width: float = DEFAULT_BIN_WIDTH) -> np.ndarray:
    """Bin index of each value for bins ``[k w, (k + 1) w)`` anchored at zero.

    Parameters
    ----------
    values : ndarray of float, any shape
    bin_width : float
        Bin width ``w`` in the units of ``values``.

    Returns
    -------
    ndarray of int64, same shape: ``floor(values / w)`` (may be negative); values within
    1e-9 of a bin below an edge count as on it, absorbing floating-point rounding.

    Examples
    --------
    >>> discretise_fixed_width(np.array([-0.3, 0.0, 0.24, 0.25]), 0.25).tolist()
    [-2, 0, 0, 1]
    """
    if not bin_width > 0:
        raise ValueError(f"bin width must be positive, got {bin_width}")
    return np.floor(np.asarray(values, dtype=np.float64) / bin_width + _EDGE_TOLERANCE).astype(np.int64)


def histogram_probabilities(values: np.ndarray, bin_width: float = DEFAULT_BIN_WIDTH) -> np.ndarray:
    """Probabilities of the non-empty fixed-width bins (order irrelevant to the features using them)."""
    bins = discretise_fixed_width(values, bin_width)
    _, counts = np.unique(bins, return_counts=True)
    return counts / counts.sum()


def firstorder_features(values: np.ndarray, bin_width: float = DEFAULT_BIN_WIDTH) -> dict[str, float]:
    """First-order statistics of a set of voxel intensities.

    Parameters
    ----------
    values : ndarray of float, shape (N,)
        Intensities of the voxels inside the region (any order).
    bin_width : float
        Bin width of the histogram used by ``entropy`` and ``uniformity``.

    Returns
    -------
    dict
        Keys :data:`FIRSTORDER_FEATURES`; every value is NaN when ``values`` is empty.

        - ``mean``, ``std`` (population, ``ddof=0``), ``minimum``, ``maximum``, ``median``,
          percentiles ``p10`` ... ``p90`` (linear interpolation), ``iqr = p75 - p25``,
          ``range = maximum - minimum``, ``mad`` = mean absolute deviation from the mean;
        - ``skewness`` (biased moment estimator) and ``kurtosis`` as *excess* kurtosis
          (IBSI; a Gaussian gives 0, pyradiomics reports this value + 3), both from
          :mod:`scipy.stats`; 0 when all values are equal;
        - ``energy = sum(x**2)`` (IBSI/pyradiomics without shift; grows with the number of
          voxels) and ``rms = sqrt(energy / N)``;
        - ``entropy = -sum(p log2 p)`` and ``uniformity = sum(p**2)`` over the probabilities
          ``p`` of the fixed-width histogram (bins ``[k w, (k + 1) w)``).

    Examples
    --------
    >>> f = firstorder_features(np.array([0.0, 0.0, 1.0, 1.0]), bin_width=0.5)
    >>> f["mean"], f["entropy"], f["uniformity"], f["energy"]
    (0.5, 1.0, 0.5, 2.0)
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size == 0:
        return {name: math.nan for name in FIRSTORDER_FEATURES}
    p10, p25, median, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    mean = float(x.mean())
    constant = bool(np.all(x == x[0]))
    p = histogram_probabilities(x, bin_width)
    energy = float(np.dot(x, x))
    return {
        "mean": mean,
        "std": float(x.std()),
        "minimum": float(x.min()),
        "maximum": float(x.max()),
        "p10": float(p10),
        "p25": float(p25),
        "median": float(median),
        "p75": float(p75),
        "p90": float(p90),
        "iqr": float(p75 - p25),
        "range": float(x.max() - x.min()),
        "mad": float(np.abs(x - mean).mean()),
        "skewness": 0.0 if constant else float(stats.skew(x)),
        "kurtosis": 0.0 if constant else float(stats.kurtosis(x, fisher=True)),
        "energy": energy,
        "rms": math.sqrt(energy / x.size),
        "entropy": float(-(p * np.log2(p)).sum()) + 0.0,
        "uniformity": float((p * p).sum()),
    }
