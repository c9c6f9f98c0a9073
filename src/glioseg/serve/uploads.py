"""Checking an upload and turning it into a job's input, or refusing it in plain words.

An upload is four NIfTI files (one per contrast, named so the contrast can be told: BraTS names
``<ID>-t1n.nii.gz`` or ``_t1``/``_t1ce``/``_t2``/``_flair``, or sent in form fields ``t1n``,
``t1c``, ``t2w``, ``t2f``), or one zip holding such files or a raw study (DICOM, or NIfTI files
as a scanner's converter names them) that is prepared in the job by ``glioseg prepare``; the
study's series are identified at upload, so one that lacks a contrast is refused at once. A
folder sent from the page (a DICOM folder) is staged by :mod:`glioseg.serve.folders` and then
treated here as an unpacked zip (:func:`stage_unpacked`).

Everything is written into a staging folder inside the data folder; on any problem the staging
folder is removed, so a refused upload leaves nothing behind. File names from the client are
never used as paths: NIfTI files are stored under names made here, and a zip entry is written
only when its cleaned relative path stays inside the staging folder (no absolute paths, no
``..``, no links). Zip bombs are refused from the declared sizes and ratios before anything is
unpacked, and the bytes actually unpacked are counted against the same limits.
"""

from __future__ import annotations

import gzip
import re
import shutil
import stat
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import numpy as np

from glioseg.data.io import strip_nifti_suffix
from glioseg.data.modalities import MODALITIES, modality_from_name
from glioseg.errors import GliosegError

MiB = 1024 * 1024
_CHUNK = MiB


class UploadError(GliosegError):
    """An upload that cannot be used; ``str()`` is one sentence for the page.

    ``status`` is the HTTP status the app answers with (400 bad input, 413 too large).
    """

    def __init__(self, message: str, status: int = 400) -> None:
        self.status = status
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True)
class UploadLimits:
    """Size limits of one upload, in bytes (voxels for ``max_voxels``).

    The defaults fit a BraTS case (four 240x240x155 images, ~10 MiB each compressed) or a raw
    DICOM study of a few thousand slices, zipped or sent as a folder, with room to spare.
    """

    max_request_bytes: int = 2048 * MiB  # the whole HTTP body
    max_file_bytes: int = 1024 * MiB  # one uploaded file, or one zip entry once unpacked
    max_unpacked_bytes: int = 4096 * MiB  # all zip entries unpacked together
    max_zip_entries: int = 20_000
    #: files of one multipart upload: a DICOM folder sends one per slice, and a whole MR exam
    #: (diffusion and perfusion series of a thousand slices or more beside the four needed) fits
    max_files: int = 10_000
    max_ratio: float = 500.0  # unpacked / packed size of one zip entry (zeros deflate ~1000:1)
    max_voxels: int = 512 * 512 * 512  # one image, from its NIfTI header


@dataclass
class UploadedFile:
    """One file of the multipart form: the form field, the client's file name, its bytes."""

    field: str
    name: str
    stream: BinaryIO


@dataclass
class StagedUpload:
    """What the upload became in the staging folder: a case folder or a raw study to prepare."""

    kind: str  # "case" or "study"
    case_id: str
    folder: Path  # staging/case/<ID> for a case, staging/upload for a study
    voxels: int  # voxels of one contrast (of the largest image of a study)


def display_name(name: str) -> str:
    """The client's file name, cut and cleaned for a message (never used as a path)."""
    base = PurePosixPath(name.replace("\\", "/")).name or "(no name)"
    return "".join(c if c.isprintable() else "?" for c in base)[:80]


def safe_id(text: str) -> str:
    """A case ID made of letters, digits, ``.``, ``_`` and ``-`` (at most 64), never empty."""
    cleaned = re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip(".-_")[:64]
    return cleaned or "case"


def _split_modality(name: str) -> tuple[str | None, str]:
    """(contrast, case ID) told by a NIfTI file name: ``X-t1n.nii.gz`` -> ("t1n", "X")."""
    stem = strip_nifti_suffix(PurePosixPath(name).name) or ""
    match = re.match(r"^(?P<id>.*?)[-_. ]?(?P<key>[A-Za-z0-9]+)$", stem)
    if not match:
        return None, stem
    key = match["key"]
    if key.lower() in ("seg", "label", "labels", "mask"):
        return "seg", match["id"]
    return modality_from_name(key), match["id"] or stem


