"""``glioseg prepare``: a raw study (DICOM or NIfTI) in, a BraTS-ready case folder out.

Steps (docs/prepare.md):

1. find and classify the series (:mod:`glioseg.prepare.sources`, :mod:`glioseg.prepare.series`);
   DICOM series are converted with dcm2niix (:mod:`glioseg.prepare.dicom`);
2. rigid mutual-information registration of t1n, t2w and t2f to t1c (:mod:`.register`);
3. resampling to a 1 mm grid in BraTS orientation (LPS) covering t1c's field of view, and skull
   stripping of the registered t1n with deepbet (:mod:`.skullstrip`);
4. the output grid: 240 x 240 x 155 at 1 mm centred on the brain (``atlas="none"``) or on the
   MNI152 brain after an affine registration (``atlas="mni152"``, :mod:`.atlas`); each contrast is
   resampled once, from its native file through the composed transforms, and masked.

The case folder holds ``<ID>-t1n.nii.gz`` ... ``-t2f``, ``<ID>-brainmask.nii.gz``,
``<ID>-native-grid.nii.gz`` (the original t1c's grid and header, voxels 0: where ``glioseg predict
--native`` writes back), ``<ID>-prepare.json`` (chosen series and why, every transform, grids,
warnings, times) and ``qc/`` with one PNG per step. It is written all-or-nothing
(:func:`glioseg.data.io.atomic_folder`); the input is only read.
"""

from __future__ import annotations

import json
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from glioseg._version import __version__
from glioseg.data.io import atomic_folder, check_output_folder, load_volume, save_nifti, write_text_atomic
from glioseg.data.modalities import MODALITIES
from glioseg.errors import ConfigError, InputError
from glioseg.prepare import qc
from glioseg.prepare.dicom import convert_series
from glioseg.prepare.quality import registration_warning, series_quality, series_warnings, shift_at
from glioseg.prepare.register import (
    canonical_grid,
    centred_grid,
    compose,
    describe,
    grid_of,
    matrix_of,
    physical_box,
    resample,
    rigid_register,
    to_sitk,
)
from glioseg.prepare.series import MIN_SLICES, Candidate, choose
from glioseg.prepare.sources import case_id_for, gather

ATLASES = ("none", "mni152")
RECORD_FORMAT = "glioseg-prepare-v1"


@dataclass
class PrepareResult:
    """What :func:`prepare_case` wrote: the case folder, its ID, the record and the warnings."""

    folder: Path
    case_id: str
    record: dict
    warnings: list[str] = field(default_factory=list)


def record_path(folder: Path, case_id: str) -> Path:
    """The JSON record of a prepared case."""
    return Path(folder) / f"{case_id}-prepare.json"


def _check_paths(source: Path, out: Path) -> None:
    check_output_folder(out)
    if out.exists():
        raise InputError(out, "already exists; remove it or choose another output folder")
    src, dst = source.resolve(), out.resolve()
    if dst == src or src in dst.parents:
        raise InputError(out, f"lies inside the input {source}; the input is never written into")


def _native_files(selection: dict[str, Candidate], kind: str, work: Path) -> dict[str, Path]:
    if kind == "nifti":
        return {m: c.source for m, c in selection.items()}
    return {m: convert_series(c, work) for m, c in selection.items()}


def prepare_case(
    source: str | Path,
    out: str | Path,
    case_id: str | None = None,
    overrides: dict[str, str] | None = None,
    atlas: str = "none",
    keep_intermediate: bool = False,
    printer: Callable[[str], None] = print,
) -> PrepareResult:
    """Prepare one study (DICOM folder or NIfTI folder, any depth) into the case folder ``out``.

    Parameters
    ----------
    source : the study folder; read only.
    out : the case folder to create (must not exist; written all-or-nothing).
    case_id : ID of the case (default: DICOM patient ID, else the input folder's name).
    overrides : contrast (``t1n``, ``t1c``, ``t2w``, ``t2f``) -> a series number, description,
        UID or NIfTI file that is that contrast (skips identification for it).
    atlas : ``none`` (subject space, aligned to t1c) or ``mni152``.
    keep_intermediate : also keep ``intermediate/`` (converted series, the 1 mm working grid).
    printer : where progress lines go.

    Raises
    ------
    InputError
        Bad input (named file and problem, one line); nothing is written then.
    """
    began = time.perf_counter()
    source, out = Path(source), Path(out)
    if atlas not in ATLASES:
        raise ConfigError(f"--atlas must be one of {', '.join(ATLASES)}, got {atlas!r}")
    _check_paths(source, out)
    overrides = {m: v for m, v in (overrides or {}).items() if v}
    unknown = sorted(set(overrides) - set(MODALITIES))
    if unknown:
        raise ConfigError(f"unknown contrast(s) in overrides: {', '.join(unknown)}")
    times: dict[str, float] = {}
    t = time.perf_counter()
    kind, candidates = gather(source)
    selection = choose(candidates, overrides, source)
    case = case_id_for(source, candidates, case_id)
    times["identify_s"] = time.perf_counter() - t
    printer(f"{case}: {kind} input, {len(candidates)} series\n{selection.table()}")
    missing_parents = [p for p in out.parents if not p.exists()]
    try:
        return _prepare(source, out, kind, selection, case, atlas, keep_intermediate, times, began, printer)
    except BaseException:
        for parent in missing_parents:  # deepest first: leave no empty folder behind
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise


