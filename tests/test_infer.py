"""Inference: geometry, TTA, ensembles, nesting, batch robustness, model checks, the bundled demo model."""

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.cases import discover_cases, load_case
from glioseg.data.labels import labels_to_regions
from glioseg.data.synthetic import generate_case, write_case
from glioseg.errors import InputError
from glioseg.infer.batch import load_probabilities
from glioseg.infer.ensemble import segment_case
from glioseg.infer.models import find_members
from glioseg.infer.settings import InferenceSettings
from glioseg.infer.windows import predict_probabilities, tta_flips
from glioseg.pipeline import segment

from .conftest import write_random_model

runner = CliRunner()


@pytest.fixture(scope="module")
def random_model(tmp_path_factory):
    return write_random_model(tmp_path_factory.mktemp("models") / "random")


@pytest.fixture(scope="module")
def oblique_case(tmp_path_factory):
    """An odd-shaped case with anisotropic spacing and an oblique affine."""
    case = generate_case(9, 1, "adult", (45, 51, 37), 4.0)
    angle = np.deg2rad(12)
    rot = np.array([[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]])
    affine = np.eye(4)
    affine[:3, :3] = rot @ np.diag([-3.6, -4.0, 4.4])
    affine[:3, 3] = [91.5, -120.25, 33.0]
    case.affine = affine
    return write_case(case, tmp_path_factory.mktemp("oblique"))


def test_output_grid_equals_input_grid(oblique_case, random_model, tmp_path):
    result = runner.invoke(
        app,
        ["predict", str(oblique_case), "--model", str(random_model), "--out", str(tmp_path), "--tta", "none"],
    )
    assert result.exit_code == 0, result.output
    out = nib.load(tmp_path / f"{oblique_case.name}.nii.gz")
    ref = nib.load(oblique_case / f"{oblique_case.name}-t1n.nii.gz")
    assert out.shape == ref.shape == (45, 51, 37)
    assert np.allclose(out.affine, ref.affine)
    assert int(out.header["qform_code"]) == int(ref.header["qform_code"])
    assert int(out.header["sform_code"]) == int(ref.header["sform_code"])
    assert out.get_data_dtype() == np.uint8
    assert set(np.unique(np.asarray(out.dataobj))) <= {0, 1, 2, 3}


def test_api_returns_image_on_input_grid(oblique_case, random_model):
    image = segment(oblique_case, random_model, settings=InferenceSettings(tta="none", device="cpu"))
    ref = nib.load(oblique_case / f"{oblique_case.name}-t2f.nii.gz")
    assert image.shape == ref.shape and np.allclose(image.affine, ref.affine)