def copy_limited(source: BinaryIO, target: Path, limit: int, what: str) -> int:
    """Copy at most ``limit`` bytes; :class:`UploadError` (413) past it. Returns the bytes copied."""
    copied = 0
    with open(target, "wb") as out:
        while chunk := source.read(_CHUNK):
            copied += len(chunk)
            if copied > limit:
                raise UploadError(f"{what} is larger than the limit of {limit / MiB:.0f} MiB", 413)
            out.write(chunk)
    return copied


def check_nifti(path: Path, name: str, limits: UploadLimits) -> tuple[int, ...]:
    """The image shape from a NIfTI header, after checks of the type and the declared size.

    A ``.nii.gz`` whose header promises more than ``max_voxels`` is refused before its data
    are decompressed (a gzip bomb); the data are then read in full, which finds truncated files.
    """
    import nibabel as nib

    with open(path, "rb") as handle:
        magic = handle.read(2)
    opener = gzip.open if magic == b"\x1f\x8b" else open
    try:
        with opener(path, "rb") as handle:
            header = handle.read(352)
    except (OSError, EOFError) as exc:
        raise UploadError(f"{name}: not a readable NIfTI file ({exc})") from None
    if not (len(header) >= 348 and (header[344:347] in (b"n+1", b"ni1") or header[4:7] == b"n+2")):
        raise UploadError(f"{name}: not a NIfTI image (no NIfTI header); upload .nii or .nii.gz files")
    try:
        image = nib.load(str(path))
        shape = tuple(int(s) for s in image.shape)
        itemsize = np.dtype(image.get_data_dtype()).itemsize
    except Exception as exc:  # nibabel raises several types for a damaged header
        raise UploadError(f"{name}: not a readable NIfTI image ({exc})") from None
    voxels = int(np.prod(shape)) if shape else 0
    if len(shape) < 3 or any(s > 1 for s in shape[3:]):
        raise UploadError(f"{name}: a 3-D image is needed, this one has shape {shape}")
    if voxels > limits.max_voxels or voxels * itemsize > limits.max_unpacked_bytes:
        raise UploadError(
            f"{name}: its header declares {voxels:,} voxels, more than the limit of {limits.max_voxels:,}",
            413,
        )
    try:
        data = np.asanyarray(image.dataobj)
    except Exception as exc:
        raise UploadError(
            f"{name}: the image data cannot be read (truncated or damaged file: {exc})"
        ) from None
    if not np.all(np.isfinite(data)):
        raise UploadError(f"{name}: contains NaN or infinite voxels")
    return shape[:3]


def safe_member_path(member: zipfile.ZipInfo) -> PurePosixPath | None:
    """The relative path a zip entry may be written to, ``None`` for a folder or macOS metadata.

    Raises
    ------
    UploadError
        An absolute path, a ``..`` component, a drive letter or a link (which could point
        outside the job folder).
    """
    raw = member.filename.replace("\\", "/")
    path = PurePosixPath(raw)
    mode = member.external_attr >> 16
    if stat.S_ISLNK(mode):
        raise UploadError(f"the zip holds a link ({display_name(raw)}); links are not accepted")
    if path.is_absolute() or re.match(r"^[A-Za-z]:", raw) or ".." in path.parts:
        raise UploadError(f"the zip holds a path that leaves its folder ({raw[:80]!r}); nothing was unpacked")
    parts = [p for p in path.parts if p not in ("", ".")]
    if member.is_dir() or not parts or parts[0] == "__MACOSX" or parts[-1].startswith("._"):
        return None
    return PurePosixPath(*parts)