def _prepare(
    source, out, kind, selection, case, atlas, keep_intermediate, times, began, printer
) -> PrepareResult:
    warnings: list[str] = []
    with atomic_folder(out) as stage:
        work = stage / "intermediate"
        t = time.perf_counter()
        natives = _native_files(selection.chosen, kind, work)
        images, volumes, quality, integer = {}, {}, {}, True
        for m, path in natives.items():
            data, image = load_volume(path)
            label = selection.chosen[m].label()
            if min(data.shape) < MIN_SLICES:
                raise InputError(path, f"is a 2-D series (shape {data.shape}); {m} needs a 3-D volume")
            integer &= np.issubdtype(image.get_data_dtype(), np.integer)
            volumes[m], images[m] = (data, image), to_sitk(data, image.affine)
            quality[m] = series_quality(data, image.header.get_zooms())
            warnings += series_warnings(m, label, quality[m])
        times["convert_load_s"] = time.perf_counter() - t
        qc_dir = stage / "qc"
        qc.save_row(
            qc_dir / "1_inputs.png",
            "1. chosen series, native grids",
            [qc.Panel(m, qc.axial(d, im.affine)) for m, (d, im) in volumes.items()],
        )
        t = time.perf_counter()
        to_native = {"t1c": None}
        registrations = {"t1c": {"reference": True}}
        centre = np.mean(physical_box(grid_of(volumes["t1c"][1].affine, volumes["t1c"][0].shape)), axis=0)
        for m in ("t1n", "t2w", "t2f"):
            transform, info = rigid_register(images["t1c"], images[m])
            to_native[m] = transform
            shift = round(shift_at(matrix_of(transform), centre), 3)
            registrations[m] = {**info, **describe(matrix_of(transform)), "shift_at_t1c_centre_mm": shift}
            printer(
                f"  {m} -> t1c: rotation {registrations[m]['rotation_deg']:.2f} deg, "
                f"translation {registrations[m]['translation_mm']} mm, shift at t1c's centre {shift:.2f} mm"
            )
            warning = registration_warning(
                m, selection.chosen[m].label(), registrations[m]["rotation_deg"], shift
            )
            warnings += [warning] if warning else []
        times["register_s"] = time.perf_counter() - t
        lo, hi = physical_box(grid_of(volumes["t1c"][1].affine, volumes["t1c"][0].shape))
        working = canonical_grid(lo, hi, 1.0)
        registered = {m: resample(images[m], working, to_native[m]) for m in MODALITIES}
        qc.save_row(
            qc_dir / "2_registration.png",
            "2. rigid registration to t1c: checkerboards (t1c / contrast)",
            [
                qc.Panel(
                    f"t1c / {m}",
                    qc.checkerboard(
                        qc.axial(registered["t1c"], working.affine()),
                        qc.axial(registered[m], working.affine()),
                    ),
                )
                for m in ("t1n", "t2w", "t2f")
            ],
        )
        t = time.perf_counter()
        from glioseg.prepare.skullstrip import brain_mask

        mask = brain_mask(registered["t1n"], working.affine())
        if not mask.any():
            raise InputError(natives["t1n"], "skull stripping found no brain in the registered t1n")
        times["skullstrip_s"] = time.perf_counter() - t
        qc.save_row(
            qc_dir / "3_skullstrip.png",
            "3. skull stripping (deepbet on the registered t1n)",
            [
                qc.Panel(
                    f"{m}, brain outline",
                    qc.axial(registered[m], working.affine(), z),
                    qc.axial(mask.astype(np.uint8), working.affine(), z),
                )
                for m, z in (("t1n", 0.5), ("t1c", 0.5), ("t1n", 0.7), ("t2f", 0.5))
            ],
        )
        t = time.perf_counter()
        mask_image = to_sitk(mask.astype(np.float32), working.affine())
        atlas_info: dict = {"atlas": "none"}
        if atlas == "mni152":
            from glioseg.prepare.atlas import MNI_GRID, register_to_mni

            brain = to_sitk(registered["t1n"] * mask, working.affine())
            out_to_t1c, atlas_info = register_to_mni(brain)
            grid = MNI_GRID
        else:
            import SimpleITK as sitk

            index = np.argwhere(mask)
            centre_vox = (index.min(axis=0) + index.max(axis=0)) / 2
            centre = np.asarray(working.origin) + centre_vox * np.asarray(working.spacing)
            grid = centred_grid(centre)
            out_to_t1c = sitk.AffineTransform(3)  # identity: the output is t1c's space
        times["atlas_s"] = time.perf_counter() - t
        t = time.perf_counter()
        final_mask = resample(mask_image, grid, out_to_t1c) >= 0.5
        affine = grid.affine()
        written = {}
        for m in MODALITIES:
            chain = out_to_t1c if to_native[m] is None else compose(out_to_t1c, to_native[m])
            data = np.clip(resample(images[m], grid, chain), 0, None) * final_mask
            if integer and data.max() < np.iinfo(np.int16).max:
                data, dtype = np.rint(data), np.int16
            else:
                dtype = np.float32
            written[m] = data
            save_nifti(data, stage / f"{case}-{m}.nii.gz", affine=affine, dtype=dtype)
        save_nifti(
            final_mask.astype(np.uint8), stage / f"{case}-brainmask.nii.gz", affine=affine, dtype=np.uint8
        )
        t1c_data, t1c_image = volumes["t1c"]
        save_nifti(
            np.zeros(t1c_data.shape, np.uint8),
            stage / f"{case}-native-grid.nii.gz",
            reference=t1c_image,
            dtype=np.uint8,
        )
        times["resample_write_s"] = time.perf_counter() - t
        qc.save_row(
            qc_dir / "4_prepared.png",
            f"4. prepared case {case} ({grid.shape[0]}x{grid.shape[1]}x{grid.shape[2]}, 1 mm, atlas {atlas})",
            [qc.Panel(m, qc.axial(written[m], affine)) for m in MODALITIES],
        )
        qc.save_row(
            qc_dir / "before_after.png",
            "t1c before (native grid, skull on) and after prepare",
            [
                qc.Panel("before: native t1c", qc.axial(t1c_data, t1c_image.affine)),
                qc.Panel("after: prepared t1c", qc.axial(written["t1c"], affine)),
                qc.Panel("after: prepared t2f", qc.axial(written["t2f"], affine)),
            ],
            dpi=90,
        )
        if not keep_intermediate:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for m in MODALITIES:
                save_nifti(registered[m], work / f"registered.{m}.nii.gz", affine=working.affine())
            save_nifti(mask.astype(np.uint8), work / "registered.brainmask.nii.gz", affine=working.affine())
        times["total_s"] = time.perf_counter() - began
        record = {
            "format": RECORD_FORMAT,
            "case_id": case,
            "glioseg_version": __version__,
            "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "input": {"kind": kind, "folder": source.name},
            "series": selection.to_dict(),
            "chosen": {
                m: {"series": c.key, "name": c.name, "how": selection.how[m]}
                for m, c in selection.chosen.items()
            },
            "conventions": "transforms are 4x4 matrices on LPS mm points; 'X_to_Y' maps points of X to points of Y",
            "registration": {
                m: {
                    **registrations[m],
                    "t1c_to_native_lps": matrix_of(to_native[m]).tolist()
                    if to_native[m] is not None
                    else np.eye(4).tolist(),
                }
                for m in MODALITIES
            },
            "native_t1c": {
                "file": f"{case}-native-grid.nii.gz",
                "shape": list(t1c_data.shape),
                "affine_ras": np.asarray(t1c_image.affine).tolist(),
            },
            "working_grid": working.to_dict(),
            "output_grid": grid.to_dict(),
            "atlas": {**atlas_info, "output_to_t1c_lps": matrix_of(out_to_t1c).tolist()},
            "skullstrip": {
                "model": "deepbet 1.0.2 (weights inside its wheel)",
                "on": "registered t1n, 1 mm",
                "brain_ml": round(float(final_mask.sum()) / 1000.0, 1),
            },
            "interpolation": "linear for images (one resampling from each native file), nearest neighbour for labels",
            "quality": quality,
            "warnings": warnings,
            "times_s": {k: round(v, 2) for k, v in times.items()},
            "platform": {"python": platform.python_version(), "machine": platform.machine()},
        }
        write_text_atomic(record_path(stage, case), json.dumps(record, indent=1) + "\n")
    for warning in warnings:
        printer(f"{case}: WARNING: {warning}")
    printer(f"{case}: prepared in {times['total_s']:.1f} s -> {out}")
    return PrepareResult(folder=out, case_id=case, record=record, warnings=warnings)
