"""nnU-Net v2 import on hand-made results folders (no nnunetv2 needed): mappings, softmax models, refusals.

The folders follow nnU-Net's layout (plans.json, dataset.json, fold_K/checkpoint_final.pth); the
networks are dynamic-network-architectures U-Nets, as nnU-Net builds them, with anisotropic
kernels and strides so that any axis mix-up changes shapes or outputs.  The genuine article,
planned and trained by nnunetv2 itself, is tested in test_nnunet_import_peer.py.
"""

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from glioseg.cli import app
from glioseg.errors import ConfigError, InputError
from glioseg.models import ModelConfig, build_model, set_deep_supervision
from glioseg.models.checkpoint import load_weights, read_model_files
from glioseg.models.nnunet import build_nnunet, nnunet_arch_kwargs
from glioseg.models.nnunet_import import import_nnunet, load_nnunet_checkpoint
from glioseg.models.plan import Plan

runner = CliRunner()
SHUFFLED = {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"}
#: glioseg channel (t1n, t1c, t2w, t2f) -> index in SHUFFLED
SHUFFLED_SOURCE = [1, 2, 3, 0]
REGIONS_SHUFFLED = {"background": 0, "enhancing tumor": [3], "whole tumor": [1, 2, 3], "tumor core": [2, 3]}
#: WT, TC, ET rows in REGIONS_SHUFFLED's output order
REGION_ROWS = [1, 2, 0]
SOFTMAX = {"background": 0, "edema": 1, "necrosis": 2, "enhancing tumor": 3}
PATCH = [16, 24, 32]  # nnU-Net's (transposed) axis order


NETWORKS = {
    "PlainConvUNet": "dynamic_network_architectures.architectures.unet.PlainConvUNet",
    "ResidualEncoderUNet": "dynamic_network_architectures.architectures.residual_unet.ResidualEncoderUNet",
}


def _arch_kwargs(network="PlainConvUNet"):
    kwargs = nnunet_arch_kwargs(
        3,
        base_features=4,
        kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 1]],
        strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2]],
        residual_encoder=network == "ResidualEncoderUNet",
    )
    kwargs["nonlin"] = "torch.nn.LeakyReLU"  # how nnU-Net's plans spell it
    return kwargs


def _network(heads, network="PlainConvUNet", seed=0):
    torch.manual_seed(seed)
    network = build_nnunet(_arch_kwargs(network), 4, heads, deep_supervision=True)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return network.eval()


def write_results(
    root,
    labels,
    *,
    channel_names=SHUFFLED,
    transpose_forward=(2, 0, 1),
    reader="SimpleITKIO",
    normalization="ZScoreNormalization",
    weights=None,
    name="nnUNetTrainer__nnUNetPlans__3d_fullres",
    fold=0,
    network_class="PlainConvUNet",
):
    """An nnU-Net results folder; returns (trainer folder, nnU-Net-side network)."""
    heads = (len(labels) - 1) if any(isinstance(v, list) for v in labels.values()) else len(labels)
    network = _network(heads, network_class)
    folder = Path(root) / "Dataset999_Fake" / name
    (folder / f"fold_{fold}").mkdir(parents=True)
    configuration = {
        "data_identifier": "nnUNetPlans_3d_fullres",
        "batch_size": 2,
        "patch_size": PATCH,
        "median_image_size_in_voxels": [30.0, 40.0, 50.0],
        "spacing": [1.0, 2.0, 3.0],
        "normalization_schemes": [normalization] * 4,
        "use_mask_for_norm": [True] * 4,
        "architecture": {
            "network_class_name": NETWORKS[network_class],
            "arch_kwargs": _arch_kwargs(network_class),
            "_kw_requires_import": ["conv_op", "norm_op", "dropout_op", "nonlin"],
        },
    }
    plans = {
        "dataset_name": "Dataset999_Fake",
        "plans_name": "nnUNetPlans",
        "image_reader_writer": reader,
        "transpose_forward": list(transpose_forward),
        "transpose_backward": [int(i) for i in np.argsort(transpose_forward)],
        "configurations": {"3d_fullres": configuration},
    }
    (folder / "plans.json").write_text(json.dumps(plans))
    (folder / "dataset.json").write_text(
        json.dumps(
            {"channel_names": channel_names, "labels": labels, "numTraining": 5, "file_ending": ".nii.gz"}
        )
    )
    checkpoint = {
        "network_weights": weights if weights is not None else network.state_dict(),
        "init_args": {"configuration": "3d_fullres", "fold": fold, "device": torch.device("cpu")},
        "trainer_name": "nnUNetTrainer",
        "current_epoch": 7,
        "_best_ema": np.float32(0.5),  # nnU-Net >= 2.6 stores numpy scalars like these
        "logging": {"train_losses": [np.float32(0.9), np.float64(0.8)], "lrs": [0.01]},
        "inference_allowed_mirroring_axes": (0, 1, 2),
    }
    torch.save(checkpoint, folder / f"fold_{fold}" / "checkpoint_final.pth")
    return folder, network


