"""``glioseg degrade``: BraTS-Africa-like copies of cases (deterministic, labels and background untouched)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.cases import discover_cases, load_case
from glioseg.data.degrade import SEVERITIES, degrade_case, degrade_volume
from glioseg.data.synthetic import generate_case, write_case
from glioseg.data.synthetic.degrade import LowQualityProfile
from glioseg.errors import InputError

from .conftest import SMALL_SHAPE

runner = CliRunner()


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.glob("*.nii.gz"))}


@pytest.fixture()
def two_cases(tmp_path) -> Path:
    """Two small adult cases at 1.5 mm, so that 4-6 mm thick slices span several voxels."""
    root = tmp_path / "in"
    for index in (1, 2):
        write_case(generate_case(5, index, "adult", SMALL_SHAPE, 1.5), root)
    return root


def test_same_seed_same_copy_alone_or_in_a_batch_and_another_seed_differs(two_cases, tmp_path):
    cases = discover_cases(two_cases).cases
    batch = [degrade_case(c, tmp_path / "batch", seed=3) for c in cases]
    alone = degrade_case(cases[1], tmp_path / "alone", seed=3)
    other = degrade_case(cases[1], tmp_path / "other", seed=4)
    assert _digest(alone.folder) == _digest(batch[1].folder)
    images = [n for n in _digest(alone.folder) if not n.endswith("-seg.nii.gz")]
    changed = [n for n in images if _digest(alone.folder)[n] != _digest(other.folder)[n]]
    assert changed == images


def test_labels_untouched_background_zero_grid_and_type_kept_brain_changed(one_case, tmp_path):
    case = discover_cases(one_case).cases[0]
    copy = degrade_case(case, tmp_path / "out", seed=0, severity="severe")
    assert (copy.folder / case.label.name).read_bytes() == case.label.read_bytes()
    for modality, source in case.images.items():
        before, after = nib.load(source), nib.load(copy.folder / source.name)
        assert after.shape == before.shape
        np.testing.assert_array_equal(after.affine, before.affine)
        assert after.get_data_dtype() == before.get_data_dtype()
        old, new = np.asarray(before.dataobj), np.asarray(after.dataobj)
        assert not new[old == 0].any(), modality
        brain = old != 0
        assert np.abs(new[brain].astype(float) - old[brain]).mean() > 0.05 * np.abs(old[brain]).mean()
    assert set(copy.record["modalities"]) == set(case.images)
    assert copy.record["severity"] == "severe"


def test_severity_orders_the_noise():
    """Severe copies are noisier than mild ones (SNR ranges do not overlap)."""
    mild, severe = SEVERITIES["mild"], SEVERITIES["severe"]
    assert mild.snr[0] > severe.snr[1]
    volume = np.zeros((40, 40, 40), np.float32)
    volume[8:32, 8:32, 8:32] = 100.0
    flat = LowQualityProfile(thick_slice_probability=0, ghost_probability=0, motion_probability=0)
    noisy = {}
    for name, profile in (("mild", mild), ("severe", severe)):
        profile = LowQualityProfile(**{**flat.__dict__, "snr": profile.snr, "bias_strength": (0.0, 0.0)})
        out, record = degrade_volume(volume, (1.0, 1.0, 1.0), np.random.default_rng(0), profile)
        inner = out[12:28, 12:28, 12:28]
        noisy[name] = inner.std() / inner.mean()
        assert not out[volume == 0].any()
    assert noisy["severe"] > 2 * noisy["mild"]


def test_negative_intensities_keep_their_scale_and_zero_background():
    volume = np.zeros((24, 24, 24), np.float32)
    volume[4:20, 4:20, 4:20] = np.random.default_rng(1).normal(0.0, 1.0, (16, 16, 16))
    out, _ = degrade_volume(volume, (1.0, 1.0, 1.0), np.random.default_rng(0), SEVERITIES["mild"])
    assert not out[volume == 0].any()
    assert out[volume != 0].min() < 0
    assert abs(out[volume != 0].mean() - volume[volume != 0].mean()) < 1.0


def test_existing_copy_is_refused_and_nothing_half_written(one_case, tmp_path):
    case = discover_cases(one_case).cases[0]
    degrade_case(case, tmp_path / "out")
    with pytest.raises(InputError, match="already exists"):
        degrade_case(case, tmp_path / "out")
    broken = tmp_path / "broken"
    shutil.copytree(one_case, broken / one_case.name)
    bad = next((broken / one_case.name).glob("*-t2w.nii.gz"))
    bad.write_bytes(bad.read_bytes()[:200])  # truncated gzip stream
    with pytest.raises(InputError, match=bad.name):
        degrade_case(discover_cases(broken).cases[0], tmp_path / "out2")
    assert not (tmp_path / "out2").exists() or not any((tmp_path / "out2").iterdir())


def test_cli_batch_one_bad_case_does_not_stop_the_others_and_rerun_keeps(two_cases, tmp_path):
    bad = next(sorted(two_cases.iterdir())[0].glob("*-t1c.nii.gz"))
    bad.write_bytes(b"not a nifti")
    out = tmp_path / "out"
    result = runner.invoke(app, ["degrade", str(two_cases), "--out", str(out), "--seed", "1"])
    assert result.exit_code == 1, result.output
    assert bad.name in result.output
    written = [p for p in out.iterdir()]
    assert [p.name for p in written] == [sorted(two_cases.iterdir())[1].name]
    assert (written[0] / f"{written[0].name}-degrade.png").stat().st_size > 10_000
    again = runner.invoke(app, ["degrade", str(two_cases), "--out", str(out), "--seed", "1"])
    assert "kept" in again.output


def test_cli_refuses_an_output_inside_the_input(two_cases):
    result = runner.invoke(app, ["degrade", str(two_cases), "--out", str(two_cases / "degraded")])
    assert result.exit_code == 1
    assert "inside the input" in result.output
    assert not (two_cases / "degraded").exists()


@pytest.mark.realdata
def test_real_case_degrades_and_still_loads(real_data, tmp_path):
    case = discover_cases(real_data / "brats2018" / "Brats18_CBICA_ABM_1").cases[0]
    copy = degrade_case(case, tmp_path, seed=0)
    before, after = load_case(case), load_case(discover_cases(copy.folder).cases[0])
    np.testing.assert_array_equal(after.label, before.label)
    assert not after.image[before.image == 0].any()
    thick = [r["thick_slice"]["factor"] for r in copy.record["modalities"].values() if "thick_slice" in r]
    assert thick and all(f >= 4 for f in thick)  # 4-6 mm slices on a 1 mm grid
