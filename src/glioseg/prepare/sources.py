"""The input of ``glioseg prepare``: a DICOM study or a folder of NIfTI files, as classified candidates.

A NIfTI candidate is named by its file; its tags come from a dcm2niix/BIDS JSON sidecar beside it
(``<name>.json``: ``EchoTime``, ``RepetitionTime``, ``InversionTime`` in seconds,
``SeriesDescription``, ``ProtocolName``, ``ImageType``, ``ContrastBolusAgent``) when there is one,
and its header's description field.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from glioseg.data.io import read_image, strip_nifti_suffix, walk_tree
from glioseg.errors import InputError
from glioseg.prepare.dicom import find_dicom_files, read_series
from glioseg.prepare.series import Candidate, classify


def _seconds_to_ms(value) -> float | None:
    try:
        return None if value is None else float(value) * 1000.0
    except (TypeError, ValueError):
        return None


def nifti_candidate(path: Path) -> Candidate:
    """A :class:`Candidate` of one NIfTI file (header and sidecar only; voxels stay on disk)."""
    image = read_image(path)
    shape = tuple(int(s) for s in image.shape)
    if len(shape) > 3 and any(s > 1 for s in shape[3:]):
        slices = 0  # a 4-D series (diffusion, perfusion) is never a contrast
        kind = f"{len(shape)}-D"
    else:
        slices = min(shape[:3]) if len(shape) >= 3 else 1
        kind = ""
    stem = strip_nifti_suffix(path.name) or path.stem
    descrip = image.header.get("descrip")
    description = descrip.item().decode("latin-1", "replace").strip("\x00 ") if descrip is not None else ""
    sidecar = path.with_name(f"{stem}.json")
    meta: dict = {}
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(sidecar, f"unreadable JSON sidecar ({exc})") from None
    names = [stem, str(meta.get("SeriesDescription", "")), str(meta.get("ProtocolName", ""))]
    name = " / ".join(dict.fromkeys(n for n in names if n))
    te = _seconds_to_ms(meta.get("EchoTime"))
    found = re.search(r"\bTE=([0-9.eE+-]+)", description)
    if te is None and found:  # dcm2niix writes the echo time (ms) into the header's description
        try:
            te = float(found.group(1))
        except ValueError:
            te = None
    image_type = tuple(str(v).upper() for v in meta.get("ImageType", ()) or ())
    candidate = Candidate(
        key=path.name,
        name=name,
        source=path,
        te=te,
        tr=_seconds_to_ms(meta.get("RepetitionTime")),
        ti=_seconds_to_ms(meta.get("InversionTime")),
        contrast_agent=str(meta.get("ContrastBolusAgent", "") or ""),
        image_type=image_type,
        slices=slices,
        slice_thickness=float(meta["SliceThickness"]) if "SliceThickness" in meta else None,
    )
    classify(candidate)
    if kind:
        candidate.contrast, candidate.reason = None, f"excluded: {kind} image, shape {shape}"
    elif description and not candidate.reason.startswith("excluded"):
        candidate.reason += f"; header: {description[:40]}"
    return candidate


def gather(root: Path) -> tuple[str, list[Candidate]]:
    """Classified candidates of ``root``: ``("dicom", ...)`` when it holds DICOM files, else ``("nifti", ...)``.

    Raises
    ------
    InputError
        ``root`` is missing or not a folder, holds neither DICOM nor NIfTI files, holds both, or a
        file cannot be read (the file is named).
    """
    if not root.exists():
        raise InputError(root, "input folder not found")
    if not root.is_dir():
        raise InputError(root, "is a file; give the folder of a DICOM study or of NIfTI files")
    dicom = find_dicom_files(root)
    _, files = walk_tree(root)
    niftis = [f for f in files if strip_nifti_suffix(f.name) is not None]
    if dicom and niftis:
        raise InputError(root, f"holds both DICOM files and NIfTI files ({niftis[0].name}); give one kind")
    if dicom:
        candidates = read_series(root)
        for c in candidates:
            classify(c)
        return "dicom", candidates
    if not niftis:
        raise InputError(root, "no DICOM or NIfTI file found (any depth)")
    return "nifti", [nifti_candidate(p) for p in niftis]


def case_id_for(root: Path, candidates: list[Candidate], given: str | None) -> str:
    """The case ID: ``given``, else the DICOM patient ID, else the input folder's name; only
    letters, digits, ``.``, ``_`` and ``-`` are kept."""
    value = given
    if value is None and candidates and candidates[0].files:
        import pydicom

        value = str(
            pydicom.dcmread(candidates[0].files[0], stop_before_pixels=True).get("PatientID", "") or ""
        )
    value = value or root.resolve().name
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", value).strip("._-")
    if not safe:
        raise InputError(root, f"case ID {value!r} has no usable character; give --id")
    return safe
