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

from glioseg.infer.settings import InferenceSettings

TTA_MODES = ("none", "flip", "full", "spread")


def left_right_axis(affine: np.ndarray) -> int:
    """Voxel axis that runs most nearly along the patient's left-right (world x) direction."""
    return int(np.argmax(np.abs(np.asarray(affine)[0, :3])))


def tta_flips(mode: str, affine: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Axis combinations to mirror: ``none`` -> identity; ``flip`` -> identity and left-right;
    ``full`` -> all 8 combinations of the three axes (nnU-Net's mirroring).  (``spread``, one
    combination per ensemble member, is resolved by :func:`member_flips`.)

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


def member_flips(mode: str, member_index: int, affine: np.ndarray | None = None) -> list[tuple[int, ...]]:
    """Flips for ensemble member ``member_index``: ``spread`` gives member *k* the *k*-th of the
    8 mirror combinations (identity first), so an ensemble covers the mirrorings with one pass
    per member; every other mode is the same for all members."""
    if mode == "spread":
        combos = tta_flips("full")
        return [combos[member_index % len(combos)]]
    return tta_flips(mode, affine)


def padded_shape(shape: Sequence[int], divisor: int) -> tuple[int, ...]:
    """Smallest shape >= ``shape`` whose sizes are multiples of ``divisor``."""
    return tuple(int(-(-int(s) // divisor) * divisor) for s in shape)


def predict_whole(
    predictor, x: torch.Tensor, divisor: int, patch_size: Sequence[int] | None = None, overlap: float = 0.5
) -> torch.Tensor:
    """One pass over the whole (zero-padded) volume ``(B, C, X, Y, Z)``; logits cropped back to its shape.

    The networks are fully convolutional, so any size divisible by the total down-sampling
    factor works; padding is split evenly between both ends of each axis.  With a
    ``patch_size``, ``predictor(x, grid)`` is called with the
    :class:`~glioseg.infer.window_norm.WindowGrid` of the sliding windows (``patch_size``,
    ``overlap``) over the unpadded volume, for window-matched normalisation; else ``predictor(x)``.
    """
    shape = tuple(x.shape[2:])
    target = padded_shape(shape, divisor)
    pads = []
    for size, goal in zip(reversed(shape), reversed(target), strict=True):
        extra = goal - size
        pads += [extra // 2, extra - extra // 2]
    xp = torch.nn.functional.pad(x, pads) if any(pads) else x
    starts = [pads[2 * (2 - i)] for i in range(3)]
    if patch_size is None:
        logits = predictor(xp)
    else:
        from glioseg.infer.window_norm import WindowGrid

        grid = WindowGrid(shape, tuple(int(p) for p in patch_size), overlap, tuple(starts))
        logits = predictor(xp, grid)
    return logits[
        :,
        :,
        starts[0] : starts[0] + shape[0],
        starts[1] : starts[1] + shape[1],
        starts[2] : starts[2] + shape[2],
    ]


SMALL_WINDOW_VOXELS = 96**3


def window_batch_size(patch_size: Sequence[int]) -> int:
    """Windows per network call: 2 for patches of at most 96^3 voxels, else 1.

    PyTorch's CPU convolution sends a single-sample input with 3x3x3 kernels to its slow
    native kernel when ``N * C * D * H <= 20480`` (oneDNN otherwise), which is every stage of a
    small patch: two windows per call reach oneDNN and are much faster per window, at twice the
    activation memory (docs/performance.md).  Large patches already reach oneDNN and keep one
    window per call to bound memory.

    >>> window_batch_size((40, 40, 40)), window_batch_size((128, 128, 128))
    (2, 1)
    """
    voxels = int(np.prod([int(p) for p in patch_size]))
    return 2 if voxels <= SMALL_WINDOW_VOXELS else 1


def predict_probabilities(
    network,
    image: np.ndarray,
    patch_size: Sequence[int],
    settings: InferenceSettings = InferenceSettings(device="cpu"),
    flips: Sequence[tuple[int, ...]] = ((),),
    divisor: int = 32,
    sw_batch_size: int | None = None,
) -> np.ndarray:
    """Average sigmoid probabilities over mirrored passes of one network.

    Parameters
    ----------
    network : callable mapping ``(B, 4, X, Y, Z)`` to ``(B, 3, X, Y, Z)`` logits (a torch module
        or an ONNX Runtime predictor)
    image : float32 ``(4, x, y, z)``, preprocessed
    patch_size : window in voxels (the network's training patch)
    settings : read here: ``window`` (``sliding`` Gaussian-weighted windows of ``patch_size``, or
        ``whole``: one pass over the volume zero-padded to multiples of ``divisor``), ``overlap``,
        ``device`` (a concrete one), ``channels_last`` (a bool: run in ``channels_last_3d``),
        ``lean`` (nnU-Net's ``PlainConvUNet`` through :func:`glioseg.infer.lean.lean_forward`:
        same outputs, lower peak memory), ``native_size`` (whole-crop passes of the lean forward
        at the volume's own size instead of padded) and ``window_norm`` (whole-crop passes of a
        torch network normalise every feature map with the statistics of the sliding windows
        that cover it, :mod:`glioseg.infer.window_norm`)
    flips : axis tuples to mirror (see :func:`tta_flips`)
    divisor : total down-sampling factor of the network (``2 ** (n_stages - 1)``)
    sw_batch_size : windows per network call; ``None`` picks :func:`window_batch_size`

    Returns
    -------
    float32 ``(3, x, y, z)`` region probabilities (WT, TC, ET).
    """
    window, overlap, device, channels_last = (
        settings.window,
        settings.overlap,
        settings.device,
        settings.channels_last,
    )
    module = network if isinstance(network, torch.nn.Module) else None
    use_lean = False
    if settings.lean and module is not None and not channels_last:
        from glioseg.infer.lean import lean_forward, supports_lean_forward

        use_lean = supports_lean_forward(module)
        if use_lean and settings.native_size:
            divisor = 1

    def forward(x: torch.Tensor, grid=None) -> torch.Tensor:
        if use_lean:
            return lean_forward(module, x, grid)
        if grid is not None:
            from glioseg.infer.window_norm import window_matched_norms

            with window_matched_norms(module, grid, x.shape[2:]):
                return module(x)
        return network(x)

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None].to(device)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    total = None
    with torch.inference_mode():
        for flip in flips:
            dims = [d + 2 for d in flip]
            xi = torch.flip(x, dims) if dims else x
            if window == "whole":
                norm_patch = patch_size if settings.window_norm and module is not None else None
                logits = predict_whole(forward, xi, divisor, norm_patch, overlap)
            else:
                from monai.inferers import sliding_window_inference  # imported only here: ~4 s cold

                logits = sliding_window_inference(
                    xi,
                    roi_size=tuple(int(p) for p in patch_size),
                    sw_batch_size=sw_batch_size or window_batch_size(patch_size),
                    predictor=forward,
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
    return (total / len(flips))[0].cpu().contiguous().numpy()
