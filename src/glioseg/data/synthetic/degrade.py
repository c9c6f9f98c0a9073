"""Image degradations of low-quality MRI, as seen in BraTS-Africa scans.

Each function takes a 3-D float array (one modality) and a NumPy random generator
where it draws anything, and returns a new array; inputs are not modified.  The
generator's ``ssa`` domain uses them, and so does training augmentation
(:func:`degrade_low_quality`) so that models can be hardened against the same
effects.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import uniform_filter1d


def smooth_field(shape: tuple[int, ...], rng: np.random.Generator, control_points: int = 4) -> np.ndarray:
    """Zero-mean, unit-std smooth random field of ``shape`` (trilinear upsampling of a coarse random grid)."""
    coarse = rng.standard_normal((1, 1, *(control_points,) * len(shape))).astype(np.float32)
    up = F.interpolate(torch.from_numpy(coarse), size=tuple(shape), mode="trilinear", align_corners=True)[
        0, 0
    ].numpy()
    up -= up.mean()
    return up / max(float(up.std()), 1e-6)


def bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Multiplicative intensity non-uniformity ``exp(strength * field)`` (strength ~ 0.05 good, 0.3 poor)."""
    return np.exp(strength * smooth_field(shape, rng, control_points=3)).astype(np.float32)


def thick_slices(volume: np.ndarray, axis: int, factor: int) -> np.ndarray:
    """Simulate a thick-slice acquisition resampled back to the original grid.

    Each acquired slice averages ``factor`` voxels along ``axis`` (slab profile);
    slices are kept every ``factor`` voxels and linearly interpolated back, as a
    scanner console or a registration to a 1 mm atlas would.
    """
    if factor < 2:
        return volume.copy()
    slab = uniform_filter1d(volume, size=factor, axis=axis, mode="nearest")
    n = volume.shape[axis]
    kept = np.arange(factor // 2, n, factor)
    if len(kept) < 2:
        return slab
    pos = np.clip((np.arange(n) - kept[0]) / factor, 0, len(kept) - 1)
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, len(kept) - 1)
    frac = (pos - lo).astype(np.float32)
    shape = [1] * volume.ndim
    shape[axis] = n
    frac = frac.reshape(shape)
    a = np.take(slab, kept[lo], axis=axis)
    b = np.take(slab, kept[hi], axis=axis)
    return (a * (1 - frac) + b * frac).astype(volume.dtype, copy=False)


def ghosting(volume: np.ndarray, axis: int, intensity: float) -> np.ndarray:
    """Nyquist (N/2) ghost along the phase-encoding ``axis``: a shifted, faint copy of the image."""
    shift = volume.shape[axis] // 2
    return volume + intensity * np.roll(volume, shift, axis=axis)


def motion_blur(volume: np.ndarray, axis: int, shift_vox: float) -> np.ndarray:
    """Rigid motion during the scan, approximated by mixing the image with a shifted copy of itself."""
    whole = int(np.floor(shift_vox))
    frac = shift_vox - whole
    moved = (1 - frac) * np.roll(volume, whole, axis=axis) + frac * np.roll(volume, whole + 1, axis=axis)
    return 0.7 * volume + 0.3 * moved


def rician_noise(
    volume: np.ndarray, sigma: float, rng: np.random.Generator, mask: np.ndarray | None = None
) -> np.ndarray:
    """Magnitude of the signal plus complex Gaussian noise of standard deviation ``sigma``.

    With a boolean ``mask`` only the voxels inside it are noised (the rest are copied),
    which is all a skull-stripped image needs and much cheaper.
    """
    out = np.array(volume, dtype=np.float32, copy=True)
    values = out[mask] if mask is not None else out
    real = values + np.float32(sigma) * rng.standard_normal(values.shape, dtype=np.float32)
    imag = np.float32(sigma) * rng.standard_normal(values.shape, dtype=np.float32)
    noisy = np.sqrt(real * real + imag * imag)
    if mask is None:
        return noisy.reshape(out.shape)
    out[mask] = noisy
    return out


