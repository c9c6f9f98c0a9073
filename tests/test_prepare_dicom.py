"""DICOM studies written with pydicom are converted and identified; bad inputs are one-line errors that write nothing."""

from __future__ import annotations

import gzip
import random
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from glioseg.errors import GliosegError
from glioseg.prepare.dicom import convert_series
from glioseg.prepare.pipeline import prepare_case
from glioseg.prepare.series import choose
from glioseg.prepare.sources import gather
from tests.dicom_writer import write_series

SHAPE = (40, 36, 24)
AFFINE = np.array([[-1.2, 0, 0, 30.0], [0, 1.2, 0, -40.0], [0, 0, 4.0, -20.0], [0, 0, 0, 1]])
SERIES = {  # number: (description, tags)
    1: (
        "3-plane localizer",
        {"EchoTime": 2, "RepetitionTime": 8, "ImageType": ["ORIGINAL", "PRIMARY", "LOCALIZER"]},
    ),
    2: ("AX T2 TSE", {"EchoTime": 100, "RepetitionTime": 4000}),
    3: ("AX FLAIR", {"EchoTime": 120, "RepetitionTime": 9000, "InversionTime": 2500}),
    4: ("AX T1 SE", {"EchoTime": 10, "RepetitionTime": 500}),
    6: ("AX T1 SE", {"EchoTime": 10, "RepetitionTime": 500, "ContrastBolusAgent": "GADOVIST"}),
}


def _volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x, y, z = np.indices(SHAPE)
    head = ((x - 20) / 16) ** 2 + ((y - 18) / 14) ** 2 + ((z - 12) / 10) ** 2 < 1
    return (head * (400 + 100 * seed) + rng.integers(0, 30, SHAPE)).astype(np.int16)


def write_study(root: Path, skip: tuple[int, ...] = (), patient: str = "PAT-001") -> Path:
    """Five series (one a localiser), files shuffled across nested folders, no extensions."""
    rng = random.Random(0)
    for number, (description, tags) in SERIES.items():
        if number in skip:
            continue
        data = _volume(number)[:, :, :3] if number == 1 else _volume(number)
        names = [f"{rng.randrange(10**8):08d}" for _ in range(data.shape[2])]
        write_series(data, AFFINE, root / "tmp", number, description, patient=patient, names=names, **tags)
    files = sorted((root / "tmp").iterdir())
    rng.shuffle(files)
    for index, f in enumerate(files):
        target = root / "DICOM" / f"d{index % 3}" / f"sub{index % 2}" / f.name
        target.parent.mkdir(parents=True, exist_ok=True)
        f.rename(target)
    (root / "tmp").rmdir()
    return root


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    return write_study(tmp_path_factory.mktemp("study"))


def test_series_are_grouped_identified_and_converted(study, tmp_path):
    kind, candidates = gather(study)
    assert kind == "dicom" and [c.key for c in candidates] == ["1", "2", "3", "4", "6"]
    assert all(c.slices == (3 if c.key == "1" else SHAPE[2]) for c in candidates)
    selection = choose(candidates, {}, study)
    assert {m: c.key for m, c in selection.chosen.items()} == {"t1n": "4", "t1c": "6", "t2w": "2", "t2f": "3"}
    assert candidates[0].reason.startswith("excluded: localiser")
    converted = nib.as_closest_canonical(nib.load(convert_series(selection.chosen["t2f"], tmp_path)))
    original = nib.as_closest_canonical(nib.Nifti1Image(_volume(3), AFFINE))
    assert np.allclose(converted.affine, original.affine, atol=1e-3)
    assert np.array_equal(np.asarray(converted.dataobj), np.asarray(original.dataobj))


def _nifti(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, AFFINE), str(path))
    return path


def _bad_mixed(study, tmp):
    shutil.copytree(study, tmp / "in")
    write_series(_volume(9), AFFINE, tmp / "in" / "other", 9, "AX T1", patient="PAT-002", EchoTime=10)
    return tmp / "in", {}, "more than one patient"


def _bad_missing(study, tmp):
    return write_study(tmp / "in", skip=(3,)), {}, "no series identified as t2f"


def _bad_ambiguous(study, tmp):
    shutil.copytree(study, tmp / "in")
    write_series(_volume(7), AFFINE, tmp / "in" / "x", 7, "COR T1 POST", EchoTime=12, RepetitionTime=600)
    return tmp / "in", {}, "2 series could be t1c"


