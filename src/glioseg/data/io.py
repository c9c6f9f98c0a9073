"""NIfTI reading with validation, and atomic NIfTI writing that keeps the input geometry.

Every reader raises :class:`glioseg.errors.InputError` with a one-line message that
names the file and the problem; every writer writes to a temporary file in the
destination folder and renames it, so that an interrupted run never leaves a
half-written file behind.
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.labels import to_canonical
from glioseg.errors import GliosegError, InputError

NIFTI_SUFFIXES = (".nii.gz", ".nii")
#: Names of the hidden temporary files and staging folders of atomic_path, staged_outputs and
#: atomic_folder: never an output, cleared by remove_stale_parts.
STAGING_GLOB = ".*.part*"

_UMASK = os.umask(0)
os.umask(_UMASK)

#: Largest difference tolerated between two voxel spacings (mm) of one case.
SPACING_TOLERANCE_MM = 1e-3
#: Largest difference tolerated between two affines of one case (mm, or unitless for directions).
AFFINE_TOLERANCE = 1e-2


def strip_nifti_suffix(name: str) -> str | None:
    """Return ``name`` without ``.nii.gz``/``.nii``, or ``None`` if it is not a NIfTI file name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return None


@dataclass(frozen=True)
class Geometry:
    """Voxel grid of a volume: ``shape`` (voxels), ``affine`` (4x4, voxel -> world mm), ``spacing`` (mm)."""

    shape: tuple[int, int, int]
    affine: np.ndarray
    spacing: tuple[float, float, float]

    @classmethod
    def of(cls, image: nib.spatialimages.SpatialImage) -> Geometry:
        shape = tuple(int(s) for s in image.shape[:3])
        zooms = tuple(float(z) for z in image.header.get_zooms()[:3])
        return cls(shape=shape, affine=np.asarray(image.affine, dtype=np.float64), spacing=zooms)

    def mismatch(self, other: Geometry, reference: str = "the reference") -> str | None:
        """Describe how ``other`` differs from this grid, or return ``None`` when they agree.

        ``reference`` names this grid's owner in the message (``"t1n"``, ``"the images"``).

        >>> a = Geometry((2, 2, 2), np.eye(4), (1.0, 1.0, 1.0))
        >>> a.mismatch(Geometry((2, 2, 3), np.eye(4), (1.0, 1.0, 1.0)), "t1n")
        "shape (2, 2, 3) differs from t1n's (2, 2, 2)"
        >>> a.mismatch(Geometry((2, 2, 3), np.eye(4), (1.0, 1.0, 1.0)), "the images")
        "shape (2, 2, 3) differs from the images' (2, 2, 2)"
        """
        owner = f"{reference}'" if reference.endswith("s") else f"{reference}'s"  # the images', t1n's
        if self.shape != other.shape:
            return f"shape {other.shape} differs from {owner} {self.shape}"
        if not np.allclose(self.spacing, other.spacing, rtol=0, atol=SPACING_TOLERANCE_MM):
            return f"voxel spacing {_fmt(other.spacing)} mm differs from {owner} {_fmt(self.spacing)} mm"
        if not np.allclose(self.affine, other.affine, rtol=0, atol=AFFINE_TOLERANCE):
            return f"affine (voxel-to-world orientation/origin) differs from {owner}"
        return None


def _fmt(values: tuple[float, ...]) -> str:
    return "x".join(f"{v:g}" for v in values)


def read_image(path: str | Path) -> nib.Nifti1Image:
    """Open a NIfTI file (header only; data stays on disk until asked for).

    Raises
    ------
    InputError
        When the file is missing, empty or not a NIfTI file.
    """
    p = Path(path)
    if not p.exists():
        raise InputError(p, "file not found")
    if p.is_dir():
        raise InputError(p, "is a folder, expected a NIfTI file")
    if p.stat().st_size == 0:
        raise InputError(p, "file is empty")
    try:
        image = nib.load(str(p))
    except Exception as exc:  # nibabel raises many types for broken headers
        raise InputError(p, f"unreadable NIfTI header ({type(exc).__name__}: {exc})") from None
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise InputError(p, f"not a NIfTI image ({type(image).__name__})")
    return image


