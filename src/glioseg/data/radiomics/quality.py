"""Image-quality proxies computed from one image alone (no reference, no label).

Two numbers per modality, meant to flag the low-quality scans of the BraTS-Africa kind
(noise, thick slices resampled to a fine grid):

``snr``
    median brain intensity divided by a robust noise estimate: the median absolute
    deviation of the high-pass residual ``x - mean(6 face neighbours)`` inside the
    eroded brain, scaled by ``1.4826 / sqrt(7/6)`` so that it estimates the standard
    deviation of white noise.  Anatomy adds little to a median of the residual.
``sharpness``
    through-plane sharpness ratio: for each axis the mean squared difference of
    neighbouring voxels inside the brain, minus the part white noise explains
    (``2 sigma^2``), gives a "signal gradient energy"; the ratio is
    ``sqrt(min / max)`` over the three axes.  About 1 for isotropic acquisitions and
    lower when one axis was acquired with thick slices and interpolated.  Divided per
    voxel step, not per mm, because thick slices are usually resampled onto an
    isotropic grid.  Anatomy is not isotropic either, so this is a hint rather than a
    detector (measurements in ``docs/transfer.md``).
"""

from __future__ import annotations

import math

import numpy as np

from glioseg.data.arrays import bounding_box

QUALITY_FEATURES: tuple[str, ...] = ("snr", "sharpness")

#: Standard deviation of ``x - mean(6 neighbours)`` for unit white noise.
_RESIDUAL_GAIN = math.sqrt(7.0 / 6.0)
_MAD_TO_SIGMA = 1.4826


def _interior(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` whose 6 face neighbours are in ``mask`` too, shape ``mask.shape - 2``."""
    core = (slice(1, -1),) * 3
    inner = mask[core].copy()
    for axis in range(3):
        for step in (-1, 1):
            index = list(core)
            index[axis] = slice(1 + step, mask.shape[axis] - 1 + step)
            inner &= mask[tuple(index)]
    return inner


def _face_neighbour_mean(x: np.ndarray) -> np.ndarray:
    """Mean of the 6 face neighbours of every interior voxel, shape ``x.shape - 2``."""
    core = (slice(1, -1),) * 3
    total = np.zeros(tuple(s - 2 for s in x.shape), dtype=x.dtype)
    for axis in range(3):
        for step in (-1, 1):
            index = list(core)
            index[axis] = slice(1 + step, x.shape[axis] - 1 + step)
            total += x[tuple(index)]
    return total / 6.0


def noise_sigma(image: np.ndarray, brain: np.ndarray) -> float:
    """Robust white-noise standard deviation inside ``brain`` (see module docstring); NaN if too small."""
    x = np.asarray(image, dtype=np.float32)
    mask = np.asarray(brain, dtype=bool)
    if min(x.shape) < 3:
        return math.nan
    inner = _interior(mask)
    if inner.sum() < 27:
        return math.nan
    residual = (x[1:-1, 1:-1, 1:-1] - _face_neighbour_mean(x))[inner].astype(np.float64)
    mad = float(np.median(np.abs(residual - np.median(residual))))
    return _MAD_TO_SIGMA * mad / _RESIDUAL_GAIN


def quality_features(image: np.ndarray, brain: np.ndarray | None = None) -> dict[str, float]:
    """Quality proxies of one 3-D image (any intensity scale).

    Parameters
    ----------
    image : ndarray of float, shape (X, Y, Z)
    brain : ndarray of bool, same shape, optional
        Default: the non-zero voxels (skull-stripped BraTS images).

    Returns
    -------
    dict with keys ``snr`` and ``sharpness`` (NaN when the brain is too small, ``snr``
    is ``inf`` for a noise-free image).
    """
    x = np.asarray(image)
    mask = x != 0 if brain is None else np.asarray(brain, dtype=bool)
    out = {"snr": math.nan, "sharpness": math.nan}
    box = bounding_box(mask)
    if box is None:
        return out
    # one voxel of margin so that the brain's edge voxels are not taken for interior ones
    box = tuple(slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, x.shape, strict=True))
    x = np.asarray(x[box], dtype=np.float32)
    mask = mask[box]
    sigma = noise_sigma(x, mask)
    if math.isnan(sigma):
        return out
    signal = float(np.median(x[mask]))
    out["snr"] = signal / sigma if sigma > 0 else math.inf
    energies = []
    for axis in range(3):
        a = [slice(None)] * 3
        b = [slice(None)] * 3
        a[axis], b[axis] = slice(0, -1), slice(1, None)
        both = mask[tuple(a)] & mask[tuple(b)]
        d = (x[tuple(b)] - x[tuple(a)])[both].astype(np.float64)
        energies.append(max(float(np.mean(d * d)) - 2.0 * sigma * sigma, 0.0) if d.size else math.nan)
    if np.all(np.isfinite(energies)) and max(energies) > 0:
        out["sharpness"] = math.sqrt(min(energies) / max(energies))
    return out
