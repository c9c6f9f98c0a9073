"""Regression on the 20 real BraTS 2018 pairs against numbers from the official BraTS scripts.

The expected values in ``tests/data/brats2018_official_metrics.csv`` were computed by the
official scripts themselves (see tests/data/README.md), so this checks glioseg against an
independent implementation, through the same path as ``glioseg evaluate``.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from glioseg.evaluate.runner import evaluate

EXPECTED = Path(__file__).parent / "data" / "brats2018_official_metrics.csv"
FLOAT_METRICS = (
    "lesionwise_dice",
    "lesionwise_hd95",
    "legacy_dice",
    "legacy_hd95",
    "sensitivity",
    "specificity",
    "gt_volume_mm3",
)
COUNT_METRICS = ("n_tp", "n_fp", "n_fn")

pytestmark = pytest.mark.realdata


@pytest.mark.parametrize("definition", ["brats2024-ssa", "brats2023"])
def test_matches_official_scripts_on_real_pairs(real_data, definition):
    expected = pd.read_csv(EXPECTED)
    expected = expected[expected["definition"] == definition].set_index(["case_id", "region"])
    run = evaluate(real_data / "brats2018-predictions", real_data / "brats2018", definition=definition)
    # Brats18_2013_2_1 has ground truth but no prediction: reported, the others evaluated.
    assert [f.case_id for f in run.failures] == ["Brats18_2013_2_1"]
    assert "has no prediction" in run.failures[0].message
    assert sorted(r.case_id for r in run.results) == sorted(set(expected.index.get_level_values(0)))
    assert len(run.results) == 20
    worst = 0.0
    for result in run.results:
        for region, scores in result.regions.items():
            row = expected.loc[(result.case_id, region)]
            for name in FLOAT_METRICS:
                worst = max(worst, abs(getattr(scores, name) - row[name]))
            for name in COUNT_METRICS:
                assert getattr(scores, name) == row[name], (result.case_id, region, name)
    assert worst <= 1e-6


def test_ssa_predictions_need_an_explicit_geometry_choice(real_data, tmp_path):
    """The two SSA prediction sets share a voxel grid but not their header affines."""
    source = real_data / "ssa-predictions"
    cases = sorted(p.name for p in (source / "pretrained").glob("*.nii.gz"))[:2]
    for folder in ("finetuned", "pretrained"):
        (tmp_path / folder).mkdir()
        for name in cases:
            (tmp_path / folder / name).symlink_to(source / folder / name)
    strict = evaluate(tmp_path / "pretrained", tmp_path / "finetuned")
    assert not strict.results and len(strict.failures) == 2
    assert all("affine" in f.message and "--geometry shape" in f.message for f in strict.failures)
    relaxed = evaluate(tmp_path / "pretrained", tmp_path / "finetuned", geometry="shape")
    assert [r.case_id for r in relaxed.results] == [name[: -len(".nii.gz")] for name in cases] and relaxed.ok
