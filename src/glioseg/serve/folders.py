"""A folder uploaded from the page (``<input type=file webkitdirectory>``): a DICOM study, say.

The page sends every file of the chosen folder in the form field ``folder``, each under its path
relative to the folder's parent (the browser's ``webkitRelativePath``, ``DICOM/S0001/IM0001``) as
its file name. DICOM files often have no extension, so no file type is asked for; the folder is
then treated as an unpacked zip would be (:func:`glioseg.serve.uploads.stage_unpacked`): the same
limits (files, bytes per file, bytes in all), the same identification of the study at upload.

A relative path from the client is written only when it stays inside the staging folder: an
absolute path, a ``..`` component, a drive letter (``C:``), a NUL or other control character, a
path listed twice or one that is both a file and a folder refuse the whole upload before anything
is written; the resolved target is checked again before each write. Litter that systems leave in
folders (``.DS_Store``, ``Thumbs.db``, macOS ``._`` files and ``__MACOSX``) is skipped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from glioseg.serve.uploads import (
    MiB,
    StagedUpload,
    UploadedFile,
    UploadError,
    UploadLimits,
    copy_limited,
    display_name,
    safe_id,
    stage_unpacked,
)

#: The form field the page sends a folder's files in.
FOLDER_FIELD = "folder"
#: Files that operating systems leave in folders and that are never images.
_LITTER = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})
_MAX_DEPTH = 32
_MAX_PART_BYTES = 255  # a file name on common file systems


def _quoted(raw: str) -> str:
    """A client's path for a message: cut, control characters shown as ``?``."""
    return repr("".join(c if c.isprintable() else "?" for c in raw[:80]))


def safe_relative_path(name: str) -> PurePosixPath | None:
    """The relative path a folder's file may be written to, ``None`` for litter to skip.

    Raises
    ------
    UploadError
        A path that could leave the folder or cannot be written: absolute, with a ``..``
        component, a drive letter, a NUL or other control character, empty, too deep or with a
        name too long.
    """
    raw = name.replace("\\", "/")
    if any(ord(c) < 32 or ord(c) == 127 for c in raw):
        problem = "a control character"
    elif raw.startswith("/") or PurePosixPath(raw).is_absolute():
        problem = "an absolute path"
    elif re.match(r"^[A-Za-z]:", raw):
        problem = "a drive letter"
    elif ".." in PurePosixPath(raw).parts:
        problem = "a '..' that leaves the folder"
    else:
        problem = ""
    if problem:
        raise UploadError(
            f"the folder holds a file whose path has {problem} ({_quoted(raw)}); nothing was kept"
        )
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if not parts:
        raise UploadError("the folder holds a file without a name; nothing was kept")
    if len(parts) > _MAX_DEPTH or any(
        len(p.encode("utf-8", "surrogatepass")) > _MAX_PART_BYTES for p in parts
    ):
        raise UploadError(f"the folder holds a path too deep or too long ({_quoted(raw)}); nothing was kept")
    if "__MACOSX" in parts or parts[-1].startswith("._") or parts[-1] in _LITTER:
        return None
    return PurePosixPath(*parts)


def _plan(files: Sequence[UploadedFile], limits: UploadLimits) -> list[tuple[UploadedFile, PurePosixPath]]:
    """Every file's checked relative path (litter left out), before anything is written."""
    if any(f.field != FOLDER_FIELD for f in files):
        raise UploadError("upload either a folder, one zip, or four NIfTI files, not a mix of them")
    if len(files) > limits.max_files:
        raise UploadError(
            f"the folder holds {len(files):,} files, more than the limit of {limits.max_files:,}", 413
        )
    planned = [(f, p) for f in files if (p := safe_relative_path(f.name)) is not None]
    if not planned:
        raise UploadError("the folder holds no file (only system files such as .DS_Store)")
    seen: set[PurePosixPath] = set()
    for _, path in planned:
        if path in seen:
            raise UploadError(f"the folder lists {_quoted(path.as_posix())} twice; nothing was kept")
        seen.add(path)
    folders = {parent for path in seen for parent in path.parents}
    if clash := next((p for p in sorted(seen) if p in folders), None):
        raise UploadError(f"the folder holds {_quoted(clash.as_posix())} both as a file and as a folder")
    return planned


def stage_folder(files: Sequence[UploadedFile], staging: Path, limits: UploadLimits) -> StagedUpload:
    """Write a folder's files into ``staging/upload`` and identify what they hold.

    ``staging`` is removed by the caller when this raises, so a refused folder leaves nothing.
    The case ID of a raw study is the folder's name (the first component shared by every path).

    Raises
    ------
    UploadError
        A path that is not allowed, too many files, a file or the folder over the size limits,
        or a content that is neither a case nor a study whose four contrasts can be told apart.
    """
    planned = _plan(files, limits)
    tops = {path.parts[0] for _, path in planned if len(path.parts) > 1}
    top = tops.pop() if len(tops) == 1 and all(len(p.parts) > 1 for _, p in planned) else ""
    display = display_name(top) if top else "the folder"
    upload = staging / "upload"
    upload.mkdir()
    root = upload.resolve()
    written: list[Path] = []
    total = 0
    for item, path in planned:
        dest = (upload / path).resolve()
        if root not in dest.parents:  # belt and braces after safe_relative_path
            raise UploadError(
                f"the folder holds a path that leaves it ({_quoted(item.name)}); nothing was kept"
            )
        dest.parent.mkdir(parents=True, exist_ok=True)
        total += copy_limited(item.stream, dest, limits.max_file_bytes, display_name(item.name))
        if total > limits.max_unpacked_bytes:
            raise UploadError(
                f"{display}: more than the limit of {limits.max_unpacked_bytes / MiB:.0f} MiB in all", 413
            )
        written.append(dest)
    return stage_unpacked(upload, written, display, safe_id(top or "study"), staging, limits)
