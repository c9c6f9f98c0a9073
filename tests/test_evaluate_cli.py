"""``glioseg evaluate`` and the batch runner: file matching, outputs, bad inputs, parallel runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.evaluate import evaluate_labels
from glioseg.evaluate.matching import ground_truth_case_id, match_cases, prediction_case_id
from glioseg.evaluate.runner import evaluate, write_outputs

runner = CliRunner()
SHAPE = (24, 24, 20)
AFFINE = np.diag([1.0, 1.0, 1.0, 1.0])


def _labels(seed: int, legacy: bool = False) -> np.ndarray:
    """A lesion with NETC core, ET rim and edema, plus a satellite, placed by ``seed``."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(SHAPE, np.uint8)
    x, y, z = rng.integers(5, 9, 3)
    lab[x : x + 10, y : y + 10, z : z + 8] = 2
    lab[x + 2 : x + 8, y + 2 : y + 8, z + 2 : z + 6] = 3
    lab[x + 4 : x + 6, y + 4 : y + 6, z + 3 : z + 5] = 1
    lab[1:5, 19:23, 15:19] = rng.integers(1, 4)
    if legacy:
        lab[lab == 3] = 4
    return lab


def _save(labels: np.ndarray, path: Path, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(labels, affine), str(path))
    return path


@pytest.fixture()
def cohort(tmp_path) -> tuple[Path, Path]:
    """Three good pairs in the three prediction namings, one GT in legacy naming/labels."""
    gt, pred = tmp_path / "gt", tmp_path / "pred"
    _save(_labels(1), gt / "BraTS-SSA-00002-000" / "BraTS-SSA-00002-000-seg.nii.gz")
    _save(np.roll(_labels(1), 1, axis=0), pred / "BraTS-SSA-00002-000.nii.gz")
    _save(_labels(2), gt / "BraTS-SSA-00003-000" / "BraTS-SSA-00003-000-seg.nii.gz")
    _save(_labels(3), pred / "BraTS-SSA-00003-000-seg.nii.gz")
    _save(_labels(4, legacy=True), gt / "Brats18_CBICA_ABM_1" / "Brats18_CBICA_ABM_1_seg.nii.gz")
    _save(_labels(4), gt / "Brats18_CBICA_ABM_1" / "Brats18_CBICA_ABM_1_flair.nii.gz")  # an image, not a GT
    _save(np.roll(_labels(4, legacy=True), 2, axis=2), pred / "Brats18_CBICA_ABM_1-pred.nii.gz")
    return pred, gt


def test_case_ids_from_file_names():
    assert prediction_case_id("BraTS-SSA-00002-000.nii.gz") == "BraTS-SSA-00002-000"
    assert prediction_case_id("BraTS-SSA-00002-000-seg.nii") == "BraTS-SSA-00002-000"
    assert prediction_case_id("Brats18_CBICA_ABM_1-pred.nii.gz") == "Brats18_CBICA_ABM_1"
    assert prediction_case_id("BraTS-SSA-00002-000-t2f.nii.gz") is None
    assert prediction_case_id("notes.txt") is None
    assert ground_truth_case_id("Brats18_CBICA_ABM_1_seg.nii.gz") == "Brats18_CBICA_ABM_1"
    assert ground_truth_case_id("Brats18_CBICA_ABM_1_t1ce.nii.gz") is None
    assert ground_truth_case_id("BraTS-SSA-00002-000.nii.gz") == "BraTS-SSA-00002-000"


def test_matching_lists_missing_unmatched_and_ambiguous(cohort):
    pred, gt = cohort
    _save(_labels(5), gt / "BraTS-SSA-00009-000" / "BraTS-SSA-00009-000-seg.nii.gz")  # no prediction
    _save(_labels(6), pred / "BraTS-SSA-00077-000.nii.gz")  # no ground truth
    _save(_labels(3), pred / "BraTS-SSA-00003-000.nii.gz")  # second file for case 3
    m = match_cases(pred, gt)
    assert [p.case_id for p in m.pairs] == ["BraTS-SSA-00002-000", "Brats18_CBICA_ABM_1"]
    assert list(m.missing_predictions) == ["BraTS-SSA-00009-000"]
    assert list(m.unmatched_predictions) == ["BraTS-SSA-00077-000"]
    assert list(m.problems) == ["BraTS-SSA-00003-000"] and "more than one file" in str(
        m.problems["BraTS-SSA-00003-000"]
    )


