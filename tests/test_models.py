"""Network registry, presets, memory estimate and non-pickle checkpoints."""

import copy
import pickle

import numpy as np
import pytest
import torch

from glioseg.errors import ConfigError, InputError
from glioseg.models import available_models, build_model, model_config, set_deep_supervision
from glioseg.models.checkpoint import (
    decode_tree,
    encode_tree,
    load_tree,
    read_model_files,
    save_model,
    save_tree,
)
from glioseg.models.mednext import ContiguousConvTranspose3d
from glioseg.models.memory import estimate_training_memory


def _n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_registry_names_and_unknown_model():
    names = available_models()
    assert {"nnunet", "nnunet-resenc", "mednext-m-k3", "mednext-l-k5"} <= set(names)
    with pytest.raises(ConfigError, match="unknown model 'unet3000'.*available: nnunet"):
        model_config("unet3000", 6)


def test_nnunet_brats_configuration():
    config = model_config("nnunet", 6)
    kw = config.arch_kwargs
    assert kw["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    assert kw["strides"] == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert kw["n_conv_per_stage"] == [2] * 6 and kw["n_conv_per_stage_decoder"] == [2] * 5
    assert kw["norm_op_kwargs"] == {"eps": 1e-5, "affine": True}
    with torch.device("meta"):
        network = build_model(config)
    # nnU-Net's BraTS 3d_fullres network has about 31 million parameters
    assert 30.5e6 < _n_params(network) < 31.5e6
    assert type(network).__name__ == "PlainConvUNet"
    assert type(network.encoder.stages[0][0].convs[0].norm).__name__ == "InstanceNorm3d"


@pytest.mark.parametrize(("size", "millions"), [("s", 5.6), ("b", 10.5), ("m", 17.6), ("l", 61.8)])
def test_mednext_presets_match_the_paper(size, millions):
    """Parameter counts of MedNeXt (kernel 3, 4 input channels) as reported in the MedNeXt paper (Table 1)."""
    with torch.device("meta"):
        network = build_model(model_config(f"mednext-{size}-k3", 6))
    assert _n_params(network) / 1e6 == pytest.approx(millions, rel=0.03)


@pytest.mark.parametrize("name", ["nnunet", "nnunet-resenc", "mednext-s-k3", "mednext-m-k5"])
def test_small_networks_forward_shapes(name):
    config = model_config(name, 4, base_features=4)
    network = build_model(config)
    network.train()
    outputs = network(torch.randn(1, 4, 32, 32, 32))
    assert isinstance(outputs, list | tuple)
    assert tuple(outputs[0].shape) == (1, 3, 32, 32, 32)
    assert tuple(outputs[1].shape) == (1, 3, 16, 16, 16)
    network.eval()
    set_deep_supervision(network, config, False)
    with torch.no_grad():
        single = network(torch.randn(1, 4, 32, 32, 32))
    assert isinstance(single, torch.Tensor) and tuple(single.shape) == (1, 3, 32, 32, 32)


def test_mednext_gradient_checkpointing_gives_the_same_gradients():
    torch.manual_seed(0)
    config = model_config("mednext-m-k3", 3, base_features=4)
    assert config.arch_kwargs["gradient_checkpointing"]
    plain_kwargs = dict(config.arch_kwargs, gradient_checkpointing=False)
    checkpointed = build_model(config)
    plain = build_model(type(config)(name=config.name, family=config.family, arch_kwargs=plain_kwargs))
    plain.load_state_dict(checkpointed.state_dict())
    x = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(0))
    grads = []
    for network in (checkpointed, plain):
        network.train()
        network.zero_grad()
        sum(o.sum() for o in network(x)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in network.parameters()]))
    assert torch.allclose(grads[0], grads[1], atol=1e-5)
    twin = copy.deepcopy(checkpointed)  # a copy's checkpointed blocks run the copy's own weights
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(2)
    plain.load_state_dict(twin.state_dict())
    for network in (twin, plain):
        network.zero_grad()
        sum(o.sum() for o in network(x)).backward()
    assert torch.allclose(
        torch.cat([p.grad.flatten() for p in twin.parameters()]),
        torch.cat([p.grad.flatten() for p in plain.parameters()]),
        atol=1e-4,
    )


