"""Real-data regression of the bundled real models (skipped without ../shared/data or a real bundle).

At release, ``glioseg models package`` records in the card the lesion-wise Dice of the shipped
pipeline (default mode, the bundle's weights and post-processing) on a few real cases; the
pipeline must keep giving those numbers within 0.02.
"""

import pytest

from glioseg.data.cases import discover_cases, load_case
from glioseg.data.labels import REGIONS
from glioseg.evaluate import evaluate_labels
from glioseg.models.catalog import bundled_cards

REAL = [c for c in bundled_cards() if not c.synthetic]
TOLERANCE = 0.02


@pytest.mark.realdata
@pytest.mark.slow
@pytest.mark.parametrize("card", REAL, ids=[c.name for c in REAL])
def test_shipped_pipeline_keeps_its_recorded_dice_on_real_cases(card, real_data):
    import numpy as np

    from glioseg import segment

    recorded = (card.doc.get("results") or {}).get("regression") or {}
    assert recorded, (
        f"{card.name}: the card records no regression cases (repackage with glioseg models package)"
    )
    cases = discover_cases(real_data / "brats2018").by_id()
    for case_id, expected in recorded.items():
        data = load_case(cases[case_id])
        labels = np.asarray(segment(cases[case_id], card.name).dataobj)
        result = evaluate_labels(labels, data.label, data.spacing, "brats2024-ssa", case_id)
        for region in REGIONS:
            got = result.regions[region].lesionwise_dice
            assert abs(got - expected[region]) <= TOLERANCE, (
                card.name,
                case_id,
                region,
                got,
                expected[region],
            )


def test_real_models_are_bundled_or_the_release_is_in_progress():
    """Until the first real release is packaged, the README and docs/models.md must say so."""
    from pathlib import Path

    if REAL:
        assert all(c.doc.get("training_data") for c in REAL)
        return
    root = Path(__file__).resolve().parents[1]
    assert "no model for real scans" in (root / "README.md").read_text()
    assert "in training" in (root / "docs" / "models.md").read_text()
