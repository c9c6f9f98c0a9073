"""Fine-tuning from pre-trained weights, cross-validation with out-of-fold predictions, ensemble weights."""

import json

import lightning as L
import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.data.synthetic import generate_cohort
from glioseg.errors import ConfigError
from glioseg.infer.models import find_members
from glioseg.models.checkpoint import read_model_files
from glioseg.train.crossval import cross_validate
from glioseg.train.run import TrainOptions, prepare, train

pytestmark = pytest.mark.slow

TINY = dict(patch=[32, 32, 32], base_features=8, progress_bar=False, augment=False)


@pytest.fixture(scope="module")
def cohorts(tmp_path_factory):
    root = tmp_path_factory.mktemp("transfer")
    generate_cohort(root / "source", 4, "adult", seed=21, shape=(48, 48, 40), spacing=4.0)
    generate_cohort(root / "target", 5, "ssa", seed=22, shape=(48, 48, 40), spacing=4.0)
    ids = sorted(p.name for p in (root / "target").iterdir())
    splits = [{"train": ids[2:], "val": ids[:2]}, {"train": ids[:2], "val": ids[2:]}]
    (root / "splits.json").write_text(json.dumps(splits))
    pretrained = train(
        TrainOptions(
            data=str(root / "source"),
            model="nnunet",
            out=str(root / "pretrained"),
            epochs=4,
            iters_per_epoch=8,
            seed=1,
            val_every=4,
            **TINY,
        ),
        printer=lambda line: None,
    )
    return root, pretrained.run_dir


class _FirstLoss(L.Callback):
    """The loss of the very first batch, before any update (the run's starting point)."""

    def __init__(self):
        self.loss = None
        self.batch = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if self.loss is None:
            with torch.no_grad():
                self.loss = float(pl_module.loss(pl_module.network(batch["image"]), batch["target"]))
            self.batch = {k: v.clone() for k, v in batch.items()}


def test_finetuning_starts_at_the_pretrained_models_loss(cohorts):
    root, pretrained = cohorts
    common = dict(
        data=str(root / "target"),
        splits=str(root / "splits.json"),
        fold="0",
        epochs=1,
        iters_per_epoch=2,
        seed=4,
        **TINY,
    )
    fine, scratch = _FirstLoss(), _FirstLoss()
    lines = []
    train(
        TrainOptions(model="", out=str(root / "ft"), pretrained=str(pretrained), **common),
        printer=lines.append,
        extra_callbacks=[fine],
    )
    train(
        TrainOptions(model="nnunet", out=str(root / "scratch"), **common),
        printer=lambda line: None,
        extra_callbacks=[scratch],
    )
    assert any(
        "pre-trained weights loaded; 0 tensor(s) keep a fresh initialisation" in line for line in lines
    )
    # the same batch through the pre-trained network, outside the training run
    from glioseg.models import ModelConfig, build_model
    from glioseg.models.checkpoint import load_weights
    from glioseg.train.loss import DeepSupervisionLoss

    state, info = read_model_files(pretrained)
    network = build_model(ModelConfig.from_dict(info["model_config"]))
    load_weights(network, state, pretrained)
    network.train()
    with torch.no_grad():
        expected = float(DeepSupervisionLoss()(network(fine.batch["image"]), fine.batch["target"]))
    assert fine.loss == pytest.approx(expected, abs=1e-5)
    assert torch.equal(fine.batch["image"], scratch.batch["image"])  # same data, different start
    assert fine.loss < scratch.loss - 0.1
    # the fine-tuning recipe: a tenth of nnU-Net's learning rate, warm-up, the pre-trained plan
    ft_run = json.loads((root / "ft" / "run.json").read_text())
    assert ft_run["recipe"]["lr"] == pytest.approx(1e-3) and ft_run["recipe"]["warmup_epochs"] == 1
    assert json.loads((root / "ft" / "plan.json").read_text())["patch_size"] == [32, 32, 32]


