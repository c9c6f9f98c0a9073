"""Per-case reports of glioseg predict --report."""

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.report.case_report import lesion_summary, quality_warnings, uncertainty_score

from .conftest import write_random_model

runner = CliRunner()


def test_lesion_summary_counts_components_and_volumes():
    labels = np.zeros((20, 20, 20), np.uint8)
    labels[2:6, 2:6, 2:6] = 2  # 64 voxels of edema
    labels[3:5, 3:5, 3:5] = 3  # 8 voxels of ET inside it
    labels[12:14, 12:14, 12:14] = 1  # a separate 8-voxel NETC lesion
    summary = lesion_summary(labels, (2.0, 2.0, 2.0))  # 8 mm^3 per voxel
    assert summary["WT"]["lesions"] == 2 and summary["WT"]["volume_ml"] == pytest.approx(72 * 8 / 1000)
    assert summary["TC"]["lesions"] == 2 and summary["ET"]["lesions"] == 1
    assert summary["WT"]["lesion_volumes_ml"] == pytest.approx([64 * 8 / 1000, 8 * 8 / 1000])
    assert summary["SNFH"]["volume_ml"] == pytest.approx(56 * 8 / 1000)


def test_quality_warnings():
    rng = np.random.default_rng(0)
    clean = np.zeros((4, 30, 30, 30), np.float32)
    clean[:, 5:25, 5:25, 5:25] = 100 + rng.normal(0, 2, (4, 20, 20, 20))
    warnings, proxies = quality_warnings(clean, (1.0, 1.0, 1.0))
    assert warnings == [] and proxies["t1c"]["snr"] > 20
    noisy = clean.copy()
    noisy[:, 5:25, 5:25, 5:25] += rng.normal(0, 25, (4, 20, 20, 20))
    warnings, _ = quality_warnings(noisy, (1.0, 1.0, 5.0))
    assert any("worse than 3 mm" in w for w in warnings) and any("signal-to-noise" in w for w in warnings)


def test_uncertainty_score_is_mean_variance_around_the_tumour():
    prob = np.zeros((3, 4, 4, 4), np.float32)
    prob[0, :2] = 0.9
    var = np.zeros_like(prob)
    var[:, 0] = 0.2
    score = uncertainty_score(var, prob)
    assert score["WT"] == pytest.approx(0.1) and uncertainty_score(None, prob) is None


def test_predict_report_for_an_ensemble_and_a_single_model(small_cohort, tmp_path):
    a = write_random_model(tmp_path / "a", seed=1)
    b = write_random_model(tmp_path / "b", seed=2)
    case = small_cohort / "SynSSA-s7-0001"
    out = tmp_path / "ens"
    result = runner.invoke(
        app,
        [
            "predict",
            str(case),
            "--model",
            str(a),
            "--model",
            str(b),
            "--out",
            str(out),
            "--tta",
            "none",
            "--report",
        ],
    )
    assert result.exit_code == 0, result.output
    page = (out / "SynSSA-s7-0001_report.html").read_text()
    assert (
        "not for clinical use" in page
        and "Ensemble of 2 members" in page
        and "data:image/png;base64," in page
    )
    assert "worse than 3 mm" in page  # the cohort is at 4 mm
    # a clinician reads which way the images are shown and what each quality number means
    from glioseg.report.case_report import QUALITY_EXPLAINED
    from glioseg.report.preview import CONVENTION

    assert CONVENTION.replace("'", "&#x27;") in page or CONVENTION in page
    assert all(phrase[-30:] in page for phrase in QUALITY_EXPLAINED) and "(hint)" not in page
    uncertainty = nib.load(out / "SynSSA-s7-0001_uncertainty.nii.gz")
    reference = nib.load(case / "SynSSA-s7-0001-t1n.nii.gz")
    assert uncertainty.shape == reference.shape and np.allclose(uncertainty.affine, reference.affine)
    values = np.asarray(uncertainty.dataobj)
    assert values.min() >= 0 and values.max() <= 0.25 + 1e-6 and values.max() > 0
    single = tmp_path / "single"
    result = runner.invoke(
        app, ["predict", str(case), "--model", str(a), "--out", str(single), "--tta", "none", "--report"]
    )
    assert result.exit_code == 0, result.output
    assert "Not available: a single model" in (single / "SynSSA-s7-0001_report.html").read_text()
    assert not (single / "SynSSA-s7-0001_uncertainty.nii.gz").exists()