def read_data(image: nib.Nifti1Image, path: str | Path, dtype: np.dtype | None) -> np.ndarray:
    """Read the voxels of an opened image as a 3-D array (trailing singleton axes dropped).

    ``dtype=None`` keeps the stored type (no scaling); errors name ``path``.
    """
    try:
        if dtype is None:
            data = np.asanyarray(image.dataobj)
        else:
            data = np.asarray(image.get_fdata(dtype=dtype))
    except Exception as exc:  # truncated gzip streams give EOFError, zlib.error, OSError, ValueError
        raise InputError(path, f"unreadable or truncated image data ({type(exc).__name__}: {exc})") from None
    if data.ndim > 3 and all(s == 1 for s in data.shape[3:]):
        data = data.reshape(data.shape[:3])
    if data.ndim != 3:
        raise InputError(path, f"image is {data.ndim}-D with shape {tuple(data.shape)}, expected 3-D")
    return data


def load_volume(path: str | Path, dtype: type = np.float32) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Load one 3-D intensity image.

    Parameters
    ----------
    path : path-like
        A ``.nii`` or ``.nii.gz`` file.
    dtype : numpy float type
        Output type (scaling slope/intercept applied).

    Returns
    -------
    data : ndarray, shape (X, Y, Z)
        Voxel intensities, in the file's voxel order (no reorientation).
    image : nibabel.Nifti1Image
        The opened file, for its affine and header.

    Raises
    ------
    InputError
        Unreadable or truncated file, not 3-D, NaN or Inf voxels.
    """
    p = Path(path)
    image = read_image(p)
    data = read_data(image, p, np.dtype(dtype))
    finite = np.isfinite(data)
    if not finite.all():
        n_bad = int(data.size - np.count_nonzero(finite))
        kind = "NaN" if np.isnan(data).any() else "Inf"
        raise InputError(p, f"contains {n_bad} {kind} voxel(s)")
    return data, image


def load_label(path: str | Path) -> tuple[np.ndarray, nib.Nifti1Image]:
    """Load a segmentation as a canonical ``uint8`` label map (legacy ET = 4 becomes 3).

    Raises
    ------
    InputError
        Unreadable file, not 3-D, non-integer labels, values outside ``{0, 1, 2, 3, 4}``.
    """
    p = Path(path)
    image = read_image(p)
    raw = read_data(image, p, None)
    try:
        labels = to_canonical(raw)
    except ValueError as exc:
        raise InputError(p, str(exc)) from None
    return labels, image


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` when the block succeeds.

    The temporary file keeps ``suffix`` (default: the destination's full suffix, e.g.
    ``.nii.gz``) so that writers that choose a format by extension behave.  On error
    the temporary file is removed and the destination is untouched.
    """
    dest = Path(path)
    dest.parent.mkdir(parents=True, exist_ok=True)
    if suffix is None:
        suffix = "".join(dest.suffixes[-2:]) if dest.name.endswith(".nii.gz") else dest.suffix
    fd, tmp_name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=f".part{suffix}", dir=dest.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; outputs get the usual permissions
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def remove_stale_parts(folder: str | Path) -> list[Path]:
    """Remove the hidden temporary files (``.<name>.*.part*``) that :func:`atomic_path` leaves when its
    process is killed outright (SIGKILL, power loss) in the middle of a write; returns them.

    Call it where one run at a time writes (a batch's output folder), never where another process may
    be writing the same files at the same moment.
    """
    root = Path(folder)
    stale = list(root.glob(STAGING_GLOB)) if root.is_dir() else []
    for path in stale:
        if path.is_dir() and not path.is_symlink():  # a staging folder of staged_outputs/atomic_folder
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale


