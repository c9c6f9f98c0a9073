"""The optional mirror-consistency term of training (``Recipe.mirror_consistency``)."""

from __future__ import annotations

import pytest
import torch

from glioseg.errors import ConfigError
from glioseg.models import model_config
from glioseg.models.plan import Plan
from glioseg.train.loss import DeepSupervisionLoss, mirror_consistency
from glioseg.train.module import SegmentationModule, first_output, paired_crop, random_mirror_axes
from glioseg.train.recipes import RECIPES

PATCH = 16


def _plan(model: str = "nnunet") -> Plan:
    config = model_config(model, 3, base_features=4)
    return Plan(
        model=model,
        target_spacing=[4.0] * 3,
        patch_size=[PATCH] * 3,
        batch_size=2,
        n_stages=3,
        base_features=4,
        max_features=320,
        memory_budget_gib=1.0,
        estimated_memory_gib=0.1,
        median_shape=[PATCH] * 3,
        model_config=config.to_dict(),
    )


def _module(weight: float, seed: int = 0, crop: float = 1.0) -> SegmentationModule:
    torch.manual_seed(seed)
    return SegmentationModule(
        _plan(), RECIPES["nnunet"].with_(mirror_consistency=weight, consistency_crop=crop)
    )


def _batch(seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(2, 4, PATCH, PATCH, PATCH, generator=g)
    target = torch.zeros(2, 3, PATCH, PATCH, PATCH)
    target[:, 0, 3:12, 4:13, 2:10] = 1  # an off-centre box: mirroring moves it
    target[:, 1, 5:10, 6:11, 4:8] = 1
    target[:, 2, 6:9, 7:10, 5:7] = 1
    image[:, :, 3:12, 4:13, 2:10] += 2.0  # a visible, learnable tumour
    return {"image": image, "target": target}


def _mirror_gap(module: SegmentationModule, image: torch.Tensor) -> float:
    """Mean over the seven mirrorings of the squared probability change they cause."""
    module.eval()
    with torch.no_grad():
        logits = module(image)
        gaps = [
            float(mirror_consistency(logits, module(image.flip(axes)), axes))
            for axes in ((2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4))
        ]
    module.train()
    return sum(gaps) / len(gaps)


def test_consistency_is_zero_only_for_equivariant_outputs():
    g = torch.Generator().manual_seed(0)
    # odd sizes, so a flip moves values across SIMD lanes (where a sigmoid computed after the flip
    # rounded differently on some CPUs: 1.2e-18 instead of 0)
    z = torch.randn(2, 3, 7, 5, 9, generator=g).requires_grad_()
    for axes in ((2,), (3, 4), (2, 3, 4)):
        assert mirror_consistency(z, z.flip(axes), axes).item() == 0.0
    other = torch.randn(2, 3, 7, 5, 9, generator=g)
    value = mirror_consistency(z, other, (2,))
    expected = (torch.sigmoid(z) - torch.sigmoid(other).flip(2)).square().mean()
    assert float(value) == pytest.approx(float(expected)) and float(value) > 0
    value.backward()
    assert z.grad is not None and float(z.grad.abs().sum()) > 0


def test_random_mirror_axes_cover_all_seven_mirrorings():
    g = torch.Generator().manual_seed(1)
    seen = {random_mirror_axes(g) for _ in range(200)}
    assert seen == {(2,), (3,), (4,), (2, 3), (2, 4), (3, 4), (2, 3, 4)}


def test_training_step_adds_weighted_term_on_a_mirrored_pair():
    batch = _batch(0)
    module = _module(weight=3.0)
    torch.manual_seed(5)
    axes = random_mirror_axes()
    torch.manual_seed(5)  # the step draws the same axes
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        image = torch.cat([batch["image"], batch["image"].flip(axes)])
        target = torch.cat([batch["target"], batch["target"].flip(axes)])
        outputs = module.network(image)
        logits = first_output(outputs)
        expected = DeepSupervisionLoss()(outputs, target) + 3.0 * mirror_consistency(
            logits[:2], logits[2:], axes
        )
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    plain = _module(weight=0.0).training_step(batch, 0)
    with torch.no_grad():
        assert float(plain) == pytest.approx(
            float(DeepSupervisionLoss()(module.network(batch["image"]), batch["target"])), rel=1e-5
        )


def test_paired_crop_respects_the_network_stride_and_the_patch():
    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        box = paired_crop((40, 48, 32), 0.75, 4, g)
        sides = [s.stop - s.start for s in box[2:]]
        assert sides == [24, 32, 24]
        assert all(0 <= s.start and s.stop <= size for s, size in zip(box[2:], (40, 48, 32), strict=True))
    assert paired_crop((16, 16, 16), 0.1, 3) is not None  # at least one stride: 4 voxels
    assert [s.stop - s.start for s in paired_crop((16, 16, 16), 0.1, 3)[2:]] == [4, 4, 4]


def test_cropped_pair_step_compares_the_overlap():
    batch = _batch(1)
    module = _module(weight=2.0, crop=0.5)
    torch.manual_seed(7)
    axes = random_mirror_axes()
    box = paired_crop((PATCH,) * 3, 0.5, 3)
    torch.manual_seed(7)
    loss = module.training_step(batch, 0)
    with torch.no_grad():
        outputs = module.network(batch["image"])
        paired = module.network(batch["image"][box].flip(axes))
        seg = 0.5 * (
            DeepSupervisionLoss()(outputs, batch["target"])
            + DeepSupervisionLoss()(paired, batch["target"][box].flip(axes))
        )
        expected = seg + 2.0 * mirror_consistency(first_output(outputs)[box], first_output(paired), axes)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)


