"""BraTS-Africa-like low-quality copies of real cases (``glioseg degrade``).

A degraded copy has the same grid, file names and labels as its source; only the four
images change: thick slices resampled back, motion, Nyquist ghosting, a bias field,
Rician noise and a contrast change, drawn per modality (each contrast is its own
acquisition) from :class:`~glioseg.data.synthetic.degrade.LowQualityProfile` ranges.

Determinism: the draws of a case depend only on ``(seed, case ID, modality)``, so a case
degrades the same way alone or in a batch, in any order, on any machine.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg._version import __version__
from glioseg.data.cases import Case, load_case_label
from glioseg.data.io import atomic_folder, load_volume, save_nifti, write_text_atomic
from glioseg.data.modalities import MODALITIES
from glioseg.data.synthetic.degrade import LowQualityProfile, degrade_low_quality
from glioseg.errors import InputError

SEVERITIES: dict[str, LowQualityProfile] = {
    "mild": LowQualityProfile(
        slice_thickness_mm=(2.5, 4.0),
        thick_slice_probability=0.6,
        snr=(15.0, 25.0),
        bias_strength=(0.05, 0.15),
        gamma=(0.9, 1.1),
        ghost_probability=0.1,
        ghost_intensity=(0.02, 0.05),
        motion_probability=0.1,
        motion_shift_mm=(0.5, 1.5),
    ),
    "moderate": LowQualityProfile(),  # the BraTS-Africa-like defaults that training augmentation uses
    "severe": LowQualityProfile(
        slice_thickness_mm=(5.0, 7.0),
        thick_slice_probability=1.0,
        snr=(4.0, 8.0),
        bias_strength=(0.3, 0.5),
        gamma=(0.6, 1.6),
        ghost_probability=0.5,
        ghost_intensity=(0.08, 0.15),
        motion_probability=0.5,
        motion_shift_mm=(2.0, 4.0),
    ),
}
"""Named ranges of the effects; ``moderate`` is the default profile of training augmentation."""

RECORD_SUFFIX = "-degrade.json"


@dataclass(frozen=True)
class DegradedCase:
    """One written copy: its ID, its folder ``out_root/<ID>`` and the record of what was applied."""

    case_id: str
    folder: Path
    record: dict


def case_rng(seed: int, case_id: str, modality: str) -> np.random.Generator:
    """The generator of one modality of one case: a function of ``(seed, case_id, modality)`` only.

    >>> float(case_rng(0, "Brats18_CBICA_ABM_1", "t1n").random()) == float(
    ...     case_rng(0, "Brats18_CBICA_ABM_1", "t1n").random())
    True
    """
    key = [int(seed), zlib.crc32(case_id.encode()), MODALITIES.index(modality)]
    return np.random.default_rng(np.random.SeedSequence(key))


def degrade_volume(
    volume: np.ndarray,
    spacing: tuple[float, float, float],
    rng: np.random.Generator,
    profile: LowQualityProfile,
) -> tuple[np.ndarray, dict]:
    """Degrade one modality as stored (any intensity scale, negative values allowed).

    The brain is the non-zero voxels (skull-stripped images); it is shifted to positive
    values for the magnitude-noise model and shifted back, and the background stays 0.

    Returns
    -------
    degraded : ndarray, float32, same shape
    record : dict of what was applied
    """
    mask = volume != 0
    if not mask.any():
        return np.zeros_like(volume, dtype=np.float32), {"empty": True}
    offset = min(float(volume[mask].min()), 0.0)
    shifted = np.where(mask, volume - offset, 0).astype(np.float32)
    degraded, record = degrade_low_quality(shifted, spacing, rng, profile, mask=mask.astype(np.float32))
    return np.where(mask, degraded + offset, 0).astype(np.float32), record


def _on_disk(values: np.ndarray, image: nib.Nifti1Image) -> tuple[np.ndarray, type]:
    """``values`` in the source's stored type when that is an unscaled integer type (rounded, clipped)."""
    dtype = np.dtype(image.get_data_dtype())
    slope, inter = image.header.get_slope_inter()
    unscaled = slope in (None, 1.0) and inter in (None, 0.0)
    if dtype.kind in "iu" and unscaled:
        info = np.iinfo(dtype)
        return np.clip(np.rint(values), info.min, info.max).astype(dtype), dtype.type
    return values.astype(np.float32), np.float32


def degrade_case(
    case: Case,
    out_root: str | Path,
    seed: int = 0,
    severity: str = "moderate",
) -> DegradedCase:
    """Write a low-quality copy of ``case`` to ``out_root/<ID>/``, all or nothing.

    Parameters
    ----------
    case : a discovered case (any layout; nnU-Net cases are written with BraTS 2023 names)
    out_root : the output folder; ``out_root/<ID>`` must not exist yet
    seed : the same seed gives the same copy, bit for bit
    severity : ``mild``, ``moderate`` (BraTS-Africa-like) or ``severe``

    Returns
    -------
    DegradedCase with the record also written to ``<ID>/<ID>-degrade.json``.

    Raises
    ------
    InputError
        When an image cannot be read, the images are not on one grid, or the copy exists.
    """
    if severity not in SEVERITIES:
        raise InputError(severity, f"unknown severity (choose from {', '.join(SEVERITIES)})")
    profile = SEVERITIES[severity]
    out_root = Path(out_root)
    target = out_root / case.case_id
    record: dict = {
        "case_id": case.case_id,
        "seed": int(seed),
        "severity": severity,
        "profile": dataclasses.asdict(profile),
        "glioseg_version": __version__,
        "sources": {m: case.images[m].name for m in MODALITIES},
        "modalities": {},
    }
    brats_names = case.layout != "nnunet"
    with atomic_folder(target) as staging:
        reference = None
        for modality in MODALITIES:
            path = case.images[modality]
            volume, image = load_volume(path)
            if reference is None:
                reference = image
            elif image.shape[:3] != reference.shape[:3] or not np.allclose(
                image.affine, reference.affine, atol=1e-3
            ):
                raise InputError(path, f"not on the grid of {case.images[MODALITIES[0]].name}")
            spacing = tuple(float(s) for s in image.header.get_zooms()[:3])
            degraded, applied = degrade_volume(
                volume, spacing, case_rng(seed, case.case_id, modality), profile
            )
            values, dtype = _on_disk(degraded, image)
            name = path.name if brats_names else f"{case.case_id}-{modality}.nii.gz"
            save_nifti(values, staging / name, reference=image, dtype=dtype)
            record["modalities"][modality] = applied
        if case.label is not None and brats_names:
            shutil.copyfile(case.label, staging / case.label.name)
        elif case.label is not None:
            labels = load_case_label(case)
            save_nifti(labels, staging / f"{case.case_id}-seg.nii.gz", reference=reference, dtype=np.uint8)
        write_text_atomic(staging / f"{case.case_id}{RECORD_SUFFIX}", json.dumps(record, indent=1) + "\n")
    return DegradedCase(case.case_id, target, record)
