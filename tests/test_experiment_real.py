"""glioseg experiment transfer --scale real-tiny --real: the real-anatomy code path on six real cases.

The six cases are taken at 3 mm (every third voxel of the 1 mm BraTS grid, 80 x 80 x 52): real
anatomy and real tumours through the same code as the ``real`` scale, at a size CI can afford (at
1 mm the degrading, features, out-of-fold predictions and the post-processing search took over
20 minutes on 2 cores).

Checks what the long ``--scale real`` run relies on: a source/target split without overlap, target
cases that are degraded copies with identical labels, out-of-fold predictions of every arm for
every target case (each by the fold that did not train on it), and a rerun that retrains nothing
(and, after losing one fold, retrains only that fold), and a run restored from the compact
checkpoint of ``scripts/experiment_checkpoint.py`` (what a later work session has) retrains nothing.
"""

import importlib.util
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.experiment.real import split_real_cases
from glioseg.experiment.scales import SCALES, estimate_cpu_seconds
from glioseg.experiment.transfer import open_experiment
from glioseg.postprocess.selection import leave_one_out

ARMS = [
    "nnunet-scratch",
    "nnunet-pretrained",
    "nnunet-pretrained-synthetic",
    "nnunet-pretrained-both",
    "nnunet-ft-random",
    "nnunet-ft-stratified",
    "nnunet-ft-stratified-synthetic",
    "nnunet-ft-stratified-both",
    "mednext-ft-stratified",
    "ensemble",
    "ensemble-pp",
]


def test_the_real_scale_is_planned_within_six_cpu_hours():
    estimate = estimate_cpu_seconds(SCALES["real"])
    assert 3 * 3600 < sum(estimate.values()) <= 6 * 3600
    assert SCALES["real"].real_source + SCALES["real"].n_target == 21


def test_a_resumed_run_lists_each_equivalent_command_once(tmp_path):
    # a resumed real run redoes the degraded copies (they are not kept): the report's list of
    # equivalent commands must not grow with every session
    first = open_experiment(tmp_path, "tiny")
    first.command("degrade", "REAL/a", "--seed", 0)
    first.save_state()
    resumed = open_experiment(tmp_path, "tiny")
    resumed.command("degrade", "REAL/a", "--seed", 0)
    resumed.command("degrade", "REAL/b", "--seed", 0)
    assert resumed.commands == ["glioseg degrade REAL/a --seed 0", "glioseg degrade REAL/b --seed 0"]


def test_split_of_the_21_cases_is_deterministic_disjoint_and_spread_over_collections():
    ids = [f"Brats18_2013_{i}_1" for i in (2, 3, 11, 20, 23)]
    ids += [f"Brats18_CBICA_{i}_1" for i in ("ABM", "ALU", "AME", "AQN")]
    ids += [f"Brats18_TCIA01_{i}_1" for i in (201, 378, 425, 499)]
    ids += [f"Brats18_TCIA02_{i}_1" for i in (135, 370, 606)] + ["Brats18_TCIA03_265_1"]
    ids += [f"Brats18_TCIA10_{i}_1" for i in (628, 637, 639)] + ["Brats18_TCIA13_623_1"]
    split = split_real_cases(ids, 9, 12, seed=0)
    assert split == split_real_cases(list(reversed(ids)), 9, 12, seed=0)
    assert len(split["source"]) == 9 and len(split["target"]) == 12 and not split["unused"]
    assert not set(split["source"]) & set(split["target"])
    for collection in ("2013", "CBICA", "TCIA01"):  # every collection of 4+ cases is on both sides
        assert min(split["origins"][collection].values()) >= 1
    assert split_real_cases(ids, 9, 12, seed=1) != split


def test_leave_one_out_never_uses_the_case_and_follows_its_cluster():
    dice = np.zeros((6, 3, 3))
    dice[:3, 1] = 0.6  # cluster 0 gains from setting 1
    dice[3:, 2] = 0.6  # cluster 1 from setting 2
    chosen = leave_one_out(dice, np.zeros_like(dice), np.array([0, 0, 0, 1, 1, 1]), min_cluster_cases=2)
    assert chosen.tolist() == [1, 1, 1, 2, 2, 2]
    # too few other cases in the cluster: the global choice (all other cases)
    assert set(leave_one_out(dice, np.zeros_like(dice), np.array([0, 0, 0, 1, 1, 1]), 3)) <= {1, 2}


COARSE_CASES = (  # two cases of each of three contributing collections
    "Brats18_2013_2_1",
    "Brats18_2013_3_1",
    "Brats18_CBICA_ABM_1",
    "Brats18_CBICA_ALU_1",
    "Brats18_TCIA01_201_1",
    "Brats18_TCIA02_135_1",
)