def unpack_zip(archive: Path, target: Path, name: str, limits: UploadLimits) -> list[Path]:
    """Unpack ``archive`` into ``target`` after checking every entry; the files written."""
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise UploadError(f"{name}: not a readable zip file ({exc})") from None
    with zf:
        members = zf.infolist()
        if len(members) > limits.max_zip_entries:
            raise UploadError(
                f"{name}: {len(members)} entries, more than the limit of {limits.max_zip_entries}"
            )
        planned = [(m, safe_member_path(m)) for m in members]  # every path checked before any write
        total = sum(m.file_size for m, p in planned if p is not None)
        if total > limits.max_unpacked_bytes:
            raise UploadError(
                f"{name}: unpacks to {total / MiB:.0f} MiB, more than the limit of "
                f"{limits.max_unpacked_bytes / MiB:.0f} MiB (a zip bomb?)",
                413,
            )
        for m, p in planned:
            if p is None:
                continue
            if m.file_size > limits.max_file_bytes:
                raise UploadError(
                    f"{name}: entry {display_name(m.filename)} unpacks to more than the file limit", 413
                )
            if m.file_size > MiB and m.file_size > limits.max_ratio * max(m.compress_size, 1):
                raise UploadError(
                    f"{name}: entry {display_name(m.filename)} is compressed {m.file_size / max(m.compress_size, 1):.0f} "
                    f"to 1, more than {limits.max_ratio:g} to 1 (a zip bomb?)",
                    413,
                )
        written: list[Path] = []
        unpacked = 0
        root = target.resolve()
        for m, p in planned:
            if p is None:
                continue
            dest = (target / p).resolve()
            if root not in dest.parents:  # belt and braces after safe_member_path
                raise UploadError(f"the zip holds a path that leaves its folder ({m.filename[:80]!r})")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with zf.open(m) as source:
                    size = copy_limited(source, dest, min(m.file_size, limits.max_file_bytes), "an entry")
            except UploadError:
                raise UploadError(
                    f"{name}: entry {display_name(m.filename)} unpacks to more than it declares", 413
                ) from None
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                raise UploadError(f"{name}: entry {display_name(m.filename)} is damaged ({exc})") from None
            unpacked += size
            if unpacked > limits.max_unpacked_bytes:
                raise UploadError(f"{name}: unpacks to more than the limit (a zip bomb?)", 413)
            written.append(dest)
    return written


def _assign(named: Sequence[tuple[str, Path, str | None]]) -> tuple[dict[str, tuple[str, Path]], str]:
    """Contrast -> (display name, path) from (display name, path, form field) triples, and the case ID."""
    chosen: dict[str, tuple[str, Path]] = {}
    ids: list[str] = []
    for display, path, field in named:
        modality, case_id = (field, None) if field in MODALITIES else _split_modality(display)
        if modality == "seg":
            continue  # a reference segmentation in the upload is not used
        if modality is None:
            raise UploadError(
                f"{display}: cannot tell which contrast this is; name the files like CASE-t1n.nii.gz, "
                "CASE-t1c.nii.gz, CASE-t2w.nii.gz, CASE-t2f.nii.gz"
            )
        if modality in chosen:
            raise UploadError(f"two files are {modality}: {chosen[modality][0]} and {display}")
        chosen[modality] = (display, path)
        if case_id:
            ids.append(case_id)
    missing = [m for m in MODALITIES if m not in chosen]
    if missing:
        raise UploadError(
            f"missing contrast {', '.join(missing)}: four images are needed (t1n, t1c, t2w, t2f)"
            + (f"; got {', '.join(d for d, _ in chosen.values())}" if chosen else "")
        )
    case_id = ids[0] if ids and all(i == ids[0] for i in ids) else (ids[0] if ids else "case")
    return chosen, safe_id(case_id)


def _make_case(chosen: dict[str, tuple[str, Path]], case_id: str, staging: Path, limits: UploadLimits):
    shapes = {modality: check_nifti(path, display, limits) for modality, (display, path) in chosen.items()}
    if len(set(shapes.values())) > 1:
        listed = ", ".join(f"{m} {'x'.join(map(str, s))}" for m, s in shapes.items())
        raise UploadError(f"the four images must have the same grid; their shapes differ ({listed})")
    folder = staging / "case" / case_id
    folder.mkdir(parents=True)
    for modality, (_display, path) in chosen.items():
        suffix = ".nii.gz" if path.name.lower().endswith(".gz") else ".nii"
        shutil.move(str(path), folder / f"{case_id}-{modality}{suffix}")
    return StagedUpload("case", case_id, folder, int(np.prod(shapes["t1n"])))


#: What prepare's messages say to a command-line user, and what the page says instead.
_CLI_HINT = re.compile(r"; (?:name|choose) one with --(?:t1n|t1c|t2w|t2f) SERIES")
STUDY_NEEDS = (
    "a study needs one series of each contrast: T1 (t1n), T1 after contrast (t1c), T2 (t2w) and FLAIR (t2f)"
)


