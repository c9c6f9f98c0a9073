"""Tuning post-processing on synthetic predictions with planted false positives; CLI, predict and clusters."""

import json
import shutil

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from scipy import ndimage
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.io import save_nifti
from glioseg.data.radiomics import cohort_features
from glioseg.data.radiomics.clusters import assign_clusters, fit_cluster_model
from glioseg.data.synthetic import generate_case, write_case
from glioseg.evaluate import evaluate_labels, read_labels
from glioseg.postprocess import PostprocessConfig, apply_operations
from glioseg.postprocess.grid import Grid, Setting
from glioseg.postprocess.selection import select_setting
from glioseg.postprocess.tune import tune

from .conftest import write_random_model

runner = CliRunner()
SHAPE, SPACING = (48, 48, 40), 4.0
REGIONS = ("WT", "TC", "ET")


def _plant(rng, gt, brain):
    """A prediction = ground truth + three 4x4x4 edema blobs far from the tumour + ET specks inside the edema."""
    pred = gt.copy()
    blobs, specks = [], []
    free = ndimage.distance_transform_edt(gt == 0) > 8
    free &= ndimage.binary_erosion(brain, iterations=3)
    for _ in range(3):
        candidates = np.argwhere(free)
        x, y, z = candidates[rng.integers(len(candidates))]
        box = (slice(x, x + 4), slice(y, y + 4), slice(z, z + 4))
        pred[box] = 2
        blob = np.zeros(gt.shape, bool)
        blob[box] = True
        blobs.append(blob)
        free &= ndimage.distance_transform_edt(~blob) > 8
    core = (gt == 1) | (gt == 3)
    edema = (
        (gt == 2) & (ndimage.distance_transform_edt(~core) > 4) & ndimage.binary_erosion(gt > 0, iterations=1)
    )
    for _ in range(2):
        candidates = np.argwhere(edema)
        if not len(candidates):
            break
        x, y, z = candidates[rng.integers(len(candidates))]
        pred[x, y, z] = 3
        specks.append((x, y, z))
        edema &= ndimage.distance_transform_edt(pred != 3) > 4
    return pred, blobs, specks


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """Six small cases (images + ground truth) and predictions with planted false positives.

    The ground truth is cleaned of WT components under 100 voxels and TC / ET components
    under 30 voxels, so that removing the planted objects recovers it exactly.
    """
    root = tmp_path_factory.mktemp("planted")
    data, pred_dir = root / "data", root / "pred"
    rng = np.random.default_rng(11)
    clean = Setting(wt_min_size=100, tc_min_size=30, et_min_size=30).operations()
    info = {}
    for index in range(1, 7):
        case = generate_case(21, index, "ssa" if index % 2 else "adult", SHAPE, SPACING)
        case.label = apply_operations(case.label, clean)
        folder = write_case(case, data)
        pred, blobs, specks = _plant(rng, case.label, np.any(case.image != 0, axis=0))
        reference = nib.load(folder / f"{case.case_id}-seg.nii.gz")
        save_nifti(pred, pred_dir / f"{case.case_id}.nii.gz", reference=reference, dtype=np.uint8)
        info[case.case_id] = {"gt": case.label, "pred": pred, "blobs": blobs, "specks": specks}
    assert sum(len(v["specks"]) for v in info.values()) >= 6
    return {"data": data, "pred": pred_dir, "cases": info, "root": root}


def _mean_dice(maps: dict, gts: dict, definition: str) -> dict:
    results = [evaluate_labels(maps[c], gts[c], (SPACING,) * 3, definition) for c in sorted(maps)]
    return {r: float(np.mean([res.regions[r].lesionwise_dice for res in results])) for r in REGIONS}