def _coarse_copies(real, out, step=3):
    """Every ``step``-th voxel of each file of :data:`COARSE_CASES`, with the affine scaled to match."""
    for case_id in COARSE_CASES:
        (out / case_id).mkdir(parents=True)
        for source in sorted((real / case_id).glob("*.nii.gz")):
            image = nib.load(source)
            data = np.asarray(image.dataobj)[::step, ::step, ::step]
            affine = image.affine.copy()
            affine[:3, :3] *= step
            copy = nib.Nifti1Image(data, affine)
            copy.set_qform(affine, code=1)
            copy.set_sform(affine, code=1)
            nib.save(copy, out / case_id / source.name)
    return out


def _stamps(out):
    return {p: p.stat().st_mtime_ns for p in out.rglob("model.safetensors")}


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_real_tiny_experiment_scores_every_arm_out_of_fold_and_resumes(real_data, tmp_path, monkeypatch):
    real = _coarse_copies(real_data / "brats2018", tmp_path / "real")
    out = tmp_path / "exp"
    args = ["experiment", "transfer", "--out", str(out), "--scale", "real-tiny", "--real", str(real)]
    runner = CliRunner()
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    state = json.loads((out / "experiment.json").read_text())
    split = state["split"]
    assert len(split["source"]) == 2 and len(split["target"]) == 4
    assert not set(split["source"]) & set(split["target"])
    assert sum(state["cpu_estimate_seconds"].values()) > 0

    # the clean source links to the real cases; the target holds degraded copies with the same labels
    for case_id in split["source"]:
        assert (out / "data" / "source-real" / case_id).resolve() == (real / case_id).resolve()
        assert (out / "data" / "source-both" / case_id).resolve() == (real / case_id).resolve()
    assert len([p for p in (out / "data" / "source-both").iterdir()]) == 2 + SCALES["real-tiny"].n_source
    target = out / "data" / "target"
    assert sorted(p.name for p in target.iterdir()) == split["target"]
    for case_id in split["target"]:
        original, copy = real / case_id, target / case_id
        assert (copy / f"{case_id}_seg.nii.gz").read_bytes() == (
            original / f"{case_id}_seg.nii.gz"
        ).read_bytes()
        before = np.asarray(nib.load(original / f"{case_id}_flair.nii.gz").dataobj)
        after = np.asarray(nib.load(copy / f"{case_id}_flair.nii.gz").dataobj)
        assert before.shape == after.shape and not np.array_equal(before, after)
        assert json.loads((copy / f"{case_id}-degrade.json").read_text())["severity"] == "moderate"

    # every arm scores every target case, out of fold
    results = json.loads((out / "results.json").read_text())
    assert [a["key"] for a in results["arms"]] == ARMS
    for arm in results["arms"]:
        assert arm["scores"]["case_id"] == split["target"], arm["key"]
        assert all(0 <= d <= 1 for d in arm["scores"]["WT_dice"])
    for cv in (out / "cv").iterdir():
        folds = json.loads(
            (out / "splits" / ("random.json" if "random" in cv.name else "radiomics.json")).read_text()
        )
        for k, fold in enumerate(folds):
            trained = json.loads((cv / f"fold_{k}" / "run.json").read_text())["split"]["train"]
            assert not set(trained) & set(fold["val"]), (cv.name, k)
        assert (
            sorted(p.name.removesuffix(".nii.gz") for p in (cv / "oof").glob("*.nii.gz")) == split["target"]
        )
    weights = json.loads((out / "ensemble" / "weights.json").read_text())
    assert sorted(c for f in weights["folds"] for c in f["cases"]) == split["target"]
    loo = json.loads((out / "ensemble" / "postprocess-loo.json").read_text())
    assert sorted(loo["cases"]) == split["target"]
    report = (out / "report.md").read_text()
    assert "out of fold" in report and "REAL" in report and str(real) not in report
    assert "glioseg degrade" in report and "--val-fraction 0.0" in report
    assert "`glioseg experiment transfer --out EXP --scale real-tiny --seed 0 --real REAL`" in report
    assert str(tmp_path) not in json.dumps(results)

    # a rerun retrains nothing
    stamps = _stamps(out)
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    assert _stamps(out) == stamps
    assert "[cv]" not in again.output and "[pretrain]" not in again.output and "degrading" not in again.output

    # a run that lost one fold of one arm retrains only that fold
    arm = out / "cv" / "nnunet-ft-stratified-both"
    shutil.rmtree(arm / "fold_1")
    for stale in (arm / "cv_summary.json", arm / "oof", arm / "cv"):
        shutil.rmtree(stale) if stale.is_dir() else stale.unlink()
    again = runner.invoke(app, args)
    assert again.exit_code == 0, again.output
    changed = {p for p, t in _stamps(out).items() if stamps.get(p) != t}
    assert changed == {arm / "fold_1" / "model.safetensors"}

    # the compact checkpoint a later session restores: no patient images, caches, training checkpoints
    # or fold weights; float16 pre-trained weights; restored and rerun, it retrains nothing and scores
    # the same
    script = _checkpoint_script()
    original = json.loads((out / "results.json").read_text())
    log = tmp_path / "exp.log"
    log.write_text(f"{tmp_path.resolve()}/.venv/lib/warnings.py:1: a library warning\n")
    monkeypatch.chdir(tmp_path)  # as a run in runs/ under the repository: paths under here made relative
    saved = script.save(out, tmp_path / "checkpoint", log=log)
    assert not [p for p in (tmp_path / "checkpoint").rglob("*.json") if str(tmp_path) in p.read_text()]
    assert (tmp_path / "checkpoint" / "run.log").read_text() == ".venv/lib/warnings.py:1: a library warning\n"
    names = {str(rel) for rel in saved}
    assert not [n for n in names if n.startswith(("data/", "cache/")) or n.endswith(".ckpt")]
    assert not [n for n in names if n.startswith("cv/") and n.endswith("model.safetensors")]
    assert not [n for n in names if n.endswith("_probabilities.npz")]  # the ensemble is made
    pretrained = sorted(n for n in names if n.startswith("pretrained/") and n.endswith("model.json"))
    assert len(pretrained) == 4
    for name in pretrained:
        assert json.loads((tmp_path / "checkpoint" / name).read_text())["weights_dtype"] == "float16"
    resumed = tmp_path / "resumed"
    script.restore(tmp_path / "checkpoint", resumed, log=tmp_path / "resumed.log")
    assert (tmp_path / "resumed.log").is_file() and not (resumed / "run.log").exists()
    # remade deterministically by the run; linked here to save CI time (the phantoms are not needed)
    (resumed / "data").mkdir()
    (resumed / "data" / "target").symlink_to(out / "data" / "target", target_is_directory=True)
    (resumed / "cache").symlink_to(out / "cache", target_is_directory=True)
    args_resumed = [a if a != str(out) else str(resumed) for a in args]
    again = runner.invoke(app, args_resumed)
    assert again.exit_code == 0, again.output
    assert "[cv]" not in again.output and "[pretrain]" not in again.output and "[oof]" not in again.output
    assert "generating" not in again.output and not (resumed / "data" / "phantoms").exists()
    rescored = json.loads((resumed / "results.json").read_text())
    assert [a["scores"] for a in rescored["arms"]] == [a["scores"] for a in original["arms"]]

    # a session that ended in the middle of an arm: its finished folds kept only their out-of-fold
    # outputs, so the restored run trains the missing fold alone and predicts only its cases
    partial = tmp_path / "partial"
    shutil.copytree(tmp_path / "checkpoint", partial)
    arm = partial / "cv" / "nnunet-ft-random"
    held_out = json.loads((partial / "splits" / "random.json").read_text())[1]["val"]
    for lost in [arm / "fold_1", arm / "cv", arm / "cv_summary.json"] + [
        p for c in held_out for p in (arm / "oof").glob(f"{c}*")
    ]:
        shutil.rmtree(lost) if lost.is_dir() else lost.unlink()
    resumed = tmp_path / "resumed-partial"
    script.restore(partial, resumed)
    (resumed / "data").mkdir()
    (resumed / "data" / "target").symlink_to(out / "data" / "target", target_is_directory=True)
    (resumed / "cache").symlink_to(out / "cache", target_is_directory=True)
    again = runner.invoke(app, [a if a != str(out) else str(resumed) for a in args])
    assert again.exit_code == 0, again.output
    assert "[cv] nnunet-ft-random" in again.output and "[pretrain]" not in again.output
    assert sorted(
        p.parent.name for p in (resumed / "cv" / "nnunet-ft-random").glob("*/model.safetensors")
    ) == ["fold_1"]
    assert (
        json.loads((resumed / "results.json").read_text())["arms"][4]["scores"]["case_id"] == split["target"]
    )


def _checkpoint_script():
    path = Path(__file__).resolve().parents[1] / "scripts" / "experiment_checkpoint.py"
    spec = importlib.util.spec_from_file_location("experiment_checkpoint", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