class _Mean(torch.nn.Module):
    """A network whose output depends on position: mirror consistency is not automatic."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(1)
        self.conv = torch.nn.Conv3d(4, 3, 5, padding=2)

    def forward(self, x):
        return self.conv(x)


def test_flip_tta_of_a_mirror_symmetric_input_is_symmetric():
    rng = np.random.default_rng(0)
    half = rng.standard_normal((4, 10, 24, 20)).astype(np.float32)
    image = np.concatenate([half, half[:, ::-1]], axis=1)  # symmetric along axis 1
    net = _Mean().eval()
    plain = predict_probabilities(
        net, image, (16, 16, 16), InferenceSettings(overlap=0.5, device="cpu"), [()]
    )
    assert not np.allclose(plain, plain[:, ::-1])  # the network itself is not symmetric
    flipped = predict_probabilities(
        net, image, (16, 16, 16), InferenceSettings(overlap=0.5, device="cpu"), [(), (0,)]
    )
    assert np.allclose(flipped, flipped[:, ::-1], atol=1e-6)
    full = predict_probabilities(
        net,
        np.ascontiguousarray(image[:, :, :, ::-1] + image),
        (16, 16, 16),
        InferenceSettings(overlap=0.5, device="cpu"),
        tta_flips("full"),
    )
    assert np.allclose(full, full[:, ::-1], atol=1e-6) and np.allclose(full, full[:, :, :, ::-1], atol=1e-6)


def test_tta_modes():
    assert tta_flips("none") == [()]
    assert tta_flips("flip", np.diag([1.0, -1.0, 1.0, 1.0])) == [(), (0,)]
    rotated = np.array([[0, 1.0, 0, 0], [1.0, 0, 0, 0], [0, 0, 1.0, 0], [0, 0, 0, 1]])
    assert tta_flips("flip", rotated) == [(), (1,)]
    assert sorted(map(len, tta_flips("full"))) == [0, 1, 1, 1, 2, 2, 2, 3]
    with pytest.raises(ValueError, match="unknown"):
        tta_flips("rotate")


def test_ensemble_of_identical_models_equals_one_model(small_cohort, random_model):
    data = load_case(discover_cases(small_cohort).cases[0], with_label=False)
    group = find_members(random_model)
    one = segment_case(data, [group], settings=InferenceSettings(tta="flip"))
    two = segment_case(data, [group, find_members(random_model)], settings=InferenceSettings(tta="flip"))
    assert np.array_equal(one.probabilities, two.probabilities)
    assert np.array_equal(one.labels, two.labels)
    weighted = segment_case(
        data,
        [group, group],
        weights=[[0.3, 0.2, 0.9], [0.7, 0.1, 0.4]],
        settings=InferenceSettings(tta="flip"),
    )
    assert np.allclose(weighted.probabilities, one.probabilities, atol=1e-6)


def test_fold_ensemble_is_the_mean_of_its_members(small_cohort, tmp_path):
    data = load_case(discover_cases(small_cohort).cases[0], with_label=False)
    folds = tmp_path / "cv"
    write_random_model(folds / "fold_0", seed=1)
    write_random_model(folds / "fold_1", seed=2)
    group = find_members(folds)
    assert [m.name for m in group.members] == ["fold_0", "fold_1"]
    both = segment_case(data, [group], settings=InferenceSettings(tta="none"), track_variance=True)
    singles = [
        segment_case(data, [find_members(folds / f)], settings=InferenceSettings(tta="none"))
        for f in ("fold_0", "fold_1")
    ]
    assert np.allclose(
        both.probabilities, (singles[0].probabilities + singles[1].probabilities) / 2, atol=1e-6
    )
    expected_var = ((singles[0].probabilities - singles[1].probabilities) / 2) ** 2
    assert np.allclose(both.member_probabilities_variance, expected_var, atol=1e-5)
    # without variance tracking the members are summed on the plan grid and restored once
    summed_first = segment_case(
        data,
        [group, find_members(folds / "fold_0")],
        weights=[0.7, 0.3],
        settings=InferenceSettings(tta="none"),
    )
    restored_each = segment_case(
        data,
        [group, find_members(folds / "fold_0")],
        weights=[0.7, 0.3],
        settings=InferenceSettings(tta="none"),
        track_variance=True,
    )
    assert np.abs(summed_first.probabilities - restored_each.probabilities).max() < 1e-6
    assert np.array_equal(summed_first.labels, restored_each.labels)


def test_batched_windows_equal_one_window_per_call(small_cohort, random_model):
    from glioseg.data.preprocess import preprocess_case
    from glioseg.infer.windows import window_batch_size

    member = find_members(random_model).members[0]
    image, _, _ = preprocess_case(
        load_case(discover_cases(small_cohort).cases[0], with_label=False), member.plan.target_spacing
    )
    network = member.load()
    patch = member.plan.patch_size
    assert window_batch_size(patch) == 2
    one = predict_probabilities(
        network, image, patch, InferenceSettings(overlap=0.5, device="cpu"), [()], sw_batch_size=1
    )
    batched = predict_probabilities(network, image, patch, InferenceSettings(overlap=0.5, device="cpu"), [()])
    assert np.abs(one - batched).max() < 1e-5


def test_labels_nest_whatever_the_thresholds(small_cohort, random_model):
    data = load_case(discover_cases(small_cohort).cases[1], with_label=False)
    pred = segment_case(
        data, [find_members(random_model)], settings=InferenceSettings(tta="none", thresholds=(0.6, 0.2, 0.1))
    )
    wt, tc, et = labels_to_regions(pred.labels)
    assert np.all(tc <= wt) and np.all(et <= tc)
    assert np.array_equal(wt, pred.probabilities[0] > 0.6)


def test_batch_with_a_corrupt_case_finishes_the_rest(small_cohort, random_model, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(small_cohort, data)
    bad = data / "SynSSA-s7-0002" / "SynSSA-s7-0002-t1c.nii.gz"
    bad.write_bytes(bad.read_bytes()[:400])
    (data / "SynSSA-s7-0004" / "SynSSA-s7-0004-t2w.nii.gz").unlink()
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "predict",
            str(data),
            "--model",
            str(random_model),
            "--out",
            str(out),
            "--tta",
            "none",
            "--save-probabilities",
        ],
    )
    assert result.exit_code == 1
    assert sorted(p.name for p in out.glob("*.nii.gz")) == ["SynSSA-s7-0001.nii.gz", "SynSSA-s7-0003.nii.gz"]
    assert "2 case(s) failed" in result.output and str(bad) in result.output.replace("\n", "")
    assert "missing modality t2w" in result.output
    probs = load_probabilities(out / "SynSSA-s7-0001_probabilities.npz")
    assert probs.shape == (3, 48, 48, 40) and probs.min() >= 0 and probs.max() <= 1
    assert not list(out.glob(".*part*"))  # nothing half-written


def test_four_files_by_modality(small_cohort, random_model, tmp_path):
    case = discover_cases(small_cohort).cases[2]
    flags = [x for m in ("t1n", "t1c", "t2w", "t2f") for x in (f"--{m}", str(case.images[m]))]
    result = runner.invoke(
        app, ["predict", *flags, "--model", str(random_model), "--out", str(tmp_path), "--tta", "none"]
    )
    assert result.exit_code == 0, result.output
    assert (tmp_path / f"{case.case_id}.nii.gz").exists()
    missing = runner.invoke(
        app,
        ["predict", "--t1n", str(case.images["t1n"]), "--model", str(random_model), "--out", str(tmp_path)],
    )
    assert missing.exit_code == 1 and "missing --t1c" in missing.output


def test_model_mismatches_are_reported(random_model, tmp_path, small_cohort):
    wrong_channels = tmp_path / "channels"
    shutil.copytree(random_model, wrong_channels)
    doc = json.loads((wrong_channels / "model.json").read_text())
    doc["model_config"]["channel_names"] = ["t1c", "t1n", "t2w", "t2f"]
    (wrong_channels / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="expects channels"):
        find_members(wrong_channels)
    wrong_weights = tmp_path / "weights"
    shutil.copytree(random_model, wrong_weights)
    doc = json.loads((wrong_weights / "model.json").read_text())
    doc["model_config"]["arch_kwargs"]["features_per_stage"] = [8, 16, 32, 64]
    (wrong_weights / "model.json").write_text(json.dumps(doc))
    result = runner.invoke(
        app, ["predict", str(small_cohort), "--model", str(wrong_weights), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 1 and "weights do not match" in result.output
    assert not (tmp_path / "o").exists()
    no_spacing = tmp_path / "spacing"
    shutil.copytree(random_model, no_spacing)
    doc = json.loads((no_spacing / "model.json").read_text())
    doc["plan"]["target_spacing"] = [0, 1, 1]
    (no_spacing / "model.json").write_text(json.dumps(doc))
    with pytest.raises(InputError, match="target spacing"):
        find_members(no_spacing)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no model.safetensors"):
        find_members(tmp_path / "empty")


@pytest.mark.slow
def test_bundled_demo_model_segments_a_fresh_synthetic_case():
    """Measured on 8 fresh full-size cases (seed 999, both domains): WT Dice 0.74-0.94; floor 0.6."""
    from glioseg.data.cases import CaseData
    from glioseg.models.catalog import DEMO_MODEL

    case = generate_case(999, 1, "ssa")
    reference = nib.Nifti1Image(case.image[0], case.affine)
    prediction = segment_case(
        CaseData(case.case_id, case.image, None, reference),
        [find_members(DEMO_MODEL)],
        settings=InferenceSettings(tta="flip"),
    )
    wt_pred, wt_true = prediction.labels > 0, case.label > 0
    dice = 2 * (wt_pred & wt_true).sum() / (wt_pred.sum() + wt_true.sum())
    assert dice > 0.6
    info = find_members(DEMO_MODEL).members[0].info
    assert "not for clinical use" in info["purpose"] and info["weights_dtype"] == "float16"
    assert (DEMO_MODEL / "model.safetensors").stat().st_size < 3e6


@pytest.mark.slow
def test_demo_command(tmp_path):
    result = runner.invoke(app, ["demo", "--out", str(tmp_path), "--tta", "none"])
    assert result.exit_code == 0, result.output
    assert "not for clinical use" in result.output
    case_id = "SynSSA-s2024-0001"
    seg = nib.load(tmp_path / f"{case_id}.nii.gz")
    assert seg.shape == (240, 240, 155)
    assert (tmp_path / f"{case_id}-preview.png").read_bytes()[:4] == b"\x89PNG"
    scores = json.loads((tmp_path / "scores.json").read_text())
    assert scores["synthetic"] is True and set(scores["scores"]) == {"WT", "TC", "ET"}
    assert scores["scores"]["WT"]["legacy_dice"] > 0.5


def test_nonsense_options_are_one_error_before_any_work(small_cohort, random_model, tmp_path):
    """--thresholds 2 used to give an empty segmentation with exit 0; a weight count that does not
    match the models failed case by case. Both are one error now, and nothing is written."""
    case = next(p for p in small_cohort.iterdir() if p.is_dir())
    for options, message in (
        (["--thresholds", "2"], "thresholds must be three numbers in (0, 1)"),
        (["--thresholds", "0.5,0.5"], "--thresholds must be three positive numbers like 0.5,0.4,0.3"),
        (["--weights", "0.5,0.5"], "--weights has 2 value(s) for 1 model(s)"),
    ):
        out = tmp_path / "out"
        result = runner.invoke(
            app, ["predict", str(case), "--model", str(random_model), "--out", str(out), *options]
        )
        assert result.exit_code != 0, options
        assert message in " ".join(result.output.split()), result.output
        assert not out.exists()


def test_output_problems_are_one_line_before_work_and_a_failed_case_leaves_nothing(
    small_cohort, random_model, tmp_path, monkeypatch
):
    """An existing file as --out, a disk that fills up in the middle of a batch, a run where every
    case fails: one line each, the other cases done, no half-written case, no empty folder."""
    from glioseg.infer import batch

    taken = tmp_path / "taken"
    taken.write_text("x")
    result = runner.invoke(
        app, ["predict", str(small_cohort), "--model", str(random_model), "--out", str(taken)]
    )
    assert (
        result.exit_code == 1
        and result.output.strip() == f"error: {taken}: exists and is a file; give a folder for the outputs"
    )

    original, calls = batch.write_text_atomic, []

    def disk_full_on_second_case(path, text):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(28, "No space left on device")
        return original(path, text)

    monkeypatch.setattr(batch, "write_text_atomic", disk_full_on_second_case)
    out = tmp_path / "out"
    result = runner.invoke(
        app, ["predict", str(small_cohort), "--model", str(random_model), "--out", str(out), "--tta", "none"]
    )
    ids = sorted(p.name for p in small_cohort.iterdir() if p.is_dir())
    assert (
        result.exit_code == 1
        and f"could not write the outputs of {ids[1]} (No space left on device)" in result.output
    )
    assert "Traceback" not in result.output
    written = sorted(p.name for p in out.iterdir())
    assert not any(name.startswith(ids[1]) for name in written)  # neither its label map nor its sidecar
    assert {f"{i}.nii.gz" for i in ids if i != ids[1]} <= set(written)
    monkeypatch.undo()

    broken = tmp_path / "broken"
    shutil.copytree(small_cohort / ids[0], broken / ids[0])
    image = next((broken / ids[0]).glob("*-t2f.nii.gz"))
    image.write_bytes(image.read_bytes()[:200])
    empty_out = tmp_path / "never"
    result = runner.invoke(
        app, ["predict", str(broken), "--model", str(random_model), "--out", str(empty_out)]
    )
    assert result.exit_code == 1 and not empty_out.exists()


def test_preview_into_a_folder(one_case, tmp_path):
    out = tmp_path / "pngs"
    out.mkdir()
    result = runner.invoke(app, ["preview", str(one_case), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert (out / f"{one_case.name}-preview.png").stat().st_size > 0
