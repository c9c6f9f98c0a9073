"""Import of genuine nnU-Net v2 results: nnunetv2 (dev extra) plans, preprocesses and trains a tiny
dataset in a subprocess (tests/nnunet_peer.py), and glioseg's imported networks must reproduce
nnunetv2's own networks' outputs.

The dataset is laid out as nnU-Net's BraTS datasets are, with two twists that make mistakes
visible: the channels are listed in a shuffled order (FLAIR, T1, T1ce, T2), and the voxels are
anisotropic with the coarsest spacing on the first NIfTI axis (5 x 4 x 3.5 mm), so nnU-Net's
planner transposes the axes (``transpose_forward`` is not the identity) on top of its readers'
reversed (SimpleITK) axis order.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from glioseg.data.io import load_volume
from glioseg.data.synthetic import generate_case
from glioseg.errors import InputError
from glioseg.models import ModelConfig, build_model, set_deep_supervision
from glioseg.models.checkpoint import load_weights, read_model_files
from glioseg.models.nnunet_import import import_nnunet, load_nnunet_checkpoint

pytest.importorskip("nnunetv2")
pytestmark = pytest.mark.slow

DATASET_ID = 901
CHANNELS = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
GLIOSEG_SOURCE = [1, 2, 3, 0]  # nnU-Net channel of t1n, t1c, t2w, t2f
MODALITY_INDEX = {"FLAIR": 3, "T1": 0, "T1ce": 1, "T2": 2}  # glioseg image channel of each name
SPACING = (5.0, 4.0, 3.5)
REGION_LABELS = {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": [3]}
N_CASES = 5  # nnU-Net's default 5-fold split needs five cases


def _write_raw_dataset(raw: Path) -> Path:
    """nnU-Net raw layout; labels converted to nnU-Net's BraTS convention (1 edema, 2 necrosis, 3 enhancing)."""
    root = raw / f"Dataset{DATASET_ID}_GliosegTiny"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    affine = np.diag([*SPACING, 1.0])
    to_nnunet = np.array([0, 2, 1, 3], dtype=np.uint8)  # glioseg 1 NETC, 2 SNFH, 3 ET
    for index in range(N_CASES):
        case = generate_case(5, index + 1, "adult", (48, 48, 40), 4.0)
        case_id = f"TINY_{index:03d}"
        for key, name in CHANNELS.items():
            image = nib.Nifti1Image(case.image[MODALITY_INDEX[name]].astype(np.float32), affine)
            nib.save(image, root / "imagesTr" / f"{case_id}_{int(key):04d}.nii.gz")
        nib.save(nib.Nifti1Image(to_nnunet[case.label], affine), root / "labelsTr" / f"{case_id}.nii.gz")
    dataset = {
        "channel_names": CHANNELS,
        "labels": REGION_LABELS,
        "regions_class_order": [1, 2, 3],
        "numTraining": N_CASES,
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(dataset, indent=1))
    return root


