"""Shared fixtures: small synthetic cases written in each layout, and the optional real data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch

from glioseg.data.synthetic import generate_case, write_case

# Two cores: keep torch from oversubscribing when numpy/scipy also run threads.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SMALL_SHAPE = (48, 48, 40)
SMALL_SPACING = 4.0


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (override with GLIOSEG_SHARED_DATA)."""
    return Path(os.environ.get("GLIOSEG_SHARED_DATA", SHARED_DATA))


@pytest.fixture(scope="session")
def real_data() -> Path:
    root = shared_data_dir()
    if not (root / "brats2018").is_dir():
        pytest.skip(f"real data not available at {root}")
    return root


@pytest.fixture(scope="session")
def small_cohort(tmp_path_factory) -> Path:
    """Four small ssa cases (48x48x40 at 4 mm) in BraTS 2023 layout; treat as read-only."""
    root = tmp_path_factory.mktemp("cohort")
    for index in range(1, 5):
        write_case(generate_case(7, index, "ssa", SMALL_SHAPE, SMALL_SPACING), root)
    return root


@pytest.fixture()
def one_case(tmp_path) -> Path:
    """A fresh small adult case folder that a test may modify."""
    return write_case(generate_case(3, 1, "adult", SMALL_SHAPE, SMALL_SPACING), tmp_path)


def labels_are_nested(labels: np.ndarray) -> bool:
    from glioseg.data.labels import labels_to_regions

    wt, tc, et = labels_to_regions(labels)
    return bool(np.all(tc <= wt) and np.all(et <= tc))


def write_random_model(folder, seed=0, spacing=4.0, patch=32, base_features=4, name="nnunet"):
    """A freshly initialised (untrained) model saved as a glioseg run: enough for geometry and plumbing tests."""
    from glioseg.models import build_model, model_config
    from glioseg.models.checkpoint import save_model
    from glioseg.models.plan import Plan, n_stages_for_patch

    torch.manual_seed(seed)
    stages = n_stages_for_patch((patch,) * 3)
    config = model_config(name, stages, base_features)
    network = build_model(config)
    plan = Plan(
        model=name,
        target_spacing=[spacing] * 3,
        patch_size=[patch] * 3,
        batch_size=2,
        n_stages=stages,
        base_features=base_features,
        max_features=320,
        memory_budget_gib=1.0,
        estimated_memory_gib=0.5,
        median_shape=[40.0] * 3,
        model_config=config.to_dict(),
    )
    folder.mkdir(parents=True, exist_ok=True)
    save_model(
        network.state_dict(),
        {"plan": plan.to_dict(), "model_config": config.to_dict(), "seed": seed},
        folder / "model",
    )
    return folder