def test_tuning_finds_thresholds_that_remove_planted_false_positives(planted):
    grid = Grid(
        wt_min_size=(0, 30, 100, 300), tc_min_size=(0, 2, 10), et_min_size=(0, 2, 10), et_ratio=(0, 0.5)
    )
    result = tune(planted["pred"], planted["data"], grid, definition="brats2023")
    assert result.failures == [] and len(result.scores) == 6
    setting = result.settings[int(result.chosen[0])]
    assert 64 < setting.wt_min_size <= 100  # the 64-voxel blobs go, the tumours (>= 100 voxels) stay
    assert setting.tc_min_size >= 2 and setting.et_ratio == 0
    cases = planted["cases"]
    after = {c: result.config.apply(v["pred"]) for c, v in cases.items()}
    for c, v in cases.items():
        for blob in v["blobs"]:
            assert not after[c][blob].any()
        for speck in v["specks"]:
            assert after[c][speck] == 2  # the ET speck (a TC component of 1 voxel) became edema
        assert np.array_equal(after[c], v["gt"])
    gts = {c: v["gt"] for c, v in cases.items()}
    before_dice = _mean_dice({c: v["pred"] for c, v in cases.items()}, gts, "brats2023")
    after_dice = _mean_dice(after, gts, "brats2023")
    for region in REGIONS:
        assert after_dice[region] > before_dice[region]
        stats = result.report["regions"][region]["lesionwise_dice"]
        assert stats["before_mean"] == pytest.approx(before_dice[region], abs=1e-12)
        assert stats["after_mean"] == pytest.approx(after_dice[region], abs=1e-12)
        assert stats["ci95_low"] <= stats["mean_difference"] <= stats["ci95_high"]
        assert stats["n_worse"] == 0 and 0 < stats["wilcoxon_p"] <= 1
    assert result.report["timing"]["maps_scored"] < 6 * len(result.settings)


def _lesion_case(with_fp: bool, with_small_true_lesion: bool) -> np.ndarray:
    lab = np.zeros((40, 40, 40), np.uint8)
    lab[5:17, 5:17, 5:17] = 2
    lab[8:14, 8:14, 8:14] = 1
    lab[9:13, 9:13, 9:13] = 3
    if with_fp:
        lab[30:34, 30:34, 30:34] = 2  # 64 voxels of edema
    if with_small_true_lesion:
        lab[30:34, 5:9, 30:34] = 3  # 64 voxels of ET
    return lab


def test_a_setting_that_lowers_any_region_is_never_chosen(tmp_path):
    """WT < 100 fixes the WT false positive of four cases but deletes a real lesion of the fifth.

    It raises the mean over regions (WT +0.3, TC and ET -0.1 each) and must still be refused.
    """
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    for i in range(5):
        fp_case = i < 4
        gt = _lesion_case(False, not fp_case)
        pred = _lesion_case(fp_case, not fp_case)
        save_nifti(gt, gt_dir / f"case{i}-seg.nii.gz", affine=np.eye(4), dtype=np.uint8)
        save_nifti(pred, pred_dir / f"case{i}.nii.gz", affine=np.eye(4), dtype=np.uint8)
    grid = Grid(wt_min_size=(0, 100), tc_min_size=(0,), et_min_size=(0,), et_ratio=(0,))
    result = tune(pred_dir, gt_dir, grid, definition="brats2023")
    dice, hd = result.tables()
    region_means = dice.mean(axis=0)  # (settings, regions)
    assert region_means[1].mean() > region_means[0].mean()  # the removal would win on the plain objective ...
    assert np.any(region_means[1] < region_means[0])  # ... while lowering TC and ET
    assert select_setting(dice, hd) == 0 and np.all(result.chosen == 0)
    assert result.config.operations == []
    for region in REGIONS:
        assert result.report["regions"][region]["lesionwise_dice"]["mean_difference"] == 0
        assert result.report["regions"][region]["lesionwise_dice"]["wilcoxon_p"] == 1.0
    # the same cases without the fifth: the removal lowers nothing and is chosen
    assert select_setting(dice, hd, np.arange(4)) == 1


