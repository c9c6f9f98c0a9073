"""DICOM input: find the files, read their tags (pydicom), group them into series, convert with dcm2niix.

Files are found at any depth and with or without an extension: a file is DICOM when it carries the
``DICM`` marker after its 128-byte preamble (DICOM part 10). Only the header is read (pixel data
stays on disk). Conversion runs the ``dcm2niix`` binary that ships inside the ``dcm2niix`` wheel
(no run-time download) on a folder of links to one series' files, so that each chosen series
becomes exactly one NIfTI volume.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections import defaultdict
from pathlib import Path

from glioseg.data.io import walk_tree
from glioseg.errors import InputError
from glioseg.prepare.series import Candidate

#: SOP classes of MR and CT images (a file of these classes must carry image attributes).
_IMAGE_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "1.2.840.10008.5.1.4.1.1.4.1",  # Enhanced MR Image Storage
    "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
}
#: Uncompressed transfer syntaxes (implicit/explicit little endian, explicit big endian).
_UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}
#: dcm2niix is given this long per series before it is stopped (seconds).
CONVERT_TIMEOUT_S = 300


def is_dicom(path: Path) -> bool:
    """Whether ``path`` is a DICOM part-10 file (``DICM`` at byte 128), whatever its name."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def find_dicom_files(root: Path) -> list[Path]:
    """Every DICOM file under ``root`` (any depth, links followed), sorted."""
    _, files = walk_tree(root)
    return [f for f in files if is_dicom(f)]