def test_bad_consistency_settings_fail_before_training(small_cohort, tmp_path):
    from glioseg.train.run import TrainOptions, prepare

    for weight, crop in ((-1.0, 1.0), (1.0, 0.0), (1.0, 1.5)):
        options = TrainOptions(
            data=str(small_cohort),
            model="nnunet",
            out=str(tmp_path / "run"),
            patch=[16, 16, 16],
            base_features=4,
            mirror_consistency=weight,
            consistency_crop=crop,
        )
        with pytest.raises(ConfigError, match="consistency"):
            prepare(options, printer=lambda line: None)
    assert not (tmp_path / "run").exists()


def _window_gap(module: SegmentationModule, image: torch.Tensor) -> float:
    """Squared probability change inside a 12-voxel box between predicting the patch and the box alone."""
    box = (slice(None), slice(None), *(slice(2, 14),) * 3)
    module.eval()
    with torch.no_grad():
        gap = (torch.sigmoid(module(image)[box]) - torch.sigmoid(module(image[box]))).square().mean()
    module.train()
    return float(gap)


@pytest.mark.parametrize("crop", [1.0, 0.75])
def test_training_with_the_term_makes_predictions_more_invariant(crop):
    held_out = _batch(99)["image"]
    mirror, window = {}, {}
    for weight in (0.0, 20.0):
        module = _module(weight, seed=0, crop=crop)  # same initial weights for both
        optimizer = torch.optim.Adam(module.network.parameters(), lr=3e-3)
        torch.manual_seed(0)
        for step in range(25):
            optimizer.zero_grad()
            module.training_step(_batch(step), step).backward()
            optimizer.step()
        mirror[weight] = _mirror_gap(module, held_out)
        window[weight] = _window_gap(module, held_out)
    # measured: crop 1.0 -> mirror gap 0.24x; crop 0.75 -> mirror gap 0.53x, window gap 0.15x
    assert mirror[20.0] < 0.7 * mirror[0.0], mirror
    if crop < 1:
        assert window[20.0] < 0.5 * window[0.0], window


@pytest.mark.slow
def test_cli_flags_reach_the_recipe_and_the_logs(small_cohort, tmp_path):
    import json

    from typer.testing import CliRunner

    from glioseg.cli import app
    from glioseg.train.callbacks import read_metrics

    runner = CliRunner()
    common = [
        "train",
        str(small_cohort),
        "--model",
        "nnunet",
        "--patch",
        "16,16,16",
        "--base-features",
        "4",
        "--epochs",
        "1",
        "--iters-per-epoch",
        "2",
        "--batch-size",
        "1",
        "--cache",
        str(tmp_path / "cache"),
    ]
    bad = runner.invoke(app, [*common, "--out", str(tmp_path / "bad"), "--consistency-crop", "0"])
    assert bad.exit_code == 1 and "--consistency-crop in (0, 1]" in bad.output.replace("\n", " ")
    ok = runner.invoke(
        app,
        [*common, "--out", str(tmp_path / "run"), "--mirror-consistency", "5", "--consistency-crop", "0.5"],
    )
    assert ok.exit_code == 0, ok.output
    recipe = json.loads((tmp_path / "run" / "model.json").read_text())["recipe"]
    assert recipe["mirror_consistency"] == 5.0 and recipe["consistency_crop"] == 0.5
    logged = read_metrics(tmp_path / "run" / "logs")["train_mirror_consistency"]
    assert len(logged) == 1 and 0 < logged[0][1] < 1


def test_mednext_trains_in_channels_last_on_the_cpu_with_the_same_loss():
    """The layout is a speed lever only (glioseg.models.prefers_channels_last): same loss, same gradients."""
    torch.manual_seed(0)
    plan = _plan("mednext-s-k3")
    plain = SegmentationModule(plan, RECIPES["mednext"])
    fast = SegmentationModule(plan, RECIPES["mednext"])
    fast.load_state_dict(plain.state_dict())
    fast.on_fit_start()
    conv = next(
        m for m in fast.network.modules() if isinstance(m, torch.nn.Conv3d) and m.kernel_size == (1, 1, 1)
    )
    assert conv.weight.is_contiguous(memory_format=torch.channels_last_3d)
    batch = _batch(4)
    losses = [module.training_step(batch, 0) for module in (plain, fast)]
    assert float(losses[1]) == pytest.approx(float(losses[0]), rel=1e-5)
    for loss in losses:
        loss.backward()
    grads = [dict(m.network.named_parameters()) for m in (plain, fast)]
    name = next(iter(grads[0]))
    assert torch.allclose(grads[0][name].grad, grads[1][name].grad, rtol=1e-4, atol=1e-6)
