"""Quality warnings of ``glioseg prepare``: thick slices, ghosting (motion), implausible registrations.

Each check gives a warning line that the case's JSON record carries and that ``glioseg predict``
copies into its own record and case report. The thresholds are measured, not guessed
(docs/prepare.md, "Warnings", gives the measurements and the commands):

- :data:`THICK_SLICE_MM`: the models were trained on 1 mm data;
- :data:`GHOST_RATIO`: :func:`ghost_ratio` of the real raw study's four series is 0.008-0.036, of
  copies with a Nyquist ghost of 8 % of the image (the lower bound of ``glioseg degrade``'s severe
  profile) 0.075-0.100;
- :data:`MAX_ROTATION_DEG`, :data:`MAX_SHIFT_MM`: the real study's series, acquired over an hour,
  needed rigid corrections of up to 13.4 degrees and 17.5 mm (checked right: they raise the
  correlation with t1c); beyond 20 degrees or 30 mm the patient was repositioned, the series
  belongs to another session, or the registration failed, and the result must be looked at
  (``qc/2_registration.png``).
"""

from __future__ import annotations

import numpy as np

#: Slices thicker than this (mm) are warned about.
THICK_SLICE_MM = 3.0
#: :func:`ghost_ratio` above this is warned about as motion or ghosting.
GHOST_RATIO = 0.06
#: A rigid correction of more than this rotation (degrees) ...
MAX_ROTATION_DEG = 20.0
#: ... or moving the centre of t1c's field of view by more than this (mm) is warned about.
MAX_SHIFT_MM = 30.0
#: A band of background with fewer voxels than this is not measured (the head fills the field).
MIN_BAND_VOXELS = 500


def slice_axis(zooms) -> int:
    """The axis of the thickest voxels (the acquisition's slice axis), axis 2 when voxels are near-isotropic."""
    z = np.asarray(zooms[:3], dtype=float)
    return int(np.argmax(z)) if z.max() > 1.2 * z.min() else 2


def ghost_ratio(data: np.ndarray, zooms=(1.0, 1.0, 1.0)) -> tuple[float, int | None]:
    """Ghosting along the phase-encoding direction: background intensity beside the head along an
    in-plane axis, over the head's mean intensity; the larger of the two in-plane axes.

    Motion during a scan and Nyquist ghosts copy the head along the phase-encoding axis, which the
    NIfTI file does not name; a ghost along axis ``a`` lands in the background that lies beyond
    the head along ``a`` (lines along ``a`` that cross the head, lines along the other in-plane
    axis that do not). The head is the Otsu foreground, holes filled and dilated by 5 voxels in
    plane; a still scan has only noise there.

    Returns
    -------
    (ratio, axis)
        The ratio and the voxel axis (of ``data``) it was found along; ``(0.0, None)`` when
        neither band has :data:`MIN_BAND_VOXELS` voxels or the image is (nearly) empty.
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    axis = slice_axis(zooms)
    plane = [a for a in range(3) if a != axis]
    x = np.moveaxis(np.asarray(data, dtype=np.float32), axis, 2)
    positive = x[x > 0]
    if positive.size < 100 or positive.min() == positive.max():
        return 0.0, None
    in_plane = np.ones((3, 3, 1), bool)
    head = ndimage.binary_fill_holes(x > threshold_otsu(positive), structure=in_plane)
    if not head.any():
        return 0.0, None
    outside = ~ndimage.binary_dilation(head, structure=in_plane, iterations=5)
    crosses = [np.broadcast_to(head.any(axis=a, keepdims=True), x.shape) for a in (0, 1)]
    inside = max(float(x[head].mean()), 1e-6)
    best: tuple[float, int | None] = (0.0, None)
    for a in (0, 1):
        band = outside & crosses[a] & ~crosses[1 - a]
        if np.count_nonzero(band) >= MIN_BAND_VOXELS:
            ratio = float(x[band].mean()) / inside
            if ratio > best[0]:
                best = (ratio, plane[a])
    return best


def series_quality(data: np.ndarray, zooms) -> dict:
    """What is measured on one native series: slice thickness (mm), ghost ratio and its axis."""
    ratio, axis = ghost_ratio(data, zooms)
    return {
        "slice_mm": round(float(max(zooms[:3])), 3),
        "ghost_ratio": round(ratio, 4),
        "ghost_axis": axis,
    }


def series_warnings(contrast: str, label: str, quality: dict) -> list[str]:
    """Warning lines of one series measured by :func:`series_quality`."""
    warnings = []
    if quality["slice_mm"] > THICK_SLICE_MM:
        warnings.append(
            f"{contrast} ({label}): {quality['slice_mm']:.1f} mm slices (> {THICK_SLICE_MM:g} mm)"
        )
    if quality["ghost_ratio"] > GHOST_RATIO:
        warnings.append(
            f"{contrast} ({label}): heavy motion or ghosting along voxel axis {quality['ghost_axis']} "
            f"(background/head ratio {quality['ghost_ratio']:.3f} > {GHOST_RATIO:g})"
        )
    return warnings


def shift_at(matrix: np.ndarray, point) -> float:
    """How far (mm) the 4x4 ``matrix`` moves ``point``."""
    m, p = np.asarray(matrix, dtype=float), np.asarray(point, dtype=float)
    return float(np.linalg.norm(m[:3, :3] @ p + m[:3, 3] - p))


def registration_warning(contrast: str, label: str, rotation_deg: float, shift_mm: float) -> str | None:
    """A warning line when the rigid correction of ``contrast`` to t1c is implausibly large, else ``None``."""
    if rotation_deg <= MAX_ROTATION_DEG and shift_mm <= MAX_SHIFT_MM:
        return None
    return (
        f"{contrast} ({label}): registration to t1c needed a large correction (rotation "
        f"{rotation_deg:.1f} deg, shift {shift_mm:.1f} mm; plausible within one session: "
        f"<= {MAX_ROTATION_DEG:g} deg, <= {MAX_SHIFT_MM:g} mm): check qc/2_registration.png"
    )
