"""Features of whole cases and folders: label sources, bad cases, the features CLI."""

import math
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.radiomics import (
    case_features,
    cohort_features,
    feature_names,
    find_label_file,
    zscore_in_brain,
)
from glioseg.data.synthetic import generate_case
from glioseg.errors import InputError

from .conftest import SMALL_SHAPE, SMALL_SPACING

runner = CliRunner()


@pytest.fixture(scope="module")
def case():
    return generate_case(4, 2, "ssa", SMALL_SHAPE, SMALL_SPACING)


def test_case_features_names_and_whole_tumour_component(case):
    f = case_features(case.image, case.label, (SMALL_SPACING,) * 3)
    assert list(f) == feature_names(include_quality=True)
    assert len(feature_names(include_quality=False)) == 19 + 4 * 18 + 4 * 6
    # independent check with scipy: largest 26-connected component of WT
    components, n = ndimage.label(case.label > 0, structure=np.ones((3, 3, 3)))
    largest = np.bincount(components.ravel())[1:].max()
    assert f["shape_wt_volume_ml"] == pytest.approx(largest * SMALL_SPACING**3 / 1000)
    assert f["shape_wt_components"] == n
    assert all(
        math.isfinite(f[name])
        for name in feature_names(include_quality=False)
        if name != "shape_netc_tc_ratio"
    )


def test_intensity_features_ignore_scanner_scaling(case):
    spacing = (SMALL_SPACING,) * 3
    base = case_features(case.image, case.label, spacing)
    # float64 so that the rescaled integer intensities sit on the same bin edges up to rounding
    scaled = case.image.astype(np.float64)
    scaled[1] *= 3.7  # t1c on another scanner scale
    other = case_features(scaled, case.label, spacing)
    for name, value in base.items():
        assert other[name] == pytest.approx(value, rel=1e-4, abs=1e-6), name


def test_zscore_uses_brain_voxels_of_any_channel():
    image = np.zeros((2, 3, 1, 1), np.float32)
    image[0, :, 0, 0] = [0, 2, 4]
    image[1, :, 0, 0] = [1, 0, 0]  # the first voxel is brain because channel 1 is non-zero there
    z = zscore_in_brain(image)
    assert z[0, :, 0, 0] == pytest.approx(np.array([-2, 0, 2]) / np.std([0, 2, 4]))


def test_empty_tumour_gives_nan_texture_not_a_crash(case):
    f = case_features(case.image, np.zeros_like(case.label), (SMALL_SPACING,) * 3)
    assert f["shape_wt_volume_ml"] == 0
    assert math.isnan(f["glcm_t1c_contrast"]) and math.isnan(f["firstorder_t2f_mean"])
    assert math.isfinite(f["quality_snr"])


@pytest.fixture()
def unlabelled(small_cohort, tmp_path):
    """Copy of the small cohort where two cases lost their ground truth, and a prediction folder."""
    data = tmp_path / "data"
    shutil.copytree(small_cohort, data)
    folders = sorted(p for p in data.iterdir() if p.is_dir())
    preds = tmp_path / "preds"
    preds.mkdir()
    for folder in folders[:2]:
        seg = folder / f"{folder.name}-seg.nii.gz"
        shutil.move(seg, preds / f"{folder.name}-pred.nii.gz")
    return data, preds, [f.name for f in folders]


def test_cases_without_truth_use_the_prediction(unlabelled):
    data, preds, ids = unlabelled
    result = cohort_features(data, labels_dir=preds)
    assert not result.errors
    frame = result.to_frame()
    assert frame["case_id"].tolist() == sorted(ids)
    assert frame.set_index("case_id")["label_source"].to_dict() == {
        ids[0]: "labels",
        ids[1]: "labels",
        ids[2]: "truth",
        ids[3]: "truth",
    }
    without = cohort_features(data)
    assert len(without.rows) == 2 and len(without.errors) == 2
    assert "has no segmentation; give a label folder (--labels)" in str(without.errors[0])