def identify_study(folder: Path, display: str) -> None:
    """Check that ``glioseg prepare`` tells the four contrasts of the raw study in ``folder`` apart.

    Reads the DICOM headers (or NIfTI headers and sidecars) only, so a study that could never be
    prepared (a contrast missing or ambiguous, an unreadable file) is refused at upload.

    Raises
    ------
    UploadError
        What prepare found wrong, in the page's words (paths relative to the upload).
    """
    from glioseg.prepare.series import choose
    from glioseg.prepare.sources import gather

    try:
        _kind, candidates = gather(folder)
        choose(candidates, {}, folder)
    except GliosegError as exc:
        where, problem = getattr(exc, "path", ""), getattr(exc, "problem", str(exc))
        inside = Path(where).relative_to(folder).as_posix() if where.startswith(str(folder) + "/") else ""
        problem = _CLI_HINT.sub("", problem).replace(str(folder) + "/", "")
        raise UploadError(f"{display}: {inside + ': ' if inside else ''}{problem}; {STUDY_NEEDS}") from None


def _is_dicom(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(132)[128:132] == b"DICM"


def stage_upload(files: Sequence[UploadedFile], staging: Path, limits: UploadLimits) -> StagedUpload:
    """Write and check an upload inside ``staging`` (which the caller removes on error)."""
    staged = _stage(files, staging, limits)
    shutil.rmtree(staging / "received")  # emptied: its files were moved into the case, or unpacked
    return staged


def _stage(files: Sequence[UploadedFile], staging: Path, limits: UploadLimits) -> StagedUpload:
    if not files:
        raise UploadError("no file was uploaded: choose four NIfTI files, one zip or a folder")
    received = staging / "received"
    received.mkdir()
    saved: list[tuple[str, Path, str | None]] = []
    for index, item in enumerate(files):
        display = display_name(item.name)
        lower = display.lower()
        if not (lower.endswith((".nii", ".nii.gz", ".zip"))):
            raise UploadError(
                f"{display}: not an accepted file type; upload .nii or .nii.gz images, or one .zip"
            )
        suffix = next(s for s in (".zip", ".nii.gz", ".nii") if lower.endswith(s))
        target = received / f"{index:03d}{suffix}"  # a name made here, never the client's
        copy_limited(item.stream, target, limits.max_file_bytes, display)
        if target.stat().st_size == 0:
            raise UploadError(f"{display}: the file is empty")
        saved.append((display, target, item.field))
    zips = [s for s in saved if s[0].lower().endswith(".zip")]
    if zips and len(saved) > 1:
        raise UploadError("upload either one zip or four NIfTI files, not both")
    if not zips:
        chosen, case_id = _assign(saved)
        return _make_case(chosen, case_id, staging, limits)
    display, archive, _ = zips[0]
    upload = staging / "upload"
    upload.mkdir()
    written = unpack_zip(archive, upload, display, limits)
    archive.unlink()
    zip_id = safe_id(strip_nifti_suffix(display) or display[: -len(".zip")])
    return stage_unpacked(upload, written, display, zip_id, staging, limits)


def stage_unpacked(
    upload: Path, written: Sequence[Path], display: str, upload_id: str, staging: Path, limits: UploadLimits
) -> StagedUpload:
    """The files of an unpacked zip or of an uploaded folder (``written``, all in ``upload``) as
    a case (four BraTS-ready NIfTI images) or a raw study identified for ``glioseg prepare``;
    ``upload_id`` (the zip's or folder's name) is the case ID when the files do not give one."""
    nifti = [p for p in written if strip_nifti_suffix(p.name) is not None]
    if nifti:
        try:
            chosen, case_id = _assign([(str(p.relative_to(upload)), p, None) for p in nifti])
            staged = _make_case(chosen, case_id if case_id != "case" else upload_id, staging, limits)
        except UploadError as not_a_case:
            # not four BraTS-ready images: a raw NIfTI study (scanner names, own grids) to prepare?
            try:
                identify_study(upload, display)
            except UploadError:
                raise not_a_case from None
            return StagedUpload("study", upload_id, upload, 0)
        shutil.rmtree(upload)
        return staged
    if not any(_is_dicom(p) for p in written):
        raise UploadError(f"{display}: holds neither NIfTI images (.nii, .nii.gz) nor DICOM files")
    identify_study(upload, display)
    return StagedUpload("study", upload_id, upload, 0)
