"""glioseg prepare end to end on a DICOM study made of a real BraTS case: conversion, identification,
registration, the real deepbet skull stripping and the quality warnings, with nothing stood in.

The study is written with pydicom from Brats18_CBICA_ABM_1's four contrasts (2 mm slices, cropped
around the head to keep the test short): one series per contrast, a 3-slice localiser, files
shuffled across nested folders, half of them with a ``.dcm`` extension. Two series carry known
faults: the T2 series' header places it 35 mm to the patient's left of where the head is (the
patient moved or was repositioned; registration must take it back and warn), and the FLAIR series
has a Nyquist ghost of 20 % of the image along its second voxel axis (made with glioseg's own
degrade code; prepare must warn about it).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.synthetic.degrade import ghosting
from tests.dicom_writer import write_series

CASE = "Brats18_CBICA_ABM_1"
STEP = 2  # every second slice: 2 mm slices, no thick-slice warning
T2_SHIFT_MM = 35.0  # along x (RAS: towards the patient's left)
GHOST = 0.20  # well above the warning's threshold (a test of the path, not of its sensitivity)
SERIES = {  # BraTS file suffix: (series number, description, tags)
    "t2": (2, "AX T2 TSE", {"EchoTime": 100, "RepetitionTime": 4000}),
    "flair": (3, "AX T2 FLAIR", {"EchoTime": 120, "RepetitionTime": 9000, "InversionTime": 2500}),
    "t1": (4, "AX T1 SE", {"EchoTime": 10, "RepetitionTime": 500}),
    "t1ce": (7, "AX T1 SE", {"EchoTime": 10, "RepetitionTime": 500, "ContrastBolusAgent": "GADOVIST"}),
}


def _write_study(case_dir: Path, root: Path) -> tuple[nib.Nifti1Image, tuple[slice, ...]]:
    """The DICOM study; returns the BraTS t1 image and the crop that was written."""
    t1 = nib.load(str(case_dir / f"{CASE}_t1.nii.gz"))
    brain = np.argwhere(np.asarray(t1.dataobj) != 0)
    lo, hi = np.maximum(brain.min(axis=0) - 25, 0), np.minimum(brain.max(axis=0) + 26, t1.shape)
    crop = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2], STEP))
    affine = t1.affine @ np.array(
        [[1, 0, 0, lo[0]], [0, 1, 0, lo[1]], [0, 0, STEP, lo[2]], [0, 0, 0, 1]], dtype=float
    )
    rng = random.Random(18)
    tmp = root / "tmp"
    localiser = np.asarray(t1.dataobj)[crop][:, :, ::20][:, :, :3]
    write_series(
        localiser,
        affine,
        tmp,
        1,
        "localizer",
        patient="ABM-1",
        ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"],
    )
    for suffix, (number, description, tags) in SERIES.items():
        data = np.asarray(nib.load(str(case_dir / f"{CASE}_{suffix}.nii.gz")).dataobj)[crop]
        moved = affine.copy()
        if suffix == "t2":
            moved[0, 3] += T2_SHIFT_MM
        if suffix == "flair":
            data = ghosting(data.astype(np.float32), 1, GHOST)
        names = [f"{rng.randrange(10**9):09d}" + (".dcm" if k % 2 else "") for k in range(data.shape[2])]
        write_series(np.rint(data), moved, tmp, number, description, names=names, patient="ABM-1", **tags)
    files = sorted(tmp.iterdir())
    rng.shuffle(files)
    for index, f in enumerate(files):
        target = root / "study" / f"s{index % 4}" / f"x{index % 3}" / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        f.rename(target)
    tmp.rmdir()
    return t1, crop


@pytest.mark.realdata
@pytest.mark.slow
def test_a_dicom_study_of_a_real_case_is_prepared_with_the_real_skull_stripping(real_data, tmp_path):
    t1, _ = _write_study(real_data / "brats2018" / CASE, tmp_path)
    out = tmp_path / "case"
    result = CliRunner().invoke(app, ["prepare", str(tmp_path / "study"), "--out", str(out)])
    assert result.exit_code == 0, result.output
    record = json.loads((out / "ABM-1-prepare.json").read_text())

    # the chosen series table: every contrast identified from its tags and name, the localiser excluded
    assert {m: (v["series"], v["how"]) for m, v in record["chosen"].items()} == {
        "t1n": ("4", "identified"),
        "t1c": ("7", "identified"),
        "t2w": ("2", "identified"),
        "t2f": ("3", "identified"),
    }
    series = {s["series"]: s for s in record["series"]}
    assert sorted(series) == ["1", "2", "3", "4", "7"]
    assert series["1"]["chosen_for"] is None and series["1"]["why"].startswith("excluded: localiser")
    assert "contrast-agent tag set" in series["7"]["why"]
    assert all(series[k]["slices"] > 60 for k in "2347")

    # BraTS-named case on the 240 x 240 x 155, 1 mm grid
    images = {m: nib.load(str(out / f"ABM-1-{m}.nii.gz")) for m in ("t1n", "t1c", "t2w", "t2f")}
    assert all(
        i.shape == (240, 240, 155) and nib.aff2axcodes(i.affine) == ("L", "P", "S") for i in images.values()
    )

    # deepbet's mask against the case's own brain (BraTS's non-zero region), on the prepared grid
    from nibabel.processing import resample_from_to

    mask_image = nib.load(str(out / "ABM-1-brainmask.nii.gz"))
    mask = np.asarray(mask_image.dataobj) > 0
    brain_image = nib.Nifti1Image((np.asarray(t1.dataobj) != 0).astype(np.uint8), t1.affine)
    brain = np.asarray(resample_from_to(brain_image, mask_image, order=0).dataobj) > 0
    dice = 2 * np.count_nonzero(mask & brain) / (np.count_nonzero(mask) + np.count_nonzero(brain))
    assert dice >= 0.9, dice

    # the T2 series' 35 mm displacement is taken back (within 2 mm) and warned about
    t2 = record["registration"]["t2w"]
    assert abs(t2["shift_at_t1c_centre_mm"] - T2_SHIFT_MM) < 2.0, t2
    assert record["registration"]["t1n"]["shift_at_t1c_centre_mm"] < 2.0
    assert record["registration"]["t2f"]["shift_at_t1c_centre_mm"] < 2.0
    truth = nib.load(str(real_data / "brats2018" / CASE / f"{CASE}_t2.nii.gz"))
    t2_truth = np.asarray(resample_from_to(truth, mask_image, order=1).dataobj, dtype=np.float32)[
        mask & brain
    ]
    t2_prepared = np.asarray(images["t2w"].dataobj, dtype=np.float32)[mask & brain]
    assert np.corrcoef(t2_truth, t2_prepared)[0, 1] > 0.9  # the T2 lies where the case's own T2 lies

    # warnings: exactly the two faults, in the record and printed
    warnings = record["warnings"]
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("t2f (3 (AX T2 FLAIR)): heavy motion or ghosting"), warnings
    assert warnings[1].startswith("t2w (2 (AX T2 TSE)): registration to t1c needed a large correction")
    assert record["quality"]["t2f"]["ghost_ratio"] > 0.06
    assert all(record["quality"][m]["ghost_ratio"] < 0.03 for m in ("t1n", "t1c", "t2w"))
    assert all(f"warning: {w}" in " ".join(result.stderr.split()) for w in warnings), result.stderr
