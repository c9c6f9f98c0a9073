"""Window-matched normalisation: statistics of the sliding windows, checked against explicit windows."""

import itertools

import numpy as np
import pytest
import torch

from glioseg.infer.lean import lean_forward
from glioseg.infer.models import find_members
from glioseg.infer.settings import InferenceSettings
from glioseg.infer.window_norm import WindowGrid, is_instance_norm, window_matched_norms, window_normalise
from glioseg.infer.windows import predict_probabilities
from glioseg.models import build_model, model_config

from .conftest import write_random_model


@pytest.mark.parametrize(
    "shape, patch, overlap",
    [
        ((146, 194, 151), (128, 128, 128), 0.5),
        ((49, 65, 50), (40, 40, 40), 0.5),
        ((49, 65, 50), (40, 40, 40), 0.25),
        ((40, 41, 100), (40, 40, 24), 0.5),
    ],
)
def test_window_starts_match_monai(shape, patch, overlap):
    from monai.data.utils import dense_patch_slices
    from monai.inferers.utils import _get_scan_interval

    slices = dense_patch_slices(shape, patch, _get_scan_interval(shape, patch, 3, (overlap,) * 3))
    grid = WindowGrid(shape, patch, overlap)
    for axis in range(3):
        assert grid.starts(axis) == sorted({s[axis].start for s in slices})


