"""Inference modes and engines: whole-crop pass, mirrorings spread over members, ONNX Runtime, channels_last."""

import numpy as np
import pytest
import torch

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.preprocess import preprocess_case, restore_to_original
from glioseg.errors import ConfigError
from glioseg.infer.ensemble import segment_case
from glioseg.infer.models import find_members
from glioseg.infer.settings import MODES, InferenceSettings
from glioseg.infer.windows import member_flips, padded_shape, predict_probabilities, predict_whole, tta_flips

from .conftest import write_random_model


def test_whole_pass_pads_and_crops_back_exactly():
    pointwise = torch.nn.Conv3d(4, 3, 1)  # voxel-wise: any misalignment would show
    x = torch.randn(1, 4, 21, 30, 17, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(predict_whole(pointwise, x, 8), pointwise(x), atol=1e-6)
    assert padded_shape((21, 30, 17), 8) == (24, 32, 24)


def test_whole_pass_of_a_lean_network_takes_the_crop_at_its_own_size(tmp_path):
    from glioseg.infer.lean import lean_forward, supports_lean_forward

    network = find_members(write_random_model(tmp_path / "m", seed=3)).members[0].load("cpu")
    assert supports_lean_forward(network)
    image = np.random.default_rng(1).standard_normal((4, 21, 30, 17)).astype(np.float32)
    sizes = []
    network.register_forward_pre_hook(lambda module, args: sizes.append(tuple(args[0].shape[2:])))
    crop_norms = {
        "window_norm": False
    }  # the crop's own statistics, padding included (see test_window_norm.py)
    native = predict_probabilities(
        network, image, (32, 32, 32), InferenceSettings(window="whole", device="cpu", **crop_norms), divisor=8
    )
    padded = predict_probabilities(
        network,
        image,
        (32, 32, 32),
        InferenceSettings(window="whole", native_size=False, device="cpu", **crop_norms),
        divisor=8,
    )
    module = predict_probabilities(
        network,
        image,
        (32, 32, 32),
        InferenceSettings(window="whole", lean=False, device="cpu", **crop_norms),
        divisor=8,
    )
    assert sizes == [
        (24, 32, 24)
    ]  # only the module's own forward ran (padded); the lean passes call its parts
    with torch.inference_mode():
        direct = torch.sigmoid(lean_forward(network, torch.from_numpy(image)[None]))[0].numpy()
    assert native.shape == padded.shape == (3, 21, 30, 17)
    assert np.allclose(native, direct, atol=1e-5)
    assert np.allclose(padded, module, atol=1e-5)
    assert not np.allclose(native, padded, atol=1e-3)  # a different context: zero padding enters the norms


def test_spread_mirrorings_cover_all_eight_over_eight_members():
    seen = [member_flips("spread", k)[0] for k in range(8)]
    assert sorted(seen) == sorted(tta_flips("full")) and seen[0] == ()
    assert member_flips("spread", 9) == [seen[1]]
    assert member_flips("flip", 3, np.diag([-1.0, 1, 1, 1])) == [(), (0,)]


def test_modes_and_overrides():
    fast = InferenceSettings.for_mode("fast")
    assert (fast.tta, fast.window, fast.members_per_group, fast.mode) == ("none", "whole", 1, "fast")
    assert InferenceSettings.for_mode("fast", tta="flip").tta == "flip"
    assert InferenceSettings.for_mode("reference").tta == "full" and MODES["accurate"].tta == "spread"
    assert (
        InferenceSettings.for_mode("accurate").window == "sliding"
        and InferenceSettings.for_mode("accurate", window="whole").window == "whole"
    )
    with pytest.raises(ConfigError, match="unknown mode"):
        InferenceSettings.for_mode("turbo")


def test_settings_are_checked_when_made():
    """A bad value is one clear error before any work (no empty segmentation from --thresholds 2)."""
    for bad, match in (
        ({"thresholds": (2.0, 2.0, 2.0)}, "thresholds must be three numbers in"),
        ({"overlap": 1.0}, r"overlap must be in \[0, 1\)"),
        ({"tta": "rotate"}, "unknown TTA"),
        ({"window": "tiles"}, "unknown window"),
        ({"engine": "tensorrt"}, "unknown engine"),
        ({"members_per_group": 0}, "at least 1"),
    ):
        with pytest.raises(ConfigError, match=match):
            InferenceSettings.for_mode("default", **bad)


def test_fast_mode_uses_the_first_member_only(small_cohort, tmp_path):
    folds = tmp_path / "cv"
    write_random_model(folds / "fold_0", seed=1)
    write_random_model(folds / "fold_1", seed=2)
    data = load_case(discover_cases(small_cohort).cases[0], with_label=False)
    group = find_members(folds)
    first_only = segment_case(
        data, [group], settings=InferenceSettings(tta="none", window="whole", members_per_group=1)
    )
    fold0 = segment_case(
        data, [find_members(folds / "fold_0")], settings=InferenceSettings(tta="none", window="whole")
    )
    assert np.array_equal(first_only.probabilities, fold0.probabilities)


def test_balanced_mode_is_every_member_in_one_whole_pass_with_its_own_mirroring(small_cohort, tmp_path):
    """``balanced`` = the mean of each member's single whole-crop pass, member k mirrored the k-th way."""
    folds = tmp_path / "cv"
    write_random_model(folds / "fold_0", seed=1)
    write_random_model(folds / "fold_1", seed=2)
    data = load_case(discover_cases(small_cohort).cases[0], with_label=False)
    balanced = InferenceSettings.for_mode("balanced")
    assert (balanced.window, balanced.tta, balanced.members_per_group) == ("whole", "spread", None)
    both = segment_case(data, [find_members(folds)], settings=balanced)
    singles = []
    for k in range(2):
        member = find_members(folds / f"fold_{k}").members[0]
        image, _, info = preprocess_case(data, tuple(float(s) for s in member.plan.target_spacing))
        probs = predict_probabilities(
            member.load("cpu"),
            image,
            member.plan.patch_size,
            balanced.with_(device="cpu", channels_last=False),
            member_flips("spread", k, data.affine),
            divisor=2 ** (member.config.n_stages - 1),
        )
        singles.append(restore_to_original(probs, info))
    assert member_flips("spread", 1, data.affine) != [()]  # the second member is mirrored
    assert np.allclose(both.probabilities, (singles[0] + singles[1]) / 2, atol=1e-5)


def test_channels_last_gives_the_same_probabilities(small_cohort, tmp_path):
    model = write_random_model(tmp_path / "m")
    member = find_members(model).members[0]
    image = np.random.default_rng(0).standard_normal((4, 36, 40, 33)).astype(np.float32)
    network = member.load("cpu")
    plain = predict_probabilities(
        network, image, (32, 32, 32), InferenceSettings(overlap=0.5, device="cpu"), [()]
    )
    network = network.to(memory_format=torch.channels_last_3d)
    fast = predict_probabilities(
        network, image, (32, 32, 32), InferenceSettings(overlap=0.5, channels_last=True, device="cpu"), [()]
    )
    assert np.allclose(plain, fast, atol=1e-5)


def test_channels_last_is_chosen_per_architecture(small_cohort, tmp_path, monkeypatch):
    """By default MedNeXt members run in channels_last_3d on the CPU and nnU-Net members do not;
    the probabilities are those of the default layout either way."""
    from glioseg.infer import ensemble

    data = load_case(discover_cases(small_cohort).cases[0], with_label=False)
    groups = [
        find_members(write_random_model(tmp_path / name, seed=5, name=name))
        for name in ("nnunet", "mednext-s-k3")
    ]
    layouts = []
    original = ensemble.predict_probabilities

    def spy(network, image, patch, settings, *args, **kwargs):
        layouts.append(
            (
                type(network).__name__,
                settings.channels_last,
                next(network.parameters()).is_contiguous(memory_format=torch.channels_last_3d),
            )
        )
        return original(network, image, patch, settings, *args, **kwargs)

    monkeypatch.setattr(ensemble, "predict_probabilities", spy)
    auto = segment_case(data, groups, settings=InferenceSettings(tta="none", window="whole"))
    assert [(cl, weights_cl) for _, cl, weights_cl in layouts] == [(False, False), (True, True)], layouts
    plain = segment_case(
        data, groups, settings=InferenceSettings(tta="none", window="whole", channels_last=False)
    )
    assert [cl for _, cl, _ in layouts[2:]] == [False, False]
    assert np.abs(auto.probabilities - plain.probabilities).max() < 1e-3  # summation order only


def test_onnx_engine_matches_torch(small_cohort, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    monkeypatch.setenv("GLIOSEG_CACHE", str(tmp_path / "cache"))
    model = write_random_model(tmp_path / "m", seed=4)
    data = load_case(discover_cases(small_cohort).cases[1], with_label=False)
    group = find_members(model)
    torch_pred = segment_case(data, [group], settings=InferenceSettings(tta="none", window="sliding"))
    onnx_pred = segment_case(
        data, [group], settings=InferenceSettings(tta="none", window="sliding", engine="onnx")
    )
    assert np.abs(torch_pred.probabilities - onnx_pred.probabilities).max() < 1e-4
    assert len(list((tmp_path / "cache" / "onnx").glob("*.onnx"))) == 1
