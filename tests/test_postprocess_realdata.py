"""Post-processing scores on a real BraTS 2018 pair: the identity row is the official scripts' numbers,
and every other row is the lesion-wise score of the applied operations."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from glioseg.evaluate import Pair, evaluate_labels, load_checked_pair
from glioseg.postprocess import apply_operations
from glioseg.postprocess.grid import Grid
from glioseg.postprocess.scoring import score_case

pytestmark = pytest.mark.realdata

EXPECTED = Path(__file__).parent / "data" / "brats2018_official_metrics.csv"
CASE = "Brats18_TCIA01_378_1"  # 86 WT components, 3 of them false positives


def test_score_table_on_a_real_pair(real_data):
    pair = Pair(
        CASE,
        real_data / "brats2018-predictions" / f"{CASE}-pred.nii.gz",
        real_data / "brats2018" / CASE / f"{CASE}_seg.nii.gz",
    )
    pred, gt, spacing, _ = load_checked_pair(pair)
    settings = Grid(
        wt_min_size=(0, 1000), tc_min_size=(0, 100), et_min_size=(0, 50), et_ratio=(0,)
    ).settings()
    table = score_case(pred, gt, spacing, settings, "brats2024-ssa", CASE)
    expected = pd.read_csv(EXPECTED).set_index(["definition", "case_id", "region"])
    for i, region in enumerate(("WT", "TC", "ET")):
        row = expected.loc[("brats2024-ssa", CASE, region)]
        assert table.dice[0, i] == pytest.approx(row["lesionwise_dice"], abs=1e-9)
        assert table.hd95[0, i] == pytest.approx(row["lesionwise_hd95"], abs=1e-9)
    assert table.dice[4, 0] > table.dice[0, 0]  # WT < 1000 voxels removes the three WT false positives
    for s in (4, 7):
        result = evaluate_labels(
            apply_operations(pred, settings[s].operations()), gt, spacing, "brats2024-ssa"
        )
        for i, region in enumerate(("WT", "TC", "ET")):
            assert table.dice[s, i] == result.regions[region].lesionwise_dice
            assert table.hd95[s, i] == result.regions[region].lesionwise_hd95