def _to_glioseg(x_n, forward=(2, 0, 1)):
    """nnU-Net input (channels as SHUFFLED, transposed axes) -> glioseg input, derived from the layout facts:
    nnU-Net's arrays are the NIfTI voxel axes reversed (SimpleITK order), then transposed by ``forward``."""
    perm = [2 - a for a in forward]  # network axis d = glioseg axis perm[d]
    inverse = [perm.index(g) for g in range(3)]
    return x_n[:, SHUFFLED_SOURCE].permute(0, 1, *[2 + i for i in inverse]), inverse


def _spatial(y_n, inverse):
    return y_n.permute(0, 1, *[2 + i for i in inverse])


def _x():
    return torch.randn((1, 4, *PATCH), generator=torch.Generator().manual_seed(3))


@pytest.mark.parametrize("network_class", list(NETWORKS))
def test_region_model_outputs_are_reordered_to_wt_tc_et(tmp_path, network_class):
    folder, nn_net = write_results(tmp_path, REGIONS_SHUFFLED, network_class=network_class)
    imported = import_nnunet(folder, fold=0)
    assert (
        imported.plan["model"]
        == {"PlainConvUNet": "nnunet", "ResidualEncoderUNet": "nnunet-resenc"}[network_class]
    )
    network = build_model(imported.config, deep_supervision=True).eval()
    load_weights(network, imported.state_dict, folder)
    x_n = _x()
    x_g, inverse = _to_glioseg(x_n)
    with torch.no_grad():
        expected, got = nn_net(x_n), network(x_g)
    assert len(expected) == len(got) == 2  # deep supervision heads are mapped too
    for e, g in zip(expected, got, strict=True):
        assert g.shape[1] == 3
        torch.testing.assert_close(g, _spatial(e[:, REGION_ROWS], inverse), atol=1e-5, rtol=0)
    outputs = imported.imported_from["outputs"]["regions"]
    assert [outputs[r]["labels"] for r in ("WT", "TC", "ET")] == [[1, 2, 3], [2, 3], [3]]
    assert imported.imported_from["channel_source"] == {"t1n": 1, "t1c": 2, "t2w": 3, "t2f": 0}


def test_softmax_model_gives_exact_region_probabilities_and_saves_like_any_model(tmp_path):
    folder, nn_net = write_results(tmp_path, SOFTMAX)
    imported = import_nnunet(folder / "fold_0" / "checkpoint_final.pth")
    out = tmp_path / "model"
    imported.save(out)
    state, doc = read_model_files(out)
    config = ModelConfig.from_dict(doc["model_config"])
    network = build_model(config, deep_supervision=True)
    load_weights(network, state, tmp_path)
    set_deep_supervision(network, config, False)
    x_n = _x()
    x_g, inverse = _to_glioseg(x_n)
    with torch.no_grad():
        probabilities = torch.softmax(nn_net(x_n)[0], dim=1)
        got = torch.sigmoid(network.eval()(x_g))
    # nnU-Net labels: 1 edema (SNFH), 2 necrosis (NETC), 3 enhancing (ET)
    wt = probabilities[:, 1] + probabilities[:, 2] + probabilities[:, 3]
    tc = probabilities[:, 2] + probabilities[:, 3]
    et = probabilities[:, 3]
    torch.testing.assert_close(got, _spatial(torch.stack([wt, tc, et], 1), inverse), atol=1e-5, rtol=0)
    assert doc["imported_from"]["outputs"]["tissue_labels"] == {"SNFH": 1, "NETC": 2, "ET": 3}
    assert doc["imported_from"]["epoch"] == 7 and len(doc["imported_from"]["checkpoint_sha256"]) == 64
    assert config.channel_names == ["t1n", "t1c", "t2w", "t2f"] and config.output_names == ["WT", "TC", "ET"]
    plan = Plan.from_dict(doc["plan"])
    # network axes (x, z, y) of transpose_forward (2, 0, 1) on SimpleITK's (z, y, x) -> glioseg's (x, y, z)
    assert plan.target_spacing == [1.0, 3.0, 2.0] and plan.patch_size == [16, 32, 24]
    assert plan.median_shape == [30.0, 50.0, 40.0] and plan.normalization == "zscore-nonzero"
    assert plan.model_config == doc["model_config"] and plan.n_stages == 3 and plan.base_features == 4


def test_channel_names_are_matched_or_given(tmp_path):
    folder, _ = write_results(
        tmp_path, REGIONS_SHUFFLED, channel_names={"0": "a", "1": "b", "2": "c", "3": "d"}
    )
    with pytest.raises(
        ConfigError, match=r"cannot match nnU-Net channels \['a', 'b', 'c', 'd'\].*--channels"
    ):
        import_nnunet(folder)
    imported = import_nnunet(folder, channels=["t2f", "t1n", "t1c", "t2w"])
    assert imported.imported_from["channel_source"] == {"t1n": 1, "t1c": 2, "t2w": 3, "t2f": 0}
    with pytest.raises(ConfigError, match="once each"):
        import_nnunet(folder, channels=["t2f", "t2f", "t1c", "t2w"])


