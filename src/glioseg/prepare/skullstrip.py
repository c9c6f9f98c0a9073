"""Skull stripping with deepbet (Fisch et al. 2024), whose TorchScript weights ship inside its wheel.

deepbet is a published brain-extraction model (two 3-D U-Nets: a coarse one that finds the brain's
bounding box at 128^3 and a fine one at 256^3 inside it), trained on T1-weighted scans of many
sites; its weights are the files ``data/models/{bbox_model,model}.pt`` that ``pip install deepbet``
puts on disk, so nothing is downloaded at run time. It runs on the CPU here (docs/prepare.md gives
the measured time). It is given the co-registered T1 (t1n) on a 1 mm grid, as it was trained.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glioseg.errors import ConfigError

#: deepbet's probability threshold (its default).
THRESHOLD = 0.5


def weights_paths() -> tuple[Path, Path]:
    """deepbet's two weight files inside its installed wheel; :class:`ConfigError` when absent."""
    from deepbet.utils import DATA_PATH

    paths = (Path(DATA_PATH) / "models" / "model.pt", Path(DATA_PATH) / "models" / "bbox_model.pt")
    for p in paths:
        if not p.is_file():
            raise ConfigError(f"deepbet's weights are missing ({p}); reinstall deepbet (pip install deepbet)")
    return paths


def brain_mask(t1: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Brain mask of a T1-weighted volume.

    Parameters
    ----------
    t1 : ndarray, float, shape (X, Y, Z)
        T1-weighted intensities (any scale; deepbet normalises with the 0.5/99.5 percentiles).
    affine : (4, 4) voxel -> RAS+ mm

    Returns
    -------
    ndarray of bool, shape (X, Y, Z): the largest connected brain component, holes filled.
    """
    import nibabel as nib
    import torch
    from deepbet import BrainExtraction

    model, bbox = weights_paths()
    with torch.inference_mode():
        extractor = BrainExtraction(no_gpu=True, model_path=str(model), bbox_model_path=str(bbox))
        image = nib.Nifti1Image(np.asarray(t1, dtype=np.float32), affine)
        _, mask, _ = extractor.run(image, threshold=THRESHOLD)
    return np.asarray(mask.dataobj) > 0
