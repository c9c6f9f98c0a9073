"""glioseg prepare's dependencies install with everything they need inside their wheels.

The converter's binary and the skull stripper's weights must be on disk after ``pip install``:
``glioseg prepare`` runs offline and downloads nothing at run time (docs/prepare.md).
"""

from __future__ import annotations

import subprocess
from pathlib import Path


def test_dcm2niix_binary_ships_in_its_wheel():
    import dcm2niix

    binary = Path(dcm2niix.bin)
    assert binary.is_file()
    done = subprocess.run([str(binary), "-v"], capture_output=True, text=True, timeout=60)
    assert "dcm2niix" in (done.stdout + done.stderr).lower()


def test_deepbet_weights_ship_in_its_wheel():
    from deepbet.utils import DATA_PATH

    for name in ("model.pt", "bbox_model.pt"):
        weights = Path(DATA_PATH) / "models" / name
        assert weights.is_file() and weights.stat().st_size > 1_000_000, weights


def test_pydicom_and_simpleitk_import():
    import pydicom
    import SimpleITK as sitk

    assert int(pydicom.__version__.split(".")[0]) >= 3
    assert sitk.Euler3DTransform().GetNumberOfParameters() == 6