def test_mednext_upsampling_in_the_default_format_matches_monais_network_in_channels_last():
    """The up-sampling blocks' depth-wise transposed convolutions run in the default memory format
    (faster on the CPU); outputs, gradients and output memory format equal MONAI's own network."""
    from monai.networks.nets import MedNeXt

    config = model_config("mednext-s-k3", 3, base_features=4)
    ours = build_model(config)
    kwargs = {k: v for k, v in config.arch_kwargs.items() if k != "gradient_checkpointing"}
    monai = MedNeXt(spatial_dims=3, in_channels=4, out_channels=3, deep_supervision=True, **kwargs)
    monai.load_state_dict(ours.state_dict())  # same parameter names
    patched = [m for m in ours.modules() if isinstance(m, ContiguousConvTranspose3d)]
    assert patched and all(m.groups > 1 for m in patched)
    twin = copy.deepcopy(ours)  # a copy computes with its own weights, not the original's
    with torch.no_grad():
        for p in twin.parameters():
            p.mul_(2)
    fresh = build_model(config)
    fresh.load_state_dict(twin.state_dict())
    probe = torch.randn(1, 4, 16, 16, 16, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(twin.eval()(probe)[0], fresh.eval()(probe)[0], atol=1e-5)
    x = torch.randn(2, 4, 16, 16, 16, generator=torch.Generator().manual_seed(1))
    x = x.contiguous(memory_format=torch.channels_last_3d)
    outputs, grads = [], []
    for network in (ours, monai):
        network = network.to(memory_format=torch.channels_last_3d).train()
        network.zero_grad()
        out = network(x)
        sum((o * o).sum() for o in out).backward()
        outputs.append(out[0].detach())
        grads.append(torch.cat([p.grad.flatten() for p in network.parameters()]))
    assert outputs[0].is_contiguous(memory_format=torch.channels_last_3d)
    assert torch.allclose(outputs[0], outputs[1], atol=1e-5)
    assert torch.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-4)


def test_memory_estimate_grows_with_patch_and_batch():
    config = model_config("nnunet", 5, base_features=8)
    small = estimate_training_memory(config, (32, 32, 32), 2)
    large = estimate_training_memory(config, (64, 64, 64), 2)
    assert large.activations_gib == pytest.approx(8 * small.activations_gib, rel=0.05)
    assert estimate_training_memory(config, (32, 32, 32), 4).activations_gib == pytest.approx(
        2 * small.activations_gib
    )


def test_tree_round_trip_and_refusal(tmp_path):
    tree = {
        "state": {0: {"momentum_buffer": torch.arange(4.0)}},
        "groups": [{"lr": 0.01, "params": [0, 1], "betas": (0.9, 0.99)}],
        "rng": np.arange(5, dtype=np.uint32),
        "inf": float("inf"),
        "name": "x",
    }
    path = save_tree(tree, tmp_path / "state.safetensors")
    back = load_tree(path)
    assert torch.equal(back["state"][0]["momentum_buffer"], torch.arange(4.0))
    assert back["groups"][0]["betas"] == (0.9, 0.99) and back["inf"] == float("inf")
    assert np.array_equal(back["rng"], np.arange(5)) and back["rng"].dtype == np.uint32
    with pytest.raises(TypeError, match="cannot store object at root.bad"):
        encode_tree({"bad": object()}, {})
    assert decode_tree(encode_tree([1, (2, 3)], {}), {}) == [1, (2, 3)]


def test_model_files_refuse_pickles_and_foreign_files(tmp_path):
    network = build_model(model_config("nnunet", 3, base_features=4))
    weights, doc = save_model(network.state_dict(), {"model_config": {}}, tmp_path / "model")
    state, info = read_model_files(tmp_path)
    assert set(state) == set(network.state_dict()) and info["format"] == "glioseg-model-v1"
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "model.safetensors").write_bytes(pickle.dumps({"a": 1}))
    (evil / "model.json").write_text(doc.read_text())
    with pytest.raises(InputError, match="safetensors"):
        read_model_files(evil)
    with pytest.raises(InputError, match="not found"):
        read_model_files(tmp_path / "nowhere")