def _explicit(y: torch.Tensor, grid: WindowGrid, factor: int, eps: float = 1e-5) -> torch.Tensor:
    """Window-matched normalisation written out window by window (windows aligned to ``factor``)."""
    axes = [[(s // factor, (s + p) // factor) for s in grid.starts(a)] for a, p in enumerate(grid.patch)]
    sigma = [grid.sigma_scale * p for p in grid.patch]
    centres = [(np.arange(n) + 0.5) * factor - 0.5 for n in y.shape[2:]]
    numerator = torch.zeros_like(y)
    denominator = torch.zeros(y.shape[2:], dtype=y.dtype)
    for window in itertools.product(*axes):
        part = y[(slice(None), slice(None), *(slice(lo, hi) for lo, hi in window))]
        var, mean = torch.var_mean(part, dim=(2, 3, 4), keepdim=True, correction=0)
        weight = torch.ones(y.shape[2:], dtype=y.dtype)
        for a, (lo, hi) in enumerate(window):
            centre = lo * factor + (grid.patch[a] - 1) / 2
            g = np.maximum(np.exp(-((centres[a] - centre) ** 2) / (2 * sigma[a] ** 2)), 1e-3)
            g[:lo] = 0
            g[hi:] = 0
            shape = [1, 1, 1]
            shape[a] = -1
            weight = weight * torch.from_numpy(g.astype(np.float32)).view(shape)
        numerator += weight * (y - mean) / torch.sqrt(var + eps)
        denominator += weight
    return numerator / denominator


@pytest.mark.parametrize("factor", [1, 2, 4])
def test_statistics_are_those_of_each_window_blended_with_gaussian_weights(factor):
    grid = WindowGrid((48, 40, 32), (32, 24, 32), overlap=0.5)  # 2 x 3 x 1 windows, starts multiples of 4
    n = [v // factor for v in grid.volume]
    y = torch.randn(1, 3, *n, generator=torch.Generator().manual_seed(factor)) * 2 + 3
    y[..., : n[0] // 2, :, :] *= 4  # windows with different statistics
    expected = _explicit(y, grid, factor)
    got = window_normalise(y.clone(), grid)
    assert torch.allclose(got, expected, atol=2e-4)


def test_one_window_over_the_volume_is_instance_normalisation_with_affine():
    x = torch.randn(2, 4, 10, 12, 9, generator=torch.Generator().manual_seed(0)) * 5 + 1
    norm = torch.nn.InstanceNorm3d(4, affine=True)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 2)
        norm.bias.uniform_(-1, 1)
        out = window_normalise(
            x.clone(), WindowGrid((10, 12, 9), (16, 16, 16)), norm.eps, norm.weight, norm.bias
        )
        assert torch.allclose(out, norm(x), atol=1e-4)


def test_padding_outside_the_volume_takes_its_nearest_windows_statistics():
    grid = WindowGrid((20, 8, 8), (8, 8, 8), offset=(2, 0, 0))  # the volume sits at 2..22 of a 24-voxel input
    y = torch.randn(1, 1, 24, 8, 8, generator=torch.Generator().manual_seed(1))
    out = window_normalise(y.clone(), grid, tensor_shape=(24, 8, 8))
    first_window = y[:, :, 2:10]
    var, mean = torch.var_mean(first_window, correction=0)
    assert torch.allclose(out[:, :, :2], (y[:, :, :2] - mean) / torch.sqrt(var + 1e-5), atol=1e-3)
    assert torch.isfinite(out).all()


def test_lean_forward_and_swapped_module_norms_agree():
    network = build_model(model_config("nnunet", 3, 4), deep_supervision=False).eval()
    x = torch.randn(1, 4, 64, 48, 40, generator=torch.Generator().manual_seed(2))
    grid = WindowGrid((64, 48, 40), (32, 32, 32))
    norms_before = [m for m in network.modules() if is_instance_norm(m)]
    with torch.inference_mode():
        lean = lean_forward(network, x, grid)
        with window_matched_norms(network, grid, x.shape[2:]):
            swapped = network(x)
        plain = network(x)
    assert torch.allclose(lean, swapped, atol=1e-3)
    assert not torch.allclose(lean, plain, atol=1e-2)  # several windows: not the crop's statistics
    assert [m for m in network.modules() if is_instance_norm(m)] == norms_before  # restored


def test_swapped_norms_are_restored_on_error():
    network = build_model(model_config("mednext-s-k3", 3, 4), deep_supervision=False).eval()
    before = [type(m) for m in network.modules()]
    with pytest.raises(RuntimeError), torch.inference_mode():
        with window_matched_norms(network, WindowGrid((32,) * 3, (16,) * 3), (32,) * 3):
            network(torch.randn(1, 5, 32, 32, 32))  # wrong channel count
    assert [type(m) for m in network.modules()] == before
    assert any(is_instance_norm(m) for m in network.modules())  # MedNeXt: GroupNorm, one channel per group


def test_whole_pass_uses_window_statistics_only_when_asked(tmp_path):
    network = find_members(write_random_model(tmp_path / "m", seed=5)).members[0].load("cpu")
    image = np.random.default_rng(2).standard_normal((4, 60, 44, 36)).astype(np.float32)
    windowed = predict_probabilities(
        network, image, (32, 32, 32), InferenceSettings(window="whole", device="cpu"), divisor=8
    )
    crop = predict_probabilities(
        network,
        image,
        (32, 32, 32),
        InferenceSettings(window="whole", window_norm=False, device="cpu"),
        divisor=8,
    )
    with torch.inference_mode():
        direct = torch.sigmoid(
            lean_forward(network, torch.from_numpy(image)[None], WindowGrid((60, 44, 36), (32, 32, 32)))
        )[0].numpy()
    assert np.allclose(windowed, direct, atol=1e-5)
    assert not np.allclose(windowed, crop, atol=1e-3)


def test_window_norm_brings_a_trained_model_closer_to_sliding_windows():
    """The bundled demo model (trained on 40^3 windows at 3 mm) on a synthetic case: the whole-crop
    pass with window-matched norms agrees better with sliding windows than with the crop's norms."""
    import nibabel as nib

    from glioseg.data.cases import CaseData
    from glioseg.data.labels import labels_to_regions, probabilities_to_labels
    from glioseg.data.preprocess import preprocess_case
    from glioseg.data.synthetic import generate_case
    from glioseg.models.catalog import DEMO_MODEL

    (member,) = find_members(DEMO_MODEL).members
    case = generate_case(7, 0, "ssa", shape=(160, 192, 150), spacing=1.0)
    data = CaseData(
        case.case_id, case.image, None, nib.Nifti1Image(np.zeros((1, 1, 1), np.float32), case.affine)
    )
    image, _, _ = preprocess_case(data, tuple(member.plan.target_spacing))
    assert all(s > p for s, p in zip(image.shape[1:], member.plan.patch_size, strict=True))
    network = member.load("cpu")
    patch, divisor = member.plan.patch_size, 2 ** (member.config.n_stages - 1)

    def regions(**kwargs):
        probs = predict_probabilities(
            network, image, patch, InferenceSettings(device="cpu", **kwargs), divisor=divisor
        )
        return labels_to_regions(probabilities_to_labels(probs, (0.5, 0.5, 0.5)))

    def dice(a, b):
        return np.mean([2 * (x & y).sum() / max(x.sum() + y.sum(), 1) for x, y in zip(a, b, strict=True)])

    sliding = regions(window="sliding")
    assert (
        dice(regions(window="whole"), sliding)
        > dice(regions(window="whole", window_norm=False), sliding) + 0.02
    )


def test_predict_command_exposes_the_normalisation_of_whole_crop_passes(small_cohort, tmp_path):
    from typer.testing import CliRunner

    from glioseg.cli import app
    from glioseg.infer.settings import InferenceSettings

    assert InferenceSettings.for_mode("fast").window_norm
    assert not InferenceSettings.for_mode("fast", window_norm=False).window_norm
    model = write_random_model(tmp_path / "m", seed=4)
    runner = CliRunner()
    for flag, said in (([], "window-matched norms"), (["--global-norm"], "crop norms")):
        out = tmp_path / f"out{len(flag)}"
        result = runner.invoke(
            app,
            ["predict", str(small_cohort), "--model", str(model), "--out", str(out), "--mode", "fast", *flag],
        )
        assert result.exit_code == 0, result.output
        assert said in result.output
        assert len(list(out.glob("*.nii.gz"))) == len(list(small_cohort.iterdir()))
