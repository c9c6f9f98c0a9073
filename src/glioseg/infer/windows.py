"""Region probabilities of one network on one preprocessed case: sliding windows and mirroring TTA.

Sliding-window inference uses MONAI's ``sliding_window_inference`` with Gaussian importance
weighting (sigma = 1/8 of the patch, as nnU-Net) and a configurable overlap.  Test-time
augmentation mirrors the input along a set of axes, predicts, mirrors back and averages the
sigmoid probabilities.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

TTA_MODES = ("none", "flip", "full")


def left_right_axis(affine: np.ndarray) -> int:
    """Voxel axis that runs most nearly along the patient's left-right (world x) direction."""
    return int(np.argmax(np.abs(np.asarray(affine)[0, :3])))


def tta_flips(mode: str, affine: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Axis combinations to mirror: ``none`` -> identity; ``flip`` -> identity and left-right;
    ``full`` -> all 8 combinations of the three axes (nnU-Net's mirroring).

    Examples
    --------
    >>> tta_flips("flip", np.diag([-1.0, -1.0, 1.0, 1.0]))
    [(), (0,)]
    >>> len(tta_flips("full"))
    8
    """
    if mode == "none":
        return [()]
    if mode == "flip":
        return [(), (left_right_axis(affine if affine is not None else np.eye(4)),)]
    if mode == "full":
        return [c for r in range(4) for c in itertools.combinations(range(3), r)]
    raise ValueError(f"unknown test-time augmentation {mode!r}; expected one of {', '.join(TTA_MODES)}")


def predict_probabilities(
    network: nn.Module,
    image: np.ndarray,
    patch_size: Sequence[int],
    overlap: float = 0.5,
    flips: Sequence[tuple[int, ...]] = ((),),
    device: str | torch.device = "cpu",
    sw_batch_size: int = 1,
) -> np.ndarray:
    """Average sigmoid probabilities over mirrored sliding-window passes.

    Parameters
    ----------
    network : maps ``(B, 4, *patch)`` to ``(B, 3, *patch)`` logits
    image : float32 ``(4, x, y, z)``, preprocessed
    patch_size : window in voxels (the network's training patch)
    overlap : fraction of a window shared with its neighbour (0 <= overlap < 1)
    flips : axis tuples to mirror (see :func:`tta_flips`)

    Returns
    -------
    float32 ``(3, x, y, z)`` region probabilities (WT, TC, ET).
    """
    from monai.inferers import sliding_window_inference

    if not 0 <= overlap < 1:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    total = None
    with torch.inference_mode():
        for flip in flips:
            dims = [d + 2 for d in flip]
            xi = torch.flip(x, dims) if dims else x
            logits = sliding_window_inference(
                xi,
                roi_size=tuple(int(p) for p in patch_size),
                sw_batch_size=sw_batch_size,
                predictor=network,
                overlap=overlap,
                mode="gaussian",
                sigma_scale=0.125,
                padding_mode="constant",
                cval=0.0,
            )
            prob = torch.sigmoid(logits.float())
            if dims:
                prob = torch.flip(prob, dims)
            total = prob if total is None else total.add_(prob)
    return (total / len(flips))[0].cpu().numpy()
