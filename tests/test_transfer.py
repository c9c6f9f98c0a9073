"""UpKern (MedNeXt kernel 3 -> 5) and name/shape-matched weight transfer."""

import pytest
import torch

from glioseg.errors import ConfigError
from glioseg.models import build_model, model_config
from glioseg.models.transfer import grow_kernel, transfer_state_dict, upkern_state_dict

N_STAGES, WIDTH = 4, 8


def _perturbed(config, seed=0):
    """A network whose every parameter (norm affines and biases too) is non-trivial."""
    torch.manual_seed(seed)
    network = build_model(config)
    with torch.no_grad():
        for p in network.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return network


def _outputs(network, x, train):
    network.train(train)
    with torch.no_grad():
        out = network(x)
    return list(out) if isinstance(out, list | tuple) else [out]


@pytest.fixture(scope="module")
def mednext_pair():
    source_config = model_config("mednext-b-k3", N_STAGES, base_features=WIDTH)
    target_config = model_config("mednext-b-k5", N_STAGES, base_features=WIDTH)
    return source_config, target_config, _perturbed(source_config)


def test_monai_mednext_grows_only_depthwise_kernels(mednext_pair):
    source_config, target_config, source = mednext_pair
    small = source.state_dict()
    with torch.device("meta"):
        large = build_model(target_config).state_dict()
    grown = {k for k in small if small[k].shape != large[k].shape}
    # MONAI's names: the 3x3x3 convolutions are the blocks' depthwise conv1 (plain, strided, transposed)
    assert grown and all(k.endswith(".conv1.weight") for k in grown)
    assert any(k.startswith("down_blocks.") for k in grown) and any(k.startswith("up_blocks.") for k in grown)
    assert all(small[k].shape[2:] == (3, 3, 3) and large[k].shape[2:] == (5, 5, 5) for k in grown)


def test_upkern_zero_padding_computes_the_same_function(mednext_pair):
    source_config, target_config, source = mednext_pair
    state = upkern_state_dict(source.state_dict(), source_config, target_config, mode="zero_pad")
    target = build_model(target_config)
    target.load_state_dict(state)
    x = torch.randn(2, 4, 24, 32, 40, generator=torch.Generator().manual_seed(1))
    for train in (False, True):  # inference output and every deep-supervision output
        expected, got = _outputs(source, x, train), _outputs(target, x, train)
        assert len(expected) == len(got) == (N_STAGES if train else 1)
        for e, g in zip(expected, got, strict=True):
            assert e.shape == g.shape
            assert torch.allclose(e, g, atol=1e-5, rtol=0), (e - g).abs().max()
    # the source weights were not modified in place
    assert source.state_dict()["enc_stages.0.0.conv1.weight"].shape[2:] == (3, 3, 3)


def test_upkern_trilinear_keeps_the_kernel_taps_at_the_even_positions(mednext_pair):
    source_config, target_config, source = mednext_pair
    small = source.state_dict()
    state = upkern_state_dict(small, source_config, target_config)  # the paper's trilinear mode
    target = build_model(target_config)
    target.load_state_dict(state)
    grown = [k for k in state if state[k].shape != small[k].shape]
    for key in grown:
        big = state[key]
        assert big.shape[2:] == (5, 5, 5)
        # align_corners=True: new taps 0, 2, 4 are old taps 0, 1, 2; tap 1 is the mean of old 0 and 1
        assert torch.allclose(big[:, :, ::2, ::2, ::2], small[key], atol=1e-6)
        assert torch.allclose(
            big[:, :, 1, 0, 0], (small[key][:, :, 0, 0, 0] + small[key][:, :, 1, 0, 0]) / 2, atol=1e-6
        )
    for key in set(state) - set(grown):
        assert torch.equal(state[key], small[key])
    out = _outputs(target, torch.randn(1, 4, 16, 16, 16), False)[0]
    assert out.shape == (1, 3, 16, 16, 16) and torch.isfinite(out).all()