def test_cli_writes_tables_that_match_the_api(cohort, tmp_path):
    pred, gt = cohort
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "lesion-wise Dice" in result.output
    per_case = pd.read_csv(out / "per_case.csv")
    assert per_case["case_id"].tolist() == [
        "BraTS-SSA-00002-000",
        "BraTS-SSA-00003-000",
        "Brats18_CBICA_ABM_1",
    ]
    for region in ("WT", "TC", "ET"):
        for metric in (
            "lesionwise_dice",
            "lesionwise_hd95",
            "legacy_dice",
            "legacy_hd95",
            "sensitivity",
            "specificity",
            "n_tp",
            "n_fp",
            "n_fn",
            "gt_volume_mm3",
            "pred_volume_mm3",
        ):
            assert f"{region}_{metric}" in per_case.columns
    # Same numbers as the array API on canonical labels (legacy ET = 4 mapped to 3).
    gt_abm = _labels(4)
    pred_abm = np.roll(_labels(4), 2, axis=2)
    direct = evaluate_labels(pred_abm, gt_abm, definition="brats2024-ssa").regions
    row = per_case.set_index("case_id").loc["Brats18_CBICA_ABM_1"]
    for region in ("WT", "TC", "ET"):
        assert row[f"{region}_lesionwise_dice"] == pytest.approx(direct[region].lesionwise_dice, abs=1e-9)
        assert row[f"{region}_legacy_hd95"] == pytest.approx(direct[region].legacy_hd95, abs=1e-9)
        assert row[f"{region}_n_fp"] == direct[region].n_fp
    lesions = pd.read_csv(out / "per_lesion.csv")
    assert set(lesions["kind"]) <= {"TP", "FN", "FP"} and set(lesions["region"]) == {"WT", "TC", "ET"}
    summary = json.loads((out / "summary.json").read_text())
    assert (
        summary["definition"] == "brats2024-ssa"
        and summary["cases_evaluated"] == 3
        and summary["failures"] == []
    )
    et_dice = per_case["ET_lesionwise_dice"]
    stats = summary["metrics"]["ET"]["lesionwise_dice"]
    assert stats["mean"] == pytest.approx(et_dice.mean()) and stats["median"] == pytest.approx(
        et_dice.median()
    )
    assert stats["std"] == pytest.approx(et_dice.std(ddof=1)) and stats["n"] == 3


def test_bad_inputs_are_reported_and_the_rest_evaluated(cohort, tmp_path):
    pred, gt = cohort
    shifted = AFFINE.copy()
    shifted[:3, 3] = [10.0, 0.0, 0.0]  # same voxel grid, header moved by 10 mm
    bad = {
        "BraTS-SSA-00010-000": (np.zeros((24, 24, 21), np.uint8), AFFINE, "shape (24, 24, 21) differs"),
        "BraTS-SSA-00011-000": (_labels(11), shifted, "affine"),
        "BraTS-SSA-00012-000": (_labels(12).astype(np.float32) * 0.5, AFFINE, "not integers"),
        "BraTS-SSA-00013-000": (
            np.where(_labels(13) == 2, 7, _labels(13)).astype(np.uint8),
            AFFINE,
            "outside {0,1,2,3,4}: 7",
        ),
    }
    for case_id, (labels, affine, _) in bad.items():
        _save(_labels(20), gt / case_id / f"{case_id}-seg.nii.gz")
        _save(labels, pred / f"{case_id}.nii.gz", affine)
    _save(_labels(21), gt / "BraTS-SSA-00014-000" / "BraTS-SSA-00014-000-seg.nii.gz")  # no prediction
    out = tmp_path / "eval"
    result = runner.invoke(app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out)])
    assert result.exit_code == 1
    text = " ".join(result.output.split())
    for case_id, (_, _, problem) in bad.items():
        assert f"{case_id}.nii.gz: " in text and problem in text, (case_id, text)
    assert "BraTS-SSA-00014-000 has no prediction" in text
    assert "5 case(s) not evaluated" in text
    per_case = pd.read_csv(out / "per_case.csv")
    assert len(per_case) == 3  # the good cases went through
    summary = json.loads((out / "summary.json").read_text())
    assert sorted(f["case_id"] for f in summary["failures"]) == sorted([*bad, "BraTS-SSA-00014-000"])
    # The affine mismatch (same voxel grid, other header) is accepted with --geometry shape.
    result = runner.invoke(
        app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--geometry", "shape"]
    )
    assert result.exit_code == 1
    assert "BraTS-SSA-00011-000" in pd.read_csv(out / "per_case.csv")["case_id"].tolist()
    assert "affines were not compared" in result.output
    assert json.loads((out / "summary.json").read_text())["geometry_check"] == "shape"


