"""Training end to end on small synthetic data (CPU): learning, save/load, resume, bad input."""

import csv
import shutil

import lightning as L
import numpy as np
import pytest
import torch

from glioseg.data.preprocess import PreprocessedCache
from glioseg.data.synthetic import generate_cohort
from glioseg.errors import ConfigError, InputError
from glioseg.models import ModelConfig, build_model, set_deep_supervision
from glioseg.models.checkpoint import canonical_state_dict, load_weights, read_model_files
from glioseg.models.plan import Plan
from glioseg.train.callbacks import read_metrics
from glioseg.train.data import PatchDataset
from glioseg.train.loss import DeepSupervisionLoss, RegionDiceBCELoss, deep_supervision_weights
from glioseg.train.module import region_dice
from glioseg.train.recipes import RECIPES, build_optimizer, poly_factor
from glioseg.train.run import TrainOptions, resume, train

pytestmark = pytest.mark.slow

SMALL = dict(patch=[32, 32, 32], base_features=8, progress_bar=False, augment=False)


@pytest.fixture(scope="module")
def train_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("train")
    generate_cohort(root / "data", 4, "ssa", seed=1, shape=(48, 48, 40), spacing=4.0)
    return root


def _dice_on_case(network, config, plan, image, target):
    from monai.inferers import sliding_window_inference

    network.eval()
    set_deep_supervision(network, config, False)
    with torch.no_grad():
        logits = sliding_window_inference(
            image[None], tuple(plan.patch_size), 2, network, overlap=0.25, mode="gaussian"
        )
    return region_dice(torch.sigmoid(logits[0]), target)


@pytest.fixture(scope="module", params=["nnunet", "mednext-s-k3"])
def trained(request, train_data):
    out = train_data / f"run-{request.param}"
    # MedNeXt's recipe lr (1e-3) is tuned for 1000 epochs; 3e-3 lets 60 iterations show learning
    lr = 3e-3 if request.param.startswith("mednext") else None
    options = TrainOptions(
        data=str(train_data / "data"),
        model=request.param,
        out=str(out),
        epochs=6,
        iters_per_epoch=10,
        cache=str(train_data / "cache"),
        val_every=6,
        seed=3,
        lr=lr,
        **SMALL,
    )
    result = train(options, printer=lambda line: None)
    return request.param, result


def test_loss_falls_and_dice_beats_untrained_model(trained, train_data):
    name, result = trained
    losses = [v for _, v in read_metrics(result.run_dir / "logs")["train_loss"]]
    assert len(losses) == 6 and losses[-1] < losses[0] - 0.2
    plan = result.plan
    config = ModelConfig.from_dict(plan.model_config)
    cache = PreprocessedCache(train_data / "cache", tuple(plan.target_spacing))
    case_id = "SynSSA-s1-0001"  # a training case
    image, label, _ = cache.load(case_id, mmap=False)
    from glioseg.data.labels import labels_to_regions

    x = torch.from_numpy(np.asarray(image, dtype=np.float32))
    y = torch.from_numpy(labels_to_regions(label).astype(np.float32))
    torch.manual_seed(3)
    untrained = _dice_on_case(build_model(config), config, plan, x, y)
    state, info = read_model_files(result.run_dir)
    network = build_model(config)
    load_weights(network, state, result.run_dir)
    learned = _dice_on_case(network, config, plan, x, y)
    assert learned[0] > untrained[0] + 0.2, (name, learned, untrained)
    assert learned[0] > 0.4
    assert info["plan"]["patch_size"] == [32, 32, 32] and info["seed"] == 3 and "torch" in info["versions"]
    # every epoch timed; a busy training process uses CPU time, and not more of it than its threads
    # (and the loader workers) could in the wall time
    timing = info["training_time"]
    assert timing["epochs_timed"] == 6 and timing["wall_seconds"] > 0 and timing["cpu_seconds"] > 0
    budget = (torch.get_num_threads() + 2) * timing["wall_seconds"] + 1
    assert timing["cpu_seconds"] < budget, timing
    assert (result.run_dir / "training_curve.png").read_bytes()[:4] == b"\x89PNG"


def test_save_load_gives_identical_outputs(trained):
    _, result = trained
    state, info = read_model_files(result.run_dir / "model.safetensors")
    config = ModelConfig.from_dict(info["model_config"])
    first, second = build_model(config), build_model(config)
    load_weights(first, state, result.run_dir)
    load_weights(second, read_model_files(result.run_dir / "model.json")[0], result.run_dir)
    # each tensor is stored once, under its first name (no decoder.encoder.* / all_modules.* aliases;
    # nnU-Net's network has such aliases, MedNeXt has none)
    assert set(state) == set(canonical_state_dict(first))
    aliased = len(first.state_dict()) > len(dict(first.named_parameters(remove_duplicate=True))) + len(
        dict(first.named_buffers(remove_duplicate=True))
    )
    assert (len(state) < len(first.state_dict())) == aliased
    x = torch.randn(1, 4, 32, 32, 32, generator=torch.Generator().manual_seed(0))
    for net in (first, second):
        net.eval()
        set_deep_supervision(net, config, False)
    with torch.no_grad():
        assert torch.equal(first(x), second(x))