def test_unsupported_models_are_refused_with_the_reason(tmp_path):
    folder, _ = write_results(tmp_path / "a", REGIONS_SHUFFLED, normalization="CTNormalization")
    with pytest.raises(ConfigError, match=r"normalisation \['CTNormalization'.*ZScoreNormalization"):
        import_nnunet(folder)
    nested_wrongly = {"background": 0, "edema": [1], "core": [2, 3], "whole": [1, 2, 3]}
    folder, _ = write_results(tmp_path / "b", nested_wrongly)
    with pytest.raises(ConfigError, match="cannot map the outputs to WT, TC, ET"):
        import_nnunet(folder)
    folder, _ = write_results(tmp_path / "c", {"background": 0, "a": 1, "b": 2, "c": 3})
    with pytest.raises(ConfigError, match="--tissue-labels"):
        import_nnunet(folder)
    assert import_nnunet(folder, tissue_labels={"NETC": 1, "SNFH": 2, "ET": 3}).config.arch_kwargs[
        "softmax_regions"
    ] == [[1, 2, 3], [1, 3], [3]]
    folder, _ = write_results(tmp_path / "d", REGIONS_SHUFFLED, reader="Tiff3DIO")
    with pytest.raises(ConfigError, match="image reader 'Tiff3DIO'"):
        import_nnunet(folder)
    folder, _ = write_results(tmp_path / "e", REGIONS_SHUFFLED, reader="NibabelIOWithReorient")
    assert "reoriented to RAS" in import_nnunet(folder).warnings[0]


def test_weights_that_do_not_fit_the_plans_are_refused(tmp_path):
    other = build_nnunet(nnunet_arch_kwargs(3, base_features=8), 4, 3)
    folder, _ = write_results(tmp_path, REGIONS_SHUFFLED, weights=other.state_dict())
    with pytest.raises(ConfigError, match="weights do not fit the network described in plans.json"):
        import_nnunet(folder)


def test_results_folder_is_found_or_explained(tmp_path):
    folder, _ = write_results(tmp_path, REGIONS_SHUFFLED)
    assert import_nnunet(folder.parent).imported_from["results_folder"] == str(
        folder.resolve()
    )  # dataset folder
    with pytest.raises(
        InputError, match=r"fold_3/checkpoint_final.pth: checkpoint not found \(folds present: fold_0\)"
    ):
        import_nnunet(folder, fold=3)
    with pytest.raises(InputError, match="this fold has checkpoint_final.pth"):
        import_nnunet(folder, checkpoint_name="checkpoint_best.pth")
    write_results(tmp_path, SOFTMAX, name="nnUNetTrainer__nnUNetPlans__3d_lowres")
    with pytest.raises(ConfigError, match="several trained configurations"):
        import_nnunet(folder.parent)
    with pytest.raises(InputError, match="not an nnU-Net results folder"):
        import_nnunet(tmp_path)


class _Payload:
    """Pickles as a call to os.system: what a malicious checkpoint would contain."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoints_with_pickled_objects_or_garbage_are_refused(tmp_path):
    folder, network = write_results(tmp_path, REGIONS_SHUFFLED)
    checkpoint = folder / "fold_0" / "checkpoint_final.pth"
    assert load_nnunet_checkpoint(checkpoint)["_best_ema"] == np.float32(0.5)  # numpy scalars are allowed
    marker = tmp_path / "executed"
    torch.save({"network_weights": network.state_dict(), "trainer_name": _Payload(marker)}, checkpoint)
    with pytest.raises(
        InputError, match=r"checkpoint_final.pth: holds a pickled object \((posix|nt|os)\.system\)"
    ):
        import_nnunet(folder)
    assert not marker.exists()
    torch.save({"network_weights": network.state_dict(), "array": np.zeros(3, dtype=object)}, checkpoint)
    with pytest.raises(InputError, match="only checkpoints that torch.load.weights_only=True. can read"):
        import_nnunet(folder)
    checkpoint.write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(
        InputError, match="checkpoint_final.pth: not a readable weights-only PyTorch checkpoint"
    ):
        import_nnunet(folder)
    torch.save({"weights": network.state_dict()}, checkpoint)
    with pytest.raises(InputError, match="no 'network_weights'"):
        import_nnunet(folder)


def test_cli_import_writes_a_model_and_refuses_to_overwrite(tmp_path):
    folder, _ = write_results(tmp_path, REGIONS_SHUFFLED)
    out = tmp_path / "imported"
    result = runner.invoke(app, ["import-nnunet", str(folder), "--fold", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "channels t1n<-T1, t1c<-T1ce, t2w<-T2, t2f<-FLAIR" in result.output
    assert (out / "model.safetensors").exists() and (out / "model.json").exists()
    again = runner.invoke(app, ["import-nnunet", str(folder), "--out", str(out)])
    assert again.exit_code == 1 and "already holds a model" in again.output
    missing = runner.invoke(app, ["import-nnunet", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert missing.exit_code == 1 and "nowhere: not found" in missing.output
    help_text = runner.invoke(app, ["import-nnunet", "--help"]).output
    assert "Example: glioseg import-nnunet" in help_text
