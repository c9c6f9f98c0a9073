"""Image-quality proxies on images whose noise level and slice thickness are known."""

import math

import numpy as np
import pytest

from glioseg.data.radiomics.quality import noise_sigma, quality_features
from glioseg.data.synthetic.degrade import smooth_field, thick_slices


def test_snr_of_a_flat_image_with_white_noise():
    rng = np.random.default_rng(0)
    image = 100.0 + rng.normal(0.0, 5.0, size=(40, 40, 40))
    assert noise_sigma(image, np.ones(image.shape, bool)) == pytest.approx(5.0, rel=0.03)
    q = quality_features(image)
    assert q["snr"] == pytest.approx(20.0, rel=0.03)
    assert quality_features(image * 7.0)["snr"] == pytest.approx(q["snr"], rel=1e-5)  # unitless
    assert math.isnan(q["sharpness"])  # pure noise: no anatomy to be sharp


def test_noise_outside_the_brain_and_at_its_edge_is_ignored():
    rng = np.random.default_rng(1)
    image = np.zeros((40, 40, 40))
    brain = np.zeros(image.shape, bool)
    brain[5:35, 5:35, 5:35] = True
    image[brain] = 100.0 + rng.normal(0.0, 4.0, size=int(brain.sum()))
    assert quality_features(image)["snr"] == pytest.approx(25.0, rel=0.04)


def test_thick_slices_lower_the_sharpness_ratio():
    rng = np.random.default_rng(2)
    anatomy = (100.0 + 10.0 * smooth_field((48, 48, 48), rng, control_points=16)).astype(np.float32)
    noise = rng.normal(0.0, 1.0, anatomy.shape)
    iso = quality_features(anatomy + noise)["sharpness"]
    thick = quality_features(thick_slices(anatomy, axis=2, factor=4) + noise)["sharpness"]
    assert iso > 0.9
    assert thick < 0.75


def test_tiny_brain_gives_nan():
    image = np.zeros((10, 10, 10))
    image[4:6, 4:6, 4:6] = 1.0
    q = quality_features(image)
    assert math.isnan(q["snr"]) and math.isnan(q["sharpness"])