@pytest.fixture(scope="module")
def nnunet(tmp_path_factory):
    base = tmp_path_factory.mktemp("nnunet")
    raw = _write_raw_dataset(base / "raw")
    env = {
        **os.environ,
        "nnUNet_raw": str(base / "raw"),
        "nnUNet_preprocessed": str(base / "preprocessed"),
        "nnUNet_results": str(base / "results"),
        "nnUNet_n_proc_DA": "1",
        "OMP_NUM_THREADS": "1",
    }
    npz = base / "reference.npz"
    peer = Path(__file__).with_name("nnunet_peer.py")
    done = subprocess.run(
        [sys.executable, str(peer), str(DATASET_ID), str(npz)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    results = base / "results" / raw.name
    reference = dict(np.load(npz, allow_pickle=False))
    return {"raw": raw, "results": results, "reference": reference}


def _axes(plans):
    """glioseg axis of each network axis: nnU-Net's readers reverse NIfTI voxel axes, then ``transpose_forward``."""
    perm = [2 - a for a in plans["transpose_forward"]]
    return perm, [perm.index(g) for g in range(3)]


def _to_glioseg(t, inverse):
    return torch.from_numpy(t).permute(0, 1, *[2 + i for i in inverse])


def _imported_network(folder, tmp_path):
    """Import, save and reload through glioseg's model files, as inference and fine-tuning will."""
    import_nnunet(folder, fold=0).save(tmp_path)
    state, doc = read_model_files(tmp_path)
    config = ModelConfig.from_dict(doc["model_config"])
    network = build_model(config, deep_supervision=True)
    load_weights(network, state, tmp_path)
    return network.eval(), config, doc


def test_region_model_reproduces_nnunet_outputs(nnunet, tmp_path):
    folder = nnunet["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    plans = json.loads((folder / "plans.json").read_text())
    assert plans["transpose_forward"] != [0, 1, 2]  # the test exercises the transposition
    network, config, doc = _imported_network(folder, tmp_path)
    ref = nnunet["reference"]
    perm, inverse = _axes(plans)
    x_g = _to_glioseg(ref["x"][:, GLIOSEG_SOURCE], inverse)
    with torch.no_grad():
        deep = network(x_g)
        set_deep_supervision(network, config, False)
        full = network(x_g)
        exact = network.double()(x_g.double())
    # WT, TC, ET are nnU-Net's outputs 0, 1, 2 here (dataset.json lists them in that order).
    # The same function: in float64 to rounding; in float32 within the summation-order noise of
    # transposed kernels, relative to the logits' size.
    expected = _to_glioseg(ref["regions"], inverse)
    difference = (full - expected).abs().max().item()
    difference64 = (exact - _to_glioseg(ref["regions_float64"], inverse)).abs().max().item()
    scale = expected.abs().max().item()
    print(
        f"max |glioseg - nnunetv2| region logits: float32 {difference:.2e}, float64 {difference64:.2e} "
        f"(max |logit| {scale:.1f})"
    )
    assert difference64 < 1e-10
    assert difference < 5e-5 * max(1.0, scale)
    n_heads = len([k for k in ref if k.startswith("regions_ds")])
    assert len(deep) == n_heads == config.arch_kwargs["n_stages"] - 1
    for i, output in enumerate(deep):
        head = _to_glioseg(ref[f"regions_ds{i}"], inverse)
        torch.testing.assert_close(output, head, atol=5e-5 * max(1.0, head.abs().max().item()), rtol=0)
    source = doc["imported_from"]
    assert (
        source["trainer"] == "nnUNetTrainer"
        and source["epoch"] == 1
        and source["configuration"] == "3d_fullres"
    )
    assert source["axes"]["network_axis_to_glioseg_axis"] == perm


def test_softmax_model_reproduces_nnunet_region_probabilities(nnunet, tmp_path):
    folder = nnunet["results"] / "nnUNetTrainerSoftmaxTest__nnUNetPlans__3d_fullres"
    plans = json.loads((folder / "plans.json").read_text())
    network, config, doc = _imported_network(folder, tmp_path)
    assert doc["imported_from"]["outputs"]["tissue_labels"] == {"SNFH": 1, "NETC": 2, "ET": 3}
    ref = nnunet["reference"]
    _, inverse = _axes(plans)
    x_g = _to_glioseg(ref["x"][:, GLIOSEG_SOURCE], inverse)
    with torch.no_grad():
        deep = network(x_g)
    for i, output in enumerate(deep):
        p = torch.softmax(
            _to_glioseg(ref[f"softmax_ds{i}"], inverse), dim=1
        )  # 0 bg, 1 edema, 2 necrosis, 3 ET
        expected = torch.stack([p[:, 1] + p[:, 2] + p[:, 3], p[:, 2] + p[:, 3], p[:, 3]], dim=1)
        torch.testing.assert_close(torch.sigmoid(output), expected, atol=1e-5, rtol=0)


def test_plan_matches_the_data_in_glioseg_axes(nnunet):
    folder = nnunet["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    plans = json.loads((folder / "plans.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    imported = import_nnunet(folder, fold=0)
    plan = imported.plan
    # spacing and median cropped shape derived from the NIfTI files, independently of nnU-Net's axis order
    assert plan["target_spacing"] == list(SPACING)
    shapes = []
    for case in sorted((nnunet["raw"] / "imagesTr").glob("*_0000.nii.gz")):
        image, _ = load_volume(case)
        mask = np.zeros(image.shape, bool)
        for channel in range(4):
            mask |= load_volume(str(case).replace("_0000.", f"_{channel:04d}."))[0] != 0
        box = [np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != ax))) for ax in range(3)]
        shapes.append([int(b[-1] - b[0] + 1) for b in box])
    assert plan["median_shape"] == [float(s) for s in np.median(shapes, axis=0)]
    assert len(set(plan["median_shape"])) == 3  # distinct per axis: a wrong axis order would show
    _, inverse = _axes(plans)
    assert plan["patch_size"] == [configuration["patch_size"][i] for i in inverse]
    assert plan["batch_size"] == configuration["batch_size"]
    assert plan["n_stages"] == configuration["architecture"]["arch_kwargs"]["n_stages"]
    assert plan["normalization"] == "zscore-nonzero" and imported.warnings == []


def test_old_plans_format_is_converted_as_nnunet_converts_it(nnunet, tmp_path):
    from nnunetv2.utilities.plans_handling.plans_handler import ConfigurationManager

    folder = nnunet["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    plans = json.loads((folder / "plans.json").read_text())
    configuration = plans["configurations"]["3d_fullres"]
    kwargs = configuration["architecture"]["arch_kwargs"]
    old = {k: v for k, v in configuration.items() if k != "architecture"}
    old.update(
        UNet_class_name="PlainConvUNet",
        UNet_base_num_features=kwargs["features_per_stage"][0],
        unet_max_num_features=max(kwargs["features_per_stage"]),
        n_conv_per_stage_encoder=kwargs["n_conv_per_stage"],
        n_conv_per_stage_decoder=kwargs["n_conv_per_stage_decoder"],
        num_pool_per_axis=[3, 3, 3],
        pool_op_kernel_sizes=kwargs["strides"],
        conv_kernel_sizes=kwargs["kernel_sizes"],
    )
    with pytest.warns(UserWarning, match="old nnU-Net plans format"):
        converted = ConfigurationManager(json.loads(json.dumps(old))).network_arch_init_kwargs
    assert converted == kwargs  # the old description above is what nnU-Net reads as this network
    copy = tmp_path / folder.name
    (copy / "fold_0").mkdir(parents=True)
    (copy / "plans.json").write_text(json.dumps({**plans, "configurations": {"3d_fullres": old}}))
    (copy / "dataset.json").write_text((folder / "dataset.json").read_text())
    (copy / "fold_0" / "checkpoint_final.pth").symlink_to(folder / "fold_0" / "checkpoint_final.pth")
    assert import_nnunet(copy).config == import_nnunet(folder).config


def test_genuine_checkpoint_needs_the_numpy_allow_list_and_pickled_objects_are_refused(nnunet, tmp_path):
    checkpoint = (
        nnunet["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres" / "fold_0" / "checkpoint_final.pth"
    )
    with pytest.raises(
        Exception, match="numpy"
    ):  # plain weights_only loading fails on nnU-Net's numpy scalars
        torch.load(checkpoint, map_location="cpu", weights_only=True)
    content = load_nnunet_checkpoint(checkpoint)
    assert {
        "network_weights",
        "optimizer_state",
        "init_args",
        "trainer_name",
        "current_epoch",
        "_best_ema",
        "logging",
    } <= set(content)
    assert isinstance(content["_best_ema"], np.floating)

    class Tampered:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'executed'}",))

    folder = tmp_path / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    (folder / "fold_0").mkdir(parents=True)
    for name in ("plans.json", "dataset.json"):
        (folder / name).write_text((checkpoint.parent.parent / name).read_text())
    torch.save({**content, "logging": Tampered()}, folder / "fold_0" / "checkpoint_final.pth")
    with pytest.raises(
        InputError, match=r"checkpoint_final.pth: holds a pickled object \((posix|nt)\.system\)"
    ):
        import_nnunet(folder)
    assert not (tmp_path / "executed").exists()


def test_imported_nnunet_model_predicts_through_glioseg(nnunet, tmp_path):
    """The imported checkpoint is an ordinary glioseg model: glioseg predict runs it on the raw dataset."""
    from typer.testing import CliRunner

    from glioseg.cli import app

    folder = nnunet["results"] / "nnUNetTrainer__nnUNetPlans__3d_fullres"
    import_nnunet(folder, fold=0).save(tmp_path / "model")
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(nnunet["raw"]),
            "--model",
            str(tmp_path / "model"),
            "--out",
            str(tmp_path / "pred"),
            "--tta",
            "none",
        ],
    )
    assert result.exit_code == 0, result.output
    written = sorted((tmp_path / "pred").glob("*.nii.gz"))
    assert len(written) == len(list((nnunet["raw"] / "imagesTr").glob("*_0000.nii.gz")))
    import nibabel as nib

    labels = np.asarray(nib.load(written[0]).dataobj)
    image = nib.load(next((nnunet["raw"] / "imagesTr").glob("*_0000.nii.gz")))
    assert labels.shape == image.shape and set(np.unique(labels)) <= {0, 1, 2, 3}