def _float(value) -> float | None:
    try:
        if value is None or value == "":
            return None
        if isinstance(value, list | tuple) or hasattr(value, "__len__") and not isinstance(value, str):
            value = list(value)[0] if len(value) else None
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def read_series(root: Path) -> list[Candidate]:
    """Group the DICOM files under ``root`` into series (one :class:`Candidate` each).

    Returns
    -------
    Candidates sorted by series number, each with its tags (TE, TR, TI in ms, contrast agent, image
    type, b-value, slice thickness in mm) and its files; ``slices`` counts the images (or the frames
    of a single multi-frame file).

    Raises
    ------
    InputError
        No DICOM file under ``root``; a DICOM file whose header cannot be read (the file is named);
        files of more than one patient; an image without a series UID.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    files = find_dicom_files(root)
    if not files:
        raise InputError(root, "no DICOM file found (any depth, with or without extension)")
    by_uid: dict[str, list[tuple[Path, object]]] = defaultdict(list)
    patients: dict[str, Path] = {}
    for path in files:
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except (InvalidDicomError, OSError, EOFError, ValueError, TypeError, KeyError) as exc:
            raise InputError(path, f"unreadable DICOM header ({type(exc).__name__}: {exc})") from None
        sop_class = str(getattr(getattr(ds, "file_meta", None), "MediaStorageSOPClassUID", "") or "")
        if not hasattr(ds, "Rows"):
            if sop_class in _IMAGE_STORAGE:
                raise InputError(path, "truncated DICOM file: an image without its image attributes")
            continue  # a DICOMDIR, a structured report, a presentation state: not an image
        expected = int(ds.Rows) * int(ds.Columns) * int(getattr(ds, "BitsAllocated", 16)) // 8
        transfer = str(getattr(ds.file_meta, "TransferSyntaxUID", ""))
        if transfer in _UNCOMPRESSED and path.stat().st_size < expected:
            raise InputError(
                path, f"truncated DICOM file ({path.stat().st_size} bytes, pixel data alone needs {expected})"
            )
        uid = str(getattr(ds, "SeriesInstanceUID", "") or "")
        if not uid:
            raise InputError(path, "DICOM image without a SeriesInstanceUID")
        patient = str(getattr(ds, "PatientID", "") or "")
        patients.setdefault(patient, path)
        if len(patients) > 1:
            (a, pa), (b, pb) = list(patients.items())[:2]
            raise InputError(
                root, f"DICOM files of more than one patient: {a!r} ({pa}) and {b!r} ({pb}); give one study"
            )
        by_uid[uid].append((path, ds))
    if not by_uid:
        raise InputError(root, "no DICOM image found (only non-image DICOM files)")
    candidates = []
    for uid, items in by_uid.items():
        items.sort(key=lambda item: (_float(getattr(item[1], "InstanceNumber", None)) or 0, str(item[0])))
        ds = items[0][1]
        description = str(getattr(ds, "SeriesDescription", "") or "")
        protocol = str(getattr(ds, "ProtocolName", "") or "")
        name = " / ".join(dict.fromkeys(x for x in (description, protocol) if x))
        frames = int(_float(getattr(ds, "NumberOfFrames", None)) or 1)
        number = getattr(ds, "SeriesNumber", None)
        candidates.append(
            Candidate(
                key=str(number) if number not in (None, "") else uid,
                name=name,
                source=items[0][0],
                te=_float(getattr(ds, "EchoTime", None)),
                tr=_float(getattr(ds, "RepetitionTime", None)),
                ti=_float(getattr(ds, "InversionTime", None)),
                contrast_agent=str(getattr(ds, "ContrastBolusAgent", "") or "").strip(),
                image_type=tuple(str(v).upper() for v in (getattr(ds, "ImageType", None) or ())),
                slices=len(items) if frames == 1 else frames,
                b_value=_float(getattr(ds, "DiffusionBValue", None)),
                uid=uid,
                files=[p for p, _ in items],
                slice_thickness=_float(getattr(ds, "SliceThickness", None)),
            )
        )
    keys = [c.key for c in candidates]
    for c in candidates:  # two series with one number (e.g. two studies' series 1): tell them apart by UID
        if keys.count(c.key) > 1:
            c.key = f"{c.key}:{c.uid[-8:]}"
    return sorted(candidates, key=lambda c: (_float(c.key.split(":")[0]) or 0, c.key))


def convert_series(candidate: Candidate, out_dir: Path) -> Path:
    """Convert one DICOM series to ``<out_dir>/series_<key>.nii.gz`` with dcm2niix.

    The binary sees only this series' files (links in a temporary folder), so it writes one volume.

    Raises
    ------
    InputError
        dcm2niix fails, writes nothing, or splits the series into several volumes (echoes, stacks).
    """
    import dcm2niix

    out_dir.mkdir(parents=True, exist_ok=True)
    safe = "".join(ch if ch.isalnum() else "_" for ch in candidate.key)
    with tempfile.TemporaryDirectory(prefix="glioseg-dicom-") as tmp:
        for index, path in enumerate(candidate.files):
            os.symlink(path.resolve(), Path(tmp) / f"{index:05d}.dcm")
        with tempfile.TemporaryDirectory(prefix="glioseg-nifti-", dir=out_dir) as nifti_tmp:
            try:
                done = subprocess.run(
                    [dcm2niix.bin, "-z", "y", "-b", "n", "-f", f"series_{safe}", "-o", nifti_tmp, tmp],
                    capture_output=True,
                    text=True,
                    timeout=CONVERT_TIMEOUT_S,
                )
            except (OSError, subprocess.TimeoutExpired) as exc:
                raise InputError(
                    candidate.source, f"dcm2niix could not convert series {candidate.label()} ({exc})"
                ) from None
            written = sorted(Path(nifti_tmp).glob("*.nii.gz"))
            if done.returncode != 0 or not written:
                tail = " ".join((done.stderr or done.stdout).split()[-25:])
                raise InputError(
                    candidate.source,
                    f"dcm2niix could not convert series {candidate.label()} (exit {done.returncode}: {tail})",
                )
            if len(written) > 1:
                raise InputError(
                    candidate.source,
                    f"series {candidate.label()} converts to {len(written)} volumes "
                    f"({', '.join(p.name for p in written)}); it mixes echoes or stacks",
                )
            target = out_dir / f"series_{safe}.nii.gz"
            os.replace(written[0], target)
    return target