def test_cli_tune_apply_round_trip_is_idempotent(planted, tmp_path):
    grid = tmp_path / "grid.json"
    grid.write_text(
        json.dumps({"wt_min_size": [0, 30, 100], "tc_min_size": [0, 2], "et_min_size": [0], "et_ratio": [0]})
    )
    config = tmp_path / "pp.json"
    result = runner.invoke(
        app,
        [
            "postprocess",
            "tune",
            "--pred",
            str(planted["pred"]),
            "--gt",
            str(planted["data"]),
            "--out",
            str(config),
            "--grid",
            str(grid),
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ("pp.json", "pp.report.json", "pp.report.csv", "pp.cases.csv"):
        assert (tmp_path / name).is_file(), name
    assert "6 cases x 6 settings" in result.output
    report = json.loads((tmp_path / "pp.report.json").read_text())
    assert (
        report["definition"] == "brats2024-ssa"
        and report["selected"]["global"]["setting"]["wt_min_size"] == 100
    )
    summary = pd.read_csv(tmp_path / "pp.report.csv")
    assert set(summary["region"]) == set(REGIONS) and {"mean_difference", "ci95_low", "wilcoxon_p"} <= set(
        summary
    )
    ops = json.loads(config.read_text())["operations"]
    assert ops[0] == {
        "op": "remove_small_components",
        "target": "WT",
        "min_size": 100,
        "min_size_mm3": 6400.0,
        "fill": 0,
    }

    out, again = tmp_path / "out", tmp_path / "again"
    result = runner.invoke(
        app, ["postprocess", "apply", str(planted["pred"]), "--config", str(config), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    cases = pd.read_csv(tmp_path / "pp.cases.csv").set_index("case_id")
    for case_id, v in planted["cases"].items():
        written, image = read_labels(out / f"{case_id}.nii.gz")
        assert np.allclose(image.affine, nib.load(planted["pred"] / f"{case_id}.nii.gz").affine)
        score = evaluate_labels(written, v["gt"], (SPACING,) * 3)
        for region in REGIONS:
            assert score.regions[region].lesionwise_dice == pytest.approx(
                cases.loc[case_id, f"{region}_dice_after"]
            )
        assert not any(written[blob].any() for blob in v["blobs"])
    result = runner.invoke(
        app, ["postprocess", "apply", str(out), "--config", str(config), "--out", str(again)]
    )
    assert result.exit_code == 0, result.output
    assert " 0 voxel(s) changed" in result.output and "voxel(s) changed" in result.output
    for case_id in planted["cases"]:
        assert np.array_equal(
            read_labels(again / f"{case_id}.nii.gz")[0], read_labels(out / f"{case_id}.nii.gz")[0]
        )
    assert "1 voxel" not in result.output.replace("0 voxel", "")

    bad = runner.invoke(
        app,
        [
            "postprocess",
            "apply",
            str(planted["pred"]),
            "--config",
            str(tmp_path / "grid.json"),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert bad.exit_code == 1 and "not a glioseg post-processing configuration" in bad.output
    assert len([line for line in bad.output.splitlines() if line.strip()]) == 1


@pytest.fixture(scope="module")
def cluster_model(planted):
    """Two radiomic clusters fitted on the ground truth of the planted cohort (as glioseg split does)."""
    frame = cohort_features(planted["data"], include_quality=False).to_frame()
    model, _ = fit_cluster_model(frame, n_clusters=2, seed=0)
    path = planted["root"] / "splits.model.json"
    model.save(path)
    return path


def test_per_cluster_tuning_assigns_clusters_from_the_predictions(planted, cluster_model, tmp_path):
    grid = Grid(wt_min_size=(0, 30, 100), tc_min_size=(0, 2), et_min_size=(0,), et_ratio=(0, 0.5))
    result = tune(
        planted["pred"],
        planted["data"],
        grid,
        definition="brats2023",
        cluster_model_path=cluster_model,
        min_cluster_cases=2,
    )
    frame = cohort_features(
        planted["data"], labels_dir=planted["pred"], source="labels", include_quality=False
    )
    frame = frame.to_frame()
    expected = dict(zip(frame["case_id"], assign_clusters(frame, cluster_model), strict=True))
    assert result.report["case_clusters"] == {c: int(k) for c, k in expected.items()}
    dice, _ = result.tables()
    for k, entry in result.report["selected"]["clusters"].items():
        members = [i for i, s in enumerate(result.scores) if expected[s.case_id] == int(k)]
        assert entry["n_cases"] == len(members)
        assert entry["source"] == ("cluster" if len(members) >= 2 else "global")
        if members:
            chosen = entry["index"]
            assert np.all(dice[members, chosen].mean(axis=0) >= dice[members, 0].mean(axis=0) - 1e-12)
    config_path = tmp_path / "pp.json"
    result.write(config_path)
    config = PostprocessConfig.load(config_path)
    assert config.has_clusters and sorted(config.cluster_operations) == [0, 1]
    assert json.loads(config_path.read_text())["clusters"]["model_path"] == str(cluster_model)

    missing = runner.invoke(
        app,
        [
            "postprocess",
            "apply",
            str(planted["pred"]),
            "--config",
            str(config_path),
            "--out",
            str(tmp_path / "x"),
        ],
    )
    assert missing.exit_code == 1 and "--images" in missing.output
    out = tmp_path / "out"
    done = runner.invoke(
        app,
        [
            "postprocess",
            "apply",
            str(planted["pred"]),
            "--config",
            str(config_path),
            "--images",
            str(planted["data"]),
            "--out",
            str(out),
        ],
    )
    assert done.exit_code == 0, done.output
    rows = result.per_case_frame().set_index("case_id")
    for case_id, v in planted["cases"].items():
        assert f"{case_id} (cluster {expected[case_id]})" in done.output
        written = read_labels(out / f"{case_id}.nii.gz")[0]
        assert np.array_equal(written, config.apply(v["pred"], expected[case_id]))
        score = evaluate_labels(written, v["gt"], (SPACING,) * 3, "brats2023")
        for region in REGIONS:
            assert score.regions[region].lesionwise_dice == pytest.approx(
                rows.loc[case_id, f"{region}_dice_after"]
            )


def test_predict_with_postprocess_equals_postprocessing_the_plain_prediction(small_cohort, tmp_path):
    model = write_random_model(tmp_path / "model", seed=3)
    cohort = tmp_path / "cases"  # two of the four cases keep the two predict runs short
    for folder in sorted(small_cohort.iterdir())[:2]:
        shutil.copytree(folder, cohort / folder.name)
    plain, processed = tmp_path / "plain", tmp_path / "pp"
    result = runner.invoke(
        app,
        [
            "predict",
            str(cohort),
            "--model",
            str(model),
            "--out",
            str(plain),
            "--tta",
            "none",
            "--thresholds",
            "0.5,0.5,0.45",
        ],
    )
    assert result.exit_code == 0, result.output
    frame = cohort_features(
        small_cohort, include_quality=False
    ).to_frame()  # clusters of all four ground truths
    fitted, _ = fit_cluster_model(frame, n_clusters=2, seed=0)
    model_path = tmp_path / "clusters.model.json"
    fitted.save(model_path)
    ops = {0: Setting(wt_keep=1).operations(), 1: Setting(et_ratio=1.5).operations()}
    config = PostprocessConfig(
        operations=[],
        cluster_model=fitted,
        cluster_model_path=str(model_path),
        cluster_operations=ops,
        cluster_source={0: "cluster", 1: "cluster"},
        min_cases=1,
    )
    config_path = config.save(tmp_path / "pp.json")
    result = runner.invoke(
        app,
        [
            "predict",
            str(cohort),
            "--model",
            str(model),
            "--out",
            str(processed),
            "--tta",
            "none",
            "--thresholds",
            "0.5,0.5,0.45",
            "--postprocess",
            str(config_path),
        ],
    )
    assert result.exit_code == 0, result.output
    pred_frame = cohort_features(cohort, labels_dir=plain, source="labels", include_quality=False).to_frame()
    clusters = dict(zip(pred_frame["case_id"], assign_clusters(pred_frame, model_path), strict=True))
    changed = 0
    for case_id, cluster in clusters.items():
        raw = read_labels(plain / f"{case_id}.nii.gz")[0]
        written = read_labels(processed / f"{case_id}.nii.gz")[0]
        expected = apply_operations(raw, ops[int(cluster)])
        assert np.array_equal(written, expected)
        changed += int(np.count_nonzero(written != raw))
    assert changed > 0  # the hook did something on this cohort
    bad = runner.invoke(
        app,
        [
            "predict",
            str(cohort),
            "--model",
            str(model),
            "--out",
            str(tmp_path / "x"),
            "--postprocess",
            str(tmp_path / "nothing.json"),
        ],
    )
    assert (
        bad.exit_code == 1
        and "nothing.json: post-processing configuration not found" in bad.output.replace("\n", "")
    )
