"""Region-based loss: soft Dice + binary cross-entropy on WT, TC and ET, with deep supervision.

As nnU-Net's ``DC_and_BCE_loss`` for region-based training: sigmoid outputs, Dice computed over
the whole batch ("batch Dice") with a small smoothing term, BCE on the logits, equal weights.
MONAI's ``DiceLoss`` returns ``1 - Dice`` (nnU-Net returns ``-Dice``; the gradients are identical).
Deep supervision weights follow nnU-Net: ``1 / 2^i`` for output ``i`` (0 = full resolution), the
lowest resolution weighted 0, normalised to sum to 1.

:func:`mirror_consistency` is an optional extra term (``Recipe.mirror_consistency``): the mean
squared difference between the region probabilities of a patch and those of its mirrored copy,
mirrored back. Networks trained with it change less under test-time mirroring, so a single
unmirrored pass (``glioseg predict --mode fast``) lands closer to the 8-mirroring prediction
(transformation consistency, as in Bortsova et al., MICCAI 2019).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


class RegionDiceBCELoss(nn.Module):
    """``Dice(sigmoid(logits), target) + BCE(logits, target)`` for ``(B, 3, X, Y, Z)`` tensors."""

    def __init__(self, smooth: float = 1e-5):
        super().__init__()
        from monai.losses import DiceLoss

        self.dice = DiceLoss(
            sigmoid=True, batch=True, smooth_nr=smooth, smooth_dr=smooth, include_background=True
        )
        self.bce = nn.BCEWithLogitsLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        return self.dice(logits, target) + self.bce(logits, target)


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """nnU-Net's weights for ``n_outputs`` deep-supervision outputs.

    Examples
    --------
    >>> [round(w, 4) for w in deep_supervision_weights(4)]
    [0.5714, 0.2857, 0.1429, 0.0]
    """
    if n_outputs == 1:
        return [1.0]
    weights = [1.0 / 2**i for i in range(n_outputs)]
    weights[-1] = 0.0
    total = sum(weights)
    return [w / total for w in weights]


def downsample_target(target: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """Nearest-neighbour down-sampling of region targets to an output's shape."""
    if tuple(target.shape[2:]) == tuple(shape):
        return target
    return F.interpolate(target, size=tuple(shape), mode="nearest-exact")


def mirror_consistency(
    logits: torch.Tensor, mirrored_logits: torch.Tensor, axes: Sequence[int]
) -> torch.Tensor:
    """Mean squared difference of region probabilities under mirroring.

    Parameters
    ----------
    logits : ``(B, C, X, Y, Z)`` logits of a batch of patches.
    mirrored_logits : logits of the same patches flipped along ``axes``.
    axes : tensor dimensions that were flipped (2, 3, 4 are the spatial ones).

    Returns
    -------
    Scalar in [0, 1]; 0 exactly when the network's probabilities are equivariant to the flip.

    Examples
    --------
    >>> z = torch.randn(1, 3, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    >>> float(mirror_consistency(z, z.flip(2), (2,)))
    0.0
    """
    probabilities = torch.sigmoid(logits.float())
    # Flip back before the sigmoid: both sigmoids then run on identically laid-out values, so an
    # equivariant pair gives exactly 0 (a vectorised sigmoid may round a value differently
    # depending on its position in memory, which made the difference 1e-18 on some CPUs).
    restored = torch.sigmoid(mirrored_logits.float().flip(tuple(axes)))
    return (probabilities - restored).square().mean()


class DeepSupervisionLoss(nn.Module):
    """Weighted sum of :class:`RegionDiceBCELoss` over the deep-supervision outputs."""

    def __init__(self, base: nn.Module | None = None):
        super().__init__()
        self.base = base or RegionDiceBCELoss()

    def forward(self, outputs: torch.Tensor | Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        outputs = [outputs] if isinstance(outputs, torch.Tensor) else list(outputs)
        weights = deep_supervision_weights(len(outputs))
        total = outputs[0].new_zeros(())
        for weight, output in zip(weights, outputs, strict=True):
            if weight:
                total = total + weight * self.base(output, downsample_target(target, output.shape[2:]))
        return total