def test_upkern_accepts_weights_without_deep_supervision_heads():
    source_config = model_config("mednext-s-k3", 3, base_features=4)
    target_config = model_config("mednext-s-k5", 3, base_features=4)
    plain = build_model(source_config, deep_supervision=False).state_dict()
    state = upkern_state_dict(plain, source_config, target_config, mode="zero_pad")
    assert set(state) == set(plain)
    build_model(target_config, deep_supervision=False).load_state_dict(state)


def test_upkern_refuses_other_changes_naming_the_parameter(mednext_pair):
    source_config, target_config, source = mednext_pair
    state = dict(source.state_dict())
    state["stem.weight"] = torch.zeros(WIDTH + 1, 4, 1, 1, 1)
    with pytest.raises(ConfigError, match=r"parameter stem.weight has shape \(9, 4, 1, 1, 1\)"):
        upkern_state_dict(state, source_config, target_config)
    wider = model_config("mednext-b-k5", N_STAGES, base_features=2 * WIDTH)
    with pytest.raises(ConfigError, match="init_filters differs: 8 -> 16"):
        upkern_state_dict(source.state_dict(), source_config, wider)
    missing = {k: v for k, v in source.state_dict().items() if k != "stem.bias"}
    with pytest.raises(ConfigError, match="missing stem.bias"):
        upkern_state_dict(missing, source_config, target_config)
    with pytest.raises(ConfigError, match="one model family"):
        upkern_state_dict(
            source.state_dict(), source_config, model_config("nnunet", N_STAGES, base_features=WIDTH)
        )
    # shrinking a kernel is not UpKern
    with pytest.raises(ConfigError, match="only grows convolution kernels"):
        upkern_state_dict(build_model(target_config).state_dict(), target_config, source_config)


def test_grow_kernel_zero_pad_centres_and_rejects_odd_growth():
    w = torch.arange(27.0).reshape(1, 1, 3, 3, 3)
    big = grow_kernel(w, (5, 5, 5), "zero_pad")
    assert torch.equal(big[0, 0, 1:4, 1:4, 1:4], w[0, 0]) and big.sum() == w.sum()
    with pytest.raises(ValueError, match="odd difference"):
        grow_kernel(w, (4, 5, 5), "zero_pad")


def test_transfer_copies_matches_and_reports_what_was_reinitialised():
    source = _perturbed(model_config("nnunet", 3, base_features=4), seed=1)
    config = model_config("nnunet", 3, base_features=4)
    config.in_channels, config.out_channels = 2, 5  # e.g. fewer modalities and other outputs
    torch.manual_seed(7)
    target = build_model(config)
    before = {k: v.clone() for k, v in target.state_dict().items()}
    report = transfer_state_dict(source.state_dict(), target)
    after = target.state_dict()
    first_conv = "encoder.stages.0.0.convs.0.conv.weight"
    heads = [k for k in after if k.startswith("decoder.seg_layers.")]
    assert sorted(report.reinitialised) == sorted([first_conv, *heads])
    assert "shape (4, 4, 3, 3, 3) pre-trained, (4, 2, 3, 3, 3) here" == report.reasons[first_conv]
    for key in report.reinitialised:
        assert torch.equal(after[key], before[key])  # left as initialised
    for key in report.copied:
        assert torch.equal(after[key], source.state_dict()[key])
    # dynamic-network-architectures repeats tensors under second names (decoder.encoder.*,
    # *.all_modules.*): each tensor is reported once, whatever its names
    groups = {}
    for key, tensor in after.items():
        groups.setdefault(tensor.data_ptr(), []).append(key)
    reported = set(report.copied) | set(report.reinitialised)
    assert len(reported) == len(report.copied) + len(report.reinitialised) == len(groups) < len(after)
    assert all(len(reported & set(names)) == 1 for names in groups.values())
    assert report.unused == []


def test_transfer_refuses_weights_of_another_architecture():
    mednext = build_model(model_config("mednext-s-k3", 3, base_features=4))
    with pytest.raises(ConfigError, match="no pre-trained tensor matches"):
        transfer_state_dict(mednext.state_dict(), build_model(model_config("nnunet", 3, base_features=4)))
