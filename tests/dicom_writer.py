"""Write a NIfTI-like volume as a DICOM MR series with pydicom (test material for glioseg prepare)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_series(
    data: np.ndarray,
    affine: np.ndarray,
    folder: Path,
    number: int,
    description: str,
    patient: str = "PAT-001",
    names: list[str] | None = None,
    **tags,
) -> list[Path]:
    """One DICOM file per slice (axis 2) of ``data`` (X, Y, Z) on the grid of the RAS ``affine``.

    ``tags`` are set on every file (EchoTime=..., ContrastBolusAgent=..., ImageType=[...]);
    ``names`` gives the file names (default ``IM<number>_<k>`` without extension).
    """
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    m = np.diag([-1.0, -1.0, 1.0, 1.0]) @ np.asarray(affine, dtype=float)
    spacing = np.linalg.norm(m[:3, :3], axis=0)
    row_dir, col_dir = m[:3, 0] / spacing[0], m[:3, 1] / spacing[1]
    series_uid, study_uid = generate_uid(), f"1.2.826.0.1.3680043.8.498.{abs(hash(patient)) % 10**12}"
    values = np.asarray(data)
    paths = []
    for k in range(values.shape[2]):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / (names[k] if names else f"IM{number}_{k:03d}")
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID, ds.PatientName = "MR", patient, patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = study_uid + ".1"
        ds.SeriesNumber, ds.InstanceNumber, ds.SeriesDescription = number, k + 1, description
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [float(v) for v in m[:3, :3] @ [0, 0, k] + m[:3, 3]]
        ds.ImageOrientationPatient = [float(v) for v in (*row_dir, *col_dir)]
        ds.PixelSpacing = [float(spacing[1]), float(spacing[0])]
        ds.SliceThickness = float(spacing[2])
        ds.Rows, ds.Columns = values.shape[1], values.shape[0]
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        for key, value in tags.items():
            setattr(ds, key, value)
        ds.PixelData = np.ascontiguousarray(values[:, :, k].T.astype("<i2")).tobytes()
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


#: Series description and tags that glioseg prepare identifies as each contrast (as a scanner writes them).
CONTRAST_SERIES = {
    "t1n": (4, "AX T1 SE", {"EchoTime": 10, "RepetitionTime": 500}),
    "t1c": (6, "AX T1 SE", {"EchoTime": 10, "RepetitionTime": 500, "ContrastBolusAgent": "GADOVIST"}),
    "t2w": (2, "AX T2 TSE", {"EchoTime": 100, "RepetitionTime": 4000}),
    "t2f": (3, "AX FLAIR", {"EchoTime": 120, "RepetitionTime": 9000, "InversionTime": 2500}),
}


def write_case_study(case: Path, root: Path, skip: tuple[str, ...] = (), patient: str = "PAT-001") -> Path:
    """The four contrasts of the BraTS-named case folder ``case`` as a DICOM study under ``root``.

    Each ``<ID>-<contrast>.nii.gz`` becomes one series (int16, on the image's own grid) with the
    tags of :data:`CONTRAST_SERIES`; contrasts in ``skip`` are left out.
    """
    import nibabel as nib

    for modality, (number, description, tags) in CONTRAST_SERIES.items():
        if modality in skip:
            continue
        image = nib.load(str(next(case.glob(f"*-{modality}.nii*"))))
        data = np.asarray(image.dataobj).astype(np.int16)
        write_series(
            data, image.affine, root / f"series{number}", number, description, patient=patient, **tags
        )
    return root