@contextmanager
def staged_outputs(folder: str | Path, last: str) -> Iterator[Path]:
    """Yield a hidden staging folder inside ``folder`` for one case's outputs; when the block succeeds,
    move each file into ``folder`` (replacing older ones), the file named ``last`` after all others.

    ``last`` is the file whose presence means "this case is done" (the label map of a prediction):
    a process killed while the files are moved leaves at most some companions without it, never it
    without its companions. On error the staging folder goes and ``folder`` is untouched; a staging
    folder that a killed process leaves behind is cleared by :func:`remove_stale_parts`.

    Examples
    --------
    >>> import tempfile
    >>> out = Path(tempfile.mkdtemp())
    >>> with staged_outputs(out, last="A.txt") as stage:
    ...     _ = (stage / "A.txt").write_text("result"), (stage / "A.json").write_text("{}")
    >>> sorted(p.name for p in out.iterdir())
    ['A.json', 'A.txt']
    """
    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{Path(last).name}.", suffix=".part", dir=root))
    try:
        yield stage
        entries = sorted(stage.iterdir(), key=lambda p: (p.name == last, p.name))
        for entry in entries:
            if entry.is_dir():
                raise GliosegError(f"{entry.name}: a staged output must be a file, not a folder")
            os.chmod(entry, 0o666 & ~_UMASK)
            os.replace(entry, root / entry.name)
        stage.rmdir()
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise


@contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield an empty staging folder next to ``path``; rename it onto ``path`` when the block succeeds.

    ``path`` must not exist (a folder is never merged into or replaced); on error the staging
    folder and everything in it are removed, so a reader sees the whole folder or nothing.
    """
    dest = Path(path)
    if dest.exists():
        raise InputError(dest, "already exists; remove it or choose another output folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent))
    try:
        os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp creates 0700; outputs get the usual permissions
        yield staging
        staging.rename(dest)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def swap_folder(staging: str | Path, target: str | Path) -> Path:
    """Move the finished folder ``staging`` onto ``target``, replacing any folder there.

    The old folder is renamed aside first and removed only once ``staging`` is in place, so a
    reader finds either the old folder or the new one, never a mixture.
    """
    staging, target = Path(staging), Path(target)
    if target.exists():
        old = target.with_name(f".{target.name}-old")
        shutil.rmtree(old, ignore_errors=True)
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old)
    else:
        staging.rename(target)
    return target


def read_json(path: str | Path, what: str):
    """Parsed JSON of ``path``; :class:`InputError` ``unreadable <what> (...)`` names the file otherwise."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(p, f"unreadable {what} ({exc})") from None