def _bad_corrupt_dicom(study, tmp):
    shutil.copytree(study, tmp / "in")
    victim = sorted((tmp / "in").rglob("*"))[-1]
    victim.write_bytes(victim.read_bytes()[:200])
    return tmp / "in", {}, "truncated DICOM file"


def _bad_no_dicom(study, tmp):
    (tmp / "in").mkdir()
    (tmp / "in" / "notes.txt").write_text("not an image")
    return tmp / "in", {}, "no DICOM or NIfTI file found"


def _nifti_study(tmp):
    for m, seed in (("t1", 4), ("t1c", 6), ("t2", 2), ("flair", 3)):
        _nifti(tmp / "in" / f"case_{m}.nii.gz", _volume(seed))
    return tmp / "in"


def _bad_2d(study, tmp):
    root = _nifti_study(tmp)
    _nifti(root / "single_slice.nii.gz", _volume(6)[:, :, :1])
    return root, {"t1c": "single_slice.nii.gz"}, "2-D series"


def _bad_corrupt_nifti(study, tmp):
    root = _nifti_study(tmp)
    target = root / "case_t2.nii.gz"
    raw = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(raw)[: len(gzip.compress(raw)) // 2])
    return root, {}, "truncated"


def _bad_missing_folder(study, tmp):
    return tmp / "nowhere", {}, "input folder not found"


def _bad_out_inside_input(study, tmp):
    shutil.copytree(study, tmp / "in")
    return tmp / "in", {"out": tmp / "in" / "case"}, "lies inside the input"


def _bad_override(study, tmp):
    shutil.copytree(study, tmp / "in")
    return tmp / "in", {"t1c": "42"}, "--t1c 42: no such series"


BAD = [
    _bad_mixed,
    _bad_missing,
    _bad_ambiguous,
    _bad_corrupt_dicom,
    _bad_no_dicom,
    _bad_2d,
    _bad_corrupt_nifti,
    _bad_missing_folder,
    _bad_out_inside_input,
    _bad_override,
]


@pytest.mark.parametrize("make", BAD, ids=[f.__name__[5:] for f in BAD])
def test_bad_inputs_are_one_line_errors_and_write_nothing(make, study, tmp_path):
    # Nothing is stood in: every bad input here must stop before registration and skull stripping
    # (a case that got through would run the real deepbet and then fail on pytest.raises).
    root, options, expected = make(study, tmp_path)
    out = options.pop("out", tmp_path / "out" / "case")
    before = sorted(p for p in tmp_path.rglob("*"))
    with pytest.raises(GliosegError) as err:
        prepare_case(root, out, overrides=options, printer=lambda _: None)
    message = str(err.value)
    assert expected in message and "\n" not in message
    assert message.split(":")[0], message  # names a file or folder first
    assert not out.exists()
    assert sorted(p for p in tmp_path.rglob("*")) == before  # nothing written, not even a staging folder


@pytest.mark.parametrize("kind", ["dicom", "nifti"])
def test_a_missing_flair_is_one_error_line_naming_the_folder_the_series_found_and_the_override(
    kind, tmp_path
):
    from typer.testing import CliRunner

    from glioseg.cli import app

    if kind == "dicom":  # the study without its FLAIR series (number 3)
        root, found = write_study(tmp_path / "in", skip=(3,)), ("1 (3-plane localizer)", "2 (AX T2 TSE)")
    else:  # a NIfTI folder without a t2f file
        root, found = _nifti_study(tmp_path), ("case_t1.nii.gz", "case_t2.nii.gz")
        (root / "case_flair.nii.gz").unlink()
    out = tmp_path / "out" / "case"
    before = sorted(tmp_path.rglob("*"))
    result = CliRunner().invoke(app, ["prepare", str(root), "--out", str(out)])
    assert result.exit_code == 1, result.output
    assert result.stdout == "" and "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith(f"error: {root}: "), result.stderr
    message = result.stderr
    assert "no series identified as t2f" in message and "name one with --t2f SERIES" in message
    assert all(f"{label}: " in message for label in found), message  # every series found, with its verdict
    assert ": t2w" in message and ": t1c" in message and ": t1n" in message
    assert ("excluded: localiser" in message) == (kind == "dicom")
    assert not out.exists() and sorted(tmp_path.rglob("*")) == before  # nothing written