class _Crash(L.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 2:
            raise RuntimeError("simulated crash")


def test_killed_run_resumes_to_identical_weights(train_data):
    common = dict(
        data=str(train_data / "data"),
        model="nnunet",
        epochs=4,
        iters_per_epoch=3,
        cache=str(train_data / "cache"),
        seed=5,
        **{**SMALL, "augment": True},
    )
    whole = train(TrainOptions(out=str(train_data / "whole"), **common), printer=lambda line: None)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(
            TrainOptions(out=str(train_data / "killed"), **common),
            printer=lambda line: None,
            extra_callbacks=[_Crash()],
        )
    assert not (train_data / "killed" / "model.safetensors").exists()
    lines = []
    resumed = resume(train_data / "killed", printer=lines.append)
    assert lines[0].startswith("epoch 3/4")  # continued, not restarted
    a, _ = read_model_files(whole.run_dir)
    b, _ = read_model_files(resumed.run_dir)
    assert set(a) == set(b)
    assert all(torch.equal(a[k], b[k]) for k in a)

    def log(run):  # the CSV log's rows, without empty cells and the epoch times (which differ)
        with (run / "logs" / "csv" / "metrics.csv").open(newline="") as handle:
            rows = list(csv.DictReader(handle))
        assert sum(bool(row.get("epoch_seconds")) for row in rows) == 4  # all epochs timed, once
        return [{k: v for k, v in row.items() if v and not k.startswith("epoch_")} for row in rows]

    # Lightning's CSV logger restarts metrics.csv on resume: the epochs before the crash are kept
    assert len(log(whole.run_dir)) >= 4
    assert log(resumed.run_dir) == log(whole.run_dir)
    assert not (resumed.run_dir / "logs" / "history.csv").exists()


def _expect_early_error(exc_type, match, options, out):
    with pytest.raises(exc_type, match=match):
        train(options, printer=lambda line: None)
    assert not (out / "checkpoints").exists() and not (out / "model.safetensors").exists()


def test_bad_inputs_fail_before_training(train_data, tmp_path):
    data = train_data / "data"
    base = dict(model="nnunet", epochs=1, iters_per_epoch=1, cache=str(train_data / "cache"), **SMALL)
    # no labelled case
    unlabelled = tmp_path / "unlabelled"
    shutil.copytree(data, unlabelled)
    for seg in unlabelled.rglob("*-seg.nii.gz"):
        seg.unlink()
    _expect_early_error(
        InputError,
        "no labelled case",
        TrainOptions(data=str(unlabelled), out=str(tmp_path / "r1"), **base),
        tmp_path / "r1",
    )
    # a case without tumour
    empty = tmp_path / "empty"
    shutil.copytree(data, empty)
    import nibabel as nib

    seg = next(empty.rglob("*-seg.nii.gz"))
    img = nib.load(seg)
    nib.save(nib.Nifti1Image(np.zeros(img.shape, np.uint8), img.affine), seg)
    _expect_early_error(
        InputError,
        "no tumour",
        TrainOptions(data=str(empty), out=str(tmp_path / "r2"), **{**base, "cache": None}),
        tmp_path / "r2",
    )
    # patch larger than the images
    _expect_early_error(
        ConfigError,
        "larger than case",
        TrainOptions(data=str(data), out=str(tmp_path / "r3"), **{**base, "patch": [64, 64, 64]}),
        tmp_path / "r3",
    )
    # unknown model
    _expect_early_error(
        ConfigError,
        "unknown model",
        TrainOptions(data=str(data), out=str(tmp_path / "r4"), **{**base, "model": "vnet"}),
        tmp_path / "r4",
    )
    # plan over the memory budget
    _expect_early_error(
        ConfigError,
        "memory budget",
        TrainOptions(data=str(data), out=str(tmp_path / "r5"), **{**base, "memory_budget_gib": 0.1}),
        tmp_path / "r5",
    )


def test_patch_dataset_is_deterministic_and_oversamples_tumour(train_data):
    cache = PreprocessedCache(train_data / "cache", (4.0, 4.0, 4.0))
    ids = ["SynSSA-s1-0001", "SynSSA-s1-0002"]
    for case_id in ids:
        assert cache.paths(case_id)["meta"].exists()
    ds = PatchDataset(cache, ids, (32, 32, 32), samples_per_epoch=20, batch_size=2, seed=1, augment=True)
    a, b = ds[7], ds[7]
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["target"], b["target"])
    ds.set_epoch(1)
    assert not torch.equal(ds[7]["image"], a["image"])
    forced = [i for i in range(20) if ds.forces_foreground(i)]
    assert forced == list(range(1, 20, 2))  # nnU-Net: one patch of two is centred on tumour
    for i in forced:
        target = ds[i]["target"]
        assert target[0].sum() > 0
        assert torch.all(target[1] <= target[0]) and torch.all(target[2] <= target[1])


def test_loss_and_recipe_definitions():
    assert deep_supervision_weights(3) == pytest.approx([2 / 3, 1 / 3, 0.0])
    target = torch.zeros(1, 3, 8, 8, 8)
    target[:, :, 2:6, 2:6, 2:6] = 1
    good = (target * 2 - 1) * 10
    loss = RegionDiceBCELoss()
    assert float(loss(good, target)) < 0.01 < float(loss(-good, target))
    ds = DeepSupervisionLoss()
    outputs = [good, torch.nn.functional.avg_pool3d(good, 2)]
    assert float(ds(outputs, target)) == pytest.approx(float(loss(good, target)), abs=1e-6)
    assert poly_factor(0, 10) == 1.0 and poly_factor(10, 10) == 0.0
    assert poly_factor(0, 10, warmup_epochs=2) == pytest.approx(1 / 3)
    params = [torch.nn.Parameter(torch.zeros(1))]
    sgd = build_optimizer(RECIPES["nnunet"], params)
    assert isinstance(sgd, torch.optim.SGD) and sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.99
    adamw = build_optimizer(RECIPES["mednext"], params)
    assert (
        isinstance(adamw, torch.optim.AdamW)
        and adamw.defaults["eps"] == 1e-4
        and adamw.defaults["lr"] == 1e-3
    )


def test_plan_round_trips_through_json(trained):
    _, result = trained
    assert Plan.load(result.run_dir / "plan.json") == result.plan