def write_text_atomic(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically (UTF-8)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def save_nifti(
    data: np.ndarray,
    path: str | Path,
    reference: nib.Nifti1Image | None = None,
    affine: np.ndarray | None = None,
    dtype: type | None = None,
) -> Path:
    """Write a 3-D array as NIfTI, atomically, keeping the geometry of ``reference``.

    Parameters
    ----------
    data : ndarray, shape (X, Y, Z)
        Must match the reference grid when a reference is given.
    path : path-like
        Destination ``.nii.gz`` or ``.nii``; parent folders are created.
    reference : nibabel image, optional
        Source of affine, qform/sform codes and header fields (units, orientation,
        descriptions).  Scaling (slope/intercept) is reset.
    affine : (4, 4) array, optional
        Used when there is no reference.
    dtype : numpy type, optional
        On-disk type (default: ``data.dtype``).

    Returns
    -------
    Path of the written file.
    """
    arr = np.asarray(data)
    if dtype is not None:
        arr = arr.astype(dtype, copy=False)
    if reference is not None:
        if tuple(reference.shape[:3]) != arr.shape[:3]:
            raise ValueError(f"array shape {arr.shape} does not match reference grid {reference.shape[:3]}")
        header = reference.header.copy()
        header.set_data_dtype(arr.dtype)
        image = nib.Nifti1Image(arr, reference.affine, header=header)
        qform, qcode = reference.get_qform(coded=True)
        sform, scode = reference.get_sform(coded=True)
        image.set_qform(qform if qform is not None else reference.affine, int(qcode) if qcode else 0)
        image.set_sform(sform if sform is not None else reference.affine, int(scode) if scode else 0)
    else:
        image = nib.Nifti1Image(arr, affine if affine is not None else np.eye(4))
        image.header.set_xyzt_units("mm", "sec")
        image.set_qform(image.affine, 1)
        image.set_sform(image.affine, 1)
    image.header.set_slope_inter(1.0, 0.0)
    with atomic_path(path) as tmp:
        nib.save(image, str(tmp))
    return Path(path)


def walk_tree(root: str | Path) -> tuple[list[Path], list[Path]]:
    """Every folder and every file under ``root`` (itself included), following symbolic links.

    The hidden staging folders that glioseg's writers use (``.<name>.*.part``) are not entered: what
    a killed run left there is not an output (a later run clears it).

    Data folders made of links (an nnU-Net raw folder, cluster storage) are common, and pathlib's
    ``rglob`` does not follow directory links on Python 3.11.  A link back into a folder already
    walked (a loop) is not entered again, so each real folder is visited once.

    Returns
    -------
    (folders, files), each sorted, as paths under ``root`` (links not resolved).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     os.makedirs(os.path.join(d, "real", "case"))
    ...     _ = open(os.path.join(d, "real", "case", "a.nii.gz"), "w").close()
    ...     os.symlink(os.path.join(d, "real"), os.path.join(d, "real", "case", "loop"))
    ...     os.makedirs(os.path.join(d, "links"))
    ...     os.symlink(os.path.join(d, "real", "case"), os.path.join(d, "links", "case"))
    ...     folders, files = walk_tree(os.path.join(d, "links"))
    ...     [str(f.relative_to(d)) for f in files]
    ['links/case/a.nii.gz']
    """
    base = Path(root)
    seen = {os.path.realpath(base)}
    folders, files = [base], []
    for current, dirnames, filenames in os.walk(base, followlinks=True):
        kept = []
        for name in sorted(dirnames):
            if fnmatch.fnmatch(name, STAGING_GLOB):  # a staging folder (staged_outputs, atomic_folder)
                continue
            real = os.path.realpath(os.path.join(current, name))
            if real not in seen:  # a loop or a second link to a folder already walked
                seen.add(real)
                kept.append(name)
        dirnames[:] = kept
        folders.extend(Path(current) / name for name in kept)
        files.extend(
            Path(current) / name for name in filenames if os.path.isfile(os.path.join(current, name))
        )
    return sorted(folders), sorted(files)


def check_output_folder(path: str | Path) -> Path:
    """Check, before any work, that ``path`` can become (or is) a folder glioseg may write into.

    Nothing is created: a command makes the folder when it writes its first output, so a run
    that fails leaves no empty folder behind.

    Raises
    ------
    InputError
        ``path`` is an existing file, or the folder (or its nearest existing parent) is not
        writable (read-only file system, no permission).

    Examples
    --------
    >>> import tempfile, os
    >>> with tempfile.TemporaryDirectory() as d:
    ...     open(os.path.join(d, "f"), "w").close()
    ...     try:
    ...         check_output_folder(os.path.join(d, "f"))
    ...     except InputError as e:
    ...         print(e.problem)
    exists and is a file; give a folder for the outputs
    """
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise InputError(out, "exists and is a file; give a folder for the outputs")
    parent = out
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(out, f"cannot create the folder: {parent} is a file")
    unwritable = f"cannot write here: {parent} is read-only or not writable for this user"
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(out, unwritable)
    try:  # the permission bits do not tell everything (root, read-only mounts, kernel file systems)
        fd, probe = tempfile.mkstemp(prefix=".glioseg-write-test.", dir=parent)
    except OSError as exc:
        raise InputError(out, f"{unwritable} ({exc.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return out


def check_output_file(path: str | Path) -> Path:
    """Check, before any work, that the file ``path`` can be written (its folder created if needed).

    Raises
    ------
    InputError
        ``path`` is an existing folder, or its folder cannot be written.
    """
    out = Path(path)
    if out.is_dir():
        raise InputError(out, "is a folder; give a file name")
    parent = out.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(out, f"cannot create it: {parent} is a file")
    try:
        check_output_folder(out.parent)
    except InputError as exc:  # name the file asked for, not its folder
        raise InputError(out, exc.problem) from None
    return out