def test_label_source_labels_needs_a_map_for_every_case(unlabelled):
    data, preds, ids = unlabelled
    result = cohort_features(data, labels_dir=preds, source="labels")
    assert [r.case_id for r in result.rows] == ids[:2]
    assert len(result.errors) == 2
    assert str(result.errors[0]) == f"{preds}: no label map for case {ids[2]}"


def test_prediction_on_another_grid_is_rejected_by_name(unlabelled):
    data, preds, ids = unlabelled
    bad = preds / f"{ids[0]}-pred.nii.gz"
    img = nib.load(bad)
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj)[:, :, :-2], img.affine), bad)
    result = cohort_features(data, labels_dir=preds)
    assert len(result.rows) == 3
    (error,) = result.errors
    assert isinstance(error, InputError) and str(error).startswith(str(bad))
    assert "shape" in str(error) and "\n" not in str(error)


def test_find_label_file_names(tmp_path):
    (tmp_path / "A-1.nii.gz").write_bytes(b"x")
    (tmp_path / "A-10_pred.nii").write_bytes(b"x")
    (tmp_path / "B").mkdir()
    (tmp_path / "B" / "B-seg.nii.gz").write_bytes(b"x")
    assert find_label_file(tmp_path, "A-1").name == "A-1.nii.gz"
    assert find_label_file(tmp_path, "A-10").name == "A-10_pred.nii"
    assert find_label_file(tmp_path, "B").name == "B-seg.nii.gz"
    assert find_label_file(tmp_path, "A") is None
    (tmp_path / "A-1-pred.nii.gz").write_bytes(b"x")
    with pytest.raises(InputError, match="several label maps match"):
        find_label_file(tmp_path, "A-1")


def test_features_cli_writes_good_cases_and_fails_on_bad_ones(unlabelled, tmp_path):
    data, preds, ids = unlabelled
    out = tmp_path / "f.csv"
    result = runner.invoke(app, ["features", str(data), "--out", str(out)])
    assert result.exit_code == 1
    assert "2 case(s) failed" in result.output
    assert result.output.count("error:") == 2
    frame = pd.read_csv(out)
    assert frame["case_id"].tolist() == ids[2:]
    result = runner.invoke(
        app, ["features", str(data), "--out", str(out), "--labels", str(preds), "--no-quality"]
    )
    assert result.exit_code == 0, result.output
    frame = pd.read_csv(out)
    assert len(frame) == 4 and not any(c.startswith("quality_") for c in frame.columns)
    assert list(frame.columns) == ["case_id", "label_source", *feature_names(include_quality=False)]


def test_features_cli_reports_a_missing_folder(tmp_path):
    result = runner.invoke(app, ["features", str(tmp_path / "nope"), "--out", str(tmp_path / "f.csv")])
    assert result.exit_code == 1
    assert "folder not found" in result.output
    assert not (tmp_path / "f.csv").exists()


@pytest.mark.realdata
def test_real_case_with_truth_and_with_a_prediction(real_data):
    from glioseg.data.cases import discover_cases, load_case
    from glioseg.data.io import load_label

    case = discover_cases(real_data / "brats2018" / "Brats18_CBICA_ABM_1").cases[0]
    data = load_case(case)
    truth = case_features(data.image, data.label, data.spacing, include_quality=False)
    pred, _ = load_label(real_data / "brats2018-predictions" / "Brats18_CBICA_ABM_1-pred.nii.gz")
    predicted = case_features(data.image, pred, data.spacing, include_quality=False)
    components, _ = ndimage.label(data.label > 0, structure=np.ones((3, 3, 3)))
    assert truth["shape_wt_volume_ml"] == pytest.approx(np.bincount(components.ravel())[1:].max() / 1000)
    assert 1 < truth["shape_wt_volume_ml"] < 500 and 0 < truth["shape_sphericity"] < 1
    # a good prediction (WT Dice > 0.68 for every case in this set) gives a similar tumour
    assert predicted["shape_wt_volume_ml"] == pytest.approx(truth["shape_wt_volume_ml"], rel=0.5)
    assert truth["firstorder_t2f_mean"] > 0.5  # the tumour is FLAIR-bright relative to the brain