def robust_level(volume: np.ndarray, q: float) -> float:
    """Percentile ``q`` of the non-zero voxels, estimated on a regular subsample (fast on large volumes)."""
    flat = volume.reshape(-1)
    sample = flat[:: max(1, flat.size // 200_000)]
    sample = sample[sample > 0]
    return float(np.percentile(sample, q)) if sample.size else 1.0


def gamma_contrast(volume: np.ndarray, gamma: float) -> np.ndarray:
    """Contrast change ``v ** gamma`` on intensities scaled to [0, 1] by the 99.5th percentile."""
    top = robust_level(volume, 99.5)
    scaled = np.clip(volume / max(top, 1e-6), 0, None)
    return (scaled**gamma * top).astype(np.float32)


@dataclass(frozen=True)
class LowQualityProfile:
    """Ranges of the low-quality effects (BraTS-Africa-like defaults)."""

    slice_thickness_mm: tuple[float, float] = (4.0, 6.0)
    thick_slice_probability: float = 0.85
    snr: tuple[float, float] = (7.0, 14.0)
    bias_strength: tuple[float, float] = (0.15, 0.35)
    gamma: tuple[float, float] = (0.75, 1.35)
    ghost_probability: float = 0.3
    ghost_intensity: tuple[float, float] = (0.03, 0.10)
    motion_probability: float = 0.25
    motion_shift_mm: tuple[float, float] = (1.0, 3.0)


def degrade_low_quality(
    volume: np.ndarray,
    spacing_mm: float | tuple[float, float, float],
    rng: np.random.Generator,
    profile: LowQualityProfile = LowQualityProfile(),
    mask: np.ndarray | None = None,
    add_noise: bool = True,
) -> tuple[np.ndarray, dict]:
    """Apply BraTS-Africa-like degradations to one modality (float array, any intensity scale).

    Order: thick-slice acquisition, motion, ghosting, bias field, Rician noise, gamma.
    ``mask`` (brain) is re-applied at the end so that skull-stripped zeros stay zero.
    ``spacing_mm`` is the voxel size, one number or one per axis (slice thickness and motion are
    drawn in mm and converted to voxels along the axis they act on).

    Returns
    -------
    degraded : ndarray, float32, same shape
    record : dict
        What was applied (axis, thickness, SNR, ...), for metadata and reports.
    """
    out = np.asarray(volume, dtype=np.float32)
    spacing = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    record: dict = {}
    ref = robust_level(out, 50)
    noise_mask = mask > 0 if mask is not None else None
    if rng.random() < profile.thick_slice_probability:
        axis = int(rng.choice(3, p=[0.15, 0.15, 0.70]))
        thickness = float(rng.uniform(*profile.slice_thickness_mm))
        factor = int(round(thickness / spacing[axis]))
        out = thick_slices(out, axis, factor)
        record["thick_slice"] = {"axis": axis, "thickness_mm": round(thickness, 2), "factor": factor}
    if rng.random() < profile.motion_probability:
        axis = int(rng.integers(3))
        shift = float(rng.uniform(*profile.motion_shift_mm)) / spacing[axis]
        out = motion_blur(out, axis, shift)
        record["motion"] = {"axis": axis, "shift_vox": round(shift, 2)}
    if rng.random() < profile.ghost_probability:
        axis = int(rng.integers(2))
        level = float(rng.uniform(*profile.ghost_intensity))
        out = ghosting(out, axis, level)
        record["ghosting"] = {"axis": axis, "intensity": round(level, 3)}
    strength = float(rng.uniform(*profile.bias_strength))
    out = out * bias_field(out.shape, rng, strength)
    record["bias_strength"] = round(strength, 3)
    if add_noise:
        snr = float(rng.uniform(*profile.snr))
        out = rician_noise(out, ref / snr, rng, noise_mask)
        record["snr"] = round(snr, 2)
    gamma = float(rng.uniform(*profile.gamma))
    out = gamma_contrast(out, gamma)
    record["gamma"] = round(gamma, 3)
    if mask is not None:
        out = out * mask
    return out.astype(np.float32, copy=False), record
