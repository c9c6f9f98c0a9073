"""Cropping, normalisation, resampling and their exact inverse; the on-disk cache; fingerprint and plan."""

import numpy as np
import pytest

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.labels import labels_to_regions
from glioseg.data.preprocess import PreprocessedCache, preprocess_case, restore_to_original
from glioseg.errors import ConfigError
from glioseg.models.plan import Fingerprint, make_plan, n_stages_for_patch


@pytest.fixture(scope="module")
def loaded(small_cohort):
    return load_case(discover_cases(small_cohort).cases[0])


def test_crop_and_zscore(loaded):
    image, label, info = preprocess_case(loaded)
    assert info.shape == info.cropped_shape and image.shape[1:] == info.shape
    mask = np.any(image != 0, axis=0)
    for channel in image:
        assert abs(float(channel[mask].mean())) < 1e-4 and float(channel[mask].std()) == pytest.approx(
            1.0, abs=1e-3
        )
        assert np.all(channel[~mask] == 0)
    # nothing of the brain is cropped away
    brain = np.any(loaded.image != 0, axis=0)
    assert brain.sum() == mask.sum()


def test_native_spacing_inverse_is_exact(loaded):
    _, label, info = preprocess_case(loaded)
    assert np.array_equal(restore_to_original(label, info, is_labels=True), loaded.label)
    regions = labels_to_regions(label).astype(np.float32)
    restored = restore_to_original(regions, info)
    assert restored.shape == (3, *loaded.label.shape)
    assert np.array_equal(restored > 0.5, labels_to_regions(loaded.label))


def test_resampled_inverse_is_close_and_nested(loaded):
    image, label, info = preprocess_case(loaded, target_spacing=(6.0, 6.0, 6.0))
    assert info.resampled and info.shape == tuple(round(s * 4 / 6) for s in info.cropped_shape)
    wt, tc, et = labels_to_regions(label)
    assert np.all(tc <= wt) and np.all(et <= tc)
    back = restore_to_original(label, info, is_labels=True)
    assert back.shape == loaded.label.shape
    truth, pred = loaded.label > 0, back > 0
    dice = 2 * (truth & pred).sum() / (truth.sum() + pred.sum())
    assert dice > 0.85


def test_cache_reuses_and_refreshes(small_cohort, tmp_path):
    case = discover_cases(small_cohort).cases[1]
    cache = PreprocessedCache(tmp_path, None)
    info = cache.ensure(case)
    meta = cache.paths(case.case_id)["meta"]
    stamp = meta.stat().st_mtime_ns
    assert cache.ensure(case) == info and meta.stat().st_mtime_ns == stamp
    image, label, fg = cache.load(case.case_id)
    assert image.shape == (4, *info.shape) and label.shape == info.shape
    assert fg.shape[1] == 4 and set(np.unique(fg[:, 0])) <= {0, 1, 2}
    assert np.all(label[tuple(fg[fg[:, 0] == 0, 1:].T)] > 0)  # WT samples lie in the tumour


def _brats_fingerprint(n=10):
    return Fingerprint(
        n_cases=n,
        spacings=[[1.0, 1.0, 1.0]] * n,
        shapes=[[240, 240, 155]] * n,
        median_spacing=[1.0, 1.0, 1.0],
        median_shape=[240, 240, 155],
        cropped_shapes=[[140, 172, 138]] * n,
    )


def test_brats_plan_is_nnunet_3d_fullres():
    plan = make_plan(_brats_fingerprint(), "nnunet", memory_budget_gib=64)
    assert plan.patch_size == [128, 128, 128] and plan.n_stages == 6 and plan.batch_size == 2
    assert plan.model_config["arch_kwargs"]["features_per_stage"] == [32, 64, 128, 256, 320, 320]
    mednext = make_plan(_brats_fingerprint(), "mednext-m-k3", memory_budget_gib=64)
    assert mednext.patch_size == [128, 128, 128]
    assert len(mednext.model_config["arch_kwargs"]["blocks_down"]) == 4


def test_planner_shrinks_patch_to_fit_budget():
    small = make_plan(_brats_fingerprint(), "nnunet", memory_budget_gib=3.0)
    assert small.estimated_memory_gib <= 3.0
    assert np.prod(small.patch_size) < 128**3


def test_plan_errors():
    with pytest.raises(ConfigError, match="more than the memory budget"):
        make_plan(_brats_fingerprint(), "nnunet", patch_size=(128, 128, 128), memory_budget_gib=2.0)
    with pytest.raises(ConfigError, match="divisible"):
        make_plan(_brats_fingerprint(), "nnunet", patch_size=(100, 128, 128), memory_budget_gib=64)
    with pytest.raises(ConfigError, match="unknown model"):
        make_plan(_brats_fingerprint(), "segformer")


def test_stage_count_follows_patch():
    assert n_stages_for_patch((128, 128, 128)) == 6
    assert n_stages_for_patch((32, 32, 32)) == 4
    assert n_stages_for_patch((64, 64, 16)) == 3