def test_no_match_at_all_is_an_error(tmp_path):
    _save(_labels(1), tmp_path / "gt" / "CaseA" / "CaseA-seg.nii.gz")
    _save(_labels(1), tmp_path / "pred" / "CaseB.nii.gz")
    result = runner.invoke(
        app, ["evaluate", "-p", str(tmp_path / "pred"), "-g", str(tmp_path / "gt"), "-o", str(tmp_path / "o")]
    )
    assert result.exit_code == 1
    assert "no prediction matches any of the 1 ground-truth case(s)" in " ".join(result.output.split())
    assert not (tmp_path / "o").exists()


def test_file_and_folder_cannot_be_mixed(tmp_path, cohort):
    pred, gt = cohort
    result = runner.invoke(
        app,
        [
            "evaluate",
            "-p",
            str(pred / "BraTS-SSA-00002-000.nii.gz"),
            "-g",
            str(gt),
            "-o",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 1 and "two files or two folders" in result.output


def test_two_files_and_definition_option(tmp_path, cohort):
    pred, gt = cohort
    out = tmp_path / "one"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "-p",
            str(pred / "Brats18_CBICA_ABM_1-pred.nii.gz"),
            "-g",
            str(gt / "Brats18_CBICA_ABM_1" / "Brats18_CBICA_ABM_1_seg.nii.gz"),
            "-o",
            str(out),
            "--definition",
            "brats2023",
        ],
    )
    assert result.exit_code == 0, result.output
    row = pd.read_csv(out / "per_case.csv").iloc[0]
    assert row["case_id"] == "Brats18_CBICA_ABM_1"
    direct = evaluate_labels(np.roll(_labels(4), 2, axis=2), _labels(4), definition="brats2023").regions["ET"]
    assert row["ET_lesionwise_dice"] == pytest.approx(direct.lesionwise_dice, abs=1e-9)
    assert json.loads((out / "summary.json").read_text())["definition"] == "brats2023"


def test_parallel_run_gives_identical_tables(tmp_path, cohort):
    pred, gt = cohort
    serial = write_outputs(evaluate(pred, gt, jobs=1), tmp_path / "serial")
    parallel = write_outputs(evaluate(pred, gt, jobs=2), tmp_path / "parallel")
    for key in ("per_case", "per_lesion"):
        assert serial[key].read_text() == parallel[key].read_text()


def test_missing_predictions_error_skip_or_score_as_empty(tmp_path):
    """One prediction against a two-case ground-truth folder: --missing says what happens to the other."""
    from glioseg.data.synthetic import generate_case, write_case

    gt = tmp_path / "gt"
    cases = [write_case(generate_case(8, i, "adult", (40, 40, 32), 4.0), gt) for i in (1, 2)]
    pred = tmp_path / "pred"
    pred.mkdir()
    first = cases[0].name
    shutil.copy(cases[0] / f"{first}-seg.nii.gz", pred / f"{first}.nii.gz")
    outcomes = {}
    for policy in ("error", "skip", "empty"):
        out = tmp_path / policy
        result = runner.invoke(
            app, ["evaluate", "--pred", str(pred), "--gt", str(gt), "--out", str(out), "--missing", policy]
        )
        summary = json.loads((out / "summary.json").read_text())
        outcomes[policy] = (result.exit_code, summary["cases_evaluated"], summary["missing_predictions"])
    second = cases[1].name
    assert outcomes["error"] == (1, 1, {"policy": "error", "cases": []})
    assert outcomes["skip"] == (0, 1, {"policy": "skip", "cases": [second]})
    assert outcomes["empty"] == (0, 2, {"policy": "empty", "cases": [second]})
    per_case = pd.read_csv(tmp_path / "empty" / "per_case.csv").set_index("case_id")
    assert per_case.loc[second, "WT_lesionwise_dice"] == 0  # an empty prediction of a case with tumour
    assert per_case.loc[first, "WT_lesionwise_dice"] == 1  # the truth against itself


def test_summary_table_flags_the_official_sensitivity_quirk(tmp_path):
    """The table's sensitivity/specificity follow the official code (kept for parity); the table says so."""
    from glioseg.data.synthetic import generate_case, write_case

    case = write_case(generate_case(9, 1, "adult", (40, 40, 32), 4.0), tmp_path / "gt")
    seg = case / f"{case.name}-seg.nii.gz"
    notes = {
        "brats2024-ssa": "* as the official BraTS-Africa code computes them",
        "brats2023": "* voxel-wise",
    }
    for definition, note in notes.items():
        out = tmp_path / definition
        result = runner.invoke(
            app,
            ["evaluate", "--pred", str(seg), "--gt", str(seg), "--out", str(out), "--definition", definition],
        )
        assert result.exit_code == 0, result.output
        assert "sensitivity*" in result.output and note in result.output