def test_finetuning_keeps_the_plan_and_architecture(cohorts, tmp_path):
    root, pretrained = cohorts
    base = dict(
        data=str(root / "target"),
        out=str(tmp_path / "x"),
        pretrained=str(pretrained),
        epochs=1,
        iters_per_epoch=1,
        progress_bar=False,
    )
    with pytest.raises(ConfigError, match="keeps the pre-trained architecture"):
        prepare(TrainOptions(model="mednext-s-k3", **base))
    with pytest.raises(ConfigError, match="keeps the pre-trained spacing"):
        prepare(TrainOptions(model="", spacing=[2.0, 2.0, 2.0], **base))
    prepared = prepare(TrainOptions(model="", **base))
    assert prepared.plan.target_spacing == [4.0, 4.0, 4.0] and prepared.recipe.epochs == 1


def test_cross_validation_writes_out_of_fold_predictions_and_resumes(cohorts):
    root, pretrained = cohorts
    options = TrainOptions(
        data=str(root / "target"),
        model="",
        out=str(root / "cv-ft"),
        splits=str(root / "splits.json"),
        fold="all",
        epochs=1,
        iters_per_epoch=2,
        pretrained=str(pretrained),
        seed=2,
        **TINY,
    )
    summary = cross_validate(options, tta="none", printer=lambda line: None)
    cv = root / "cv-ft"
    ids = sorted(p.name for p in (root / "target").iterdir())
    assert sorted(p.name.removesuffix(".nii.gz") for p in (cv / "oof").glob("*.nii.gz")) == ids
    assert len(list((cv / "oof").glob("*_probabilities.npz"))) == 5
    assert [m.name for m in find_members(cv).members] == ["fold_0", "fold_1"]
    assert len(summary["folds"]) == 2 and summary["folds"][1]["WT"]["n"] == 3
    assert 0 <= summary["overall"]["WT"]["lesionwise_dice"] <= 1
    assert (cv / "cv" / "per_case.csv").exists()
    stamps = {p: p.stat().st_mtime_ns for p in cv.rglob("model.safetensors")}
    lines = []
    cross_validate(options, tta="none", printer=lines.append)  # finished work is skipped
    assert {p: p.stat().st_mtime_ns for p in cv.rglob("model.safetensors")} == stamps
    assert sum("skipped" in line for line in lines) == 2


def test_ensemble_weights_from_cv_and_weighted_prediction(cohorts, tmp_path):
    root, _ = cohorts
    scratch = TrainOptions(
        data=str(root / "target"),
        model="nnunet",
        out=str(root / "cv-scratch"),
        splits=str(root / "splits.json"),
        fold="all",
        epochs=1,
        iters_per_epoch=2,
        seed=3,
        **TINY,
    )
    cross_validate(scratch, tta="none", printer=lambda line: None)
    if not (root / "cv-ft" / "cv_summary.json").exists():
        pytest.skip("needs the fine-tuned CV run of the previous test")
    runner = CliRunner()
    weights = tmp_path / "weights.json"
    oof = tmp_path / "oof-ensemble"
    result = runner.invoke(
        app,
        [
            "ensemble-weights",
            str(root / "cv-ft"),
            str(root / "cv-scratch"),
            "--out",
            str(weights),
            "--data",
            str(root / "target"),
            "--oof-out",
            str(oof),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list(oof.glob("*.nii.gz"))) == 5
    doc = json.loads(weights.read_text())
    summaries = [
        json.loads((root / d / "cv_summary.json").read_text())["overall"] for d in ("cv-ft", "cv-scratch")
    ]
    for region in ("WT", "TC", "ET"):
        scores = np.array([s[region]["lesionwise_dice"] for s in summaries])
        got = np.array([m["weights"][region] for m in doc["models"]])
        assert got.sum() == pytest.approx(1.0)
        if scores.sum() > 0:
            assert got == pytest.approx(scores / scores.sum())
    result = runner.invoke(
        app,
        [
            "predict",
            str(root / "target" / sorted(p.name for p in (root / "target").iterdir())[0]),
            "--model",
            str(root / "cv-ft"),
            "--model",
            str(root / "cv-scratch"),
            "--weights",
            str(weights),
            "--tta",
            "none",
            "--out",
            str(tmp_path / "pred"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert len(list((tmp_path / "pred").glob("*.nii.gz"))) == 1
