"""Window-matched normalisation: a whole-volume pass whose instance norms see what sliding windows see.

nnU-Net and MedNeXt normalise every feature map with its own statistics (instance norm; MedNeXt's
group norm with one channel per group is the same thing).  Trained and run on windows of the
training patch, each window is normalised with the mean and variance *of that window*.  One pass
over the whole brain crop (``--window whole``) normalises with the statistics of the whole crop
instead, a context the network never saw in training.

Window-matched normalisation keeps the single pass but gives every feature voxel the statistics
of the sliding windows that cover it: for each normalisation layer, the mean and variance of
each window of the sliding-window layout (the same layout as MONAI's
``sliding_window_inference``: windows of the training patch, overlap 0.5, the last window of an
axis flush with the end) are computed over that window's footprint at the layer's scale, and
each voxel is normalised with the Gaussian-weighted mean of its windows' affine maps
(sigma = 1/8 of the patch, the weighting sliding windows use for their outputs)::

    y(p) = sum_w g_w(p) (x(p) - mu_w) / sqrt(var_w + eps) / sum_w g_w(p)

All sums are separable over the three axes, so the statistics cost a few extra passes over each
feature map (plane by plane: no full-size temporary), not extra convolutions.  What it does not
reproduce is the zero padding at window borders inside the crop, so the result is close to, not
equal to, sliding windows.  It brings a whole-crop pass much closer to the sliding-window
reference than the crop's own statistics, for a small extra cost; the agreement and timings are
in docs/performance.md ("Agreement ... with window-matched normalisation").
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch
from torch import nn


@dataclass(frozen=True)
class WindowGrid:
    """The sliding-window layout that a whole-volume pass imitates.

    Attributes
    ----------
    volume : voxels of the real volume per axis (before any padding for the network)
    patch : window size in voxels per axis (the network's training patch)
    overlap : fraction of a window shared with its neighbour, as in sliding-window inference
    offset : where the real volume starts inside the tensor the network sees (padding before it)
    sigma_scale : Gaussian sigma of the blending weights as a fraction of the patch
    """

    volume: tuple[int, ...]
    patch: tuple[int, ...]
    overlap: float = 0.5
    offset: tuple[int, ...] = (0, 0, 0)
    sigma_scale: float = 0.125

    def starts(self, axis: int) -> list[int]:
        """Window starts along ``axis`` in volume voxels, as MONAI's ``dense_patch_slices``.

        >>> WindowGrid((146, 194, 151), (128, 128, 128)).starts(1)
        [0, 64, 66]
        >>> WindowGrid((30, 30, 30), (40, 40, 40)).starts(0)
        [0]
        """
        size, patch = self.volume[axis], self.patch[axis]
        if size <= patch:
            return [0]
        interval = max(int(patch * (1 - self.overlap)), 1)
        count = next(d for d in range(size) if d * interval + patch >= size) + 1
        return [i * interval - max(i * interval + patch - size, 0) for i in range(count)]


@lru_cache(maxsize=256)
def _axis_weights(grid: WindowGrid, axis: int, tensor_size: int, n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Coverage ``(I, n)`` (fraction of each feature voxel inside window ``i``) and blending
    weights ``(I, n)`` (summing to 1 over ``i``) for a feature axis of ``n`` voxels that spans
    ``tensor_size`` input voxels."""
    factor = 2.0 ** round(math.log2(tensor_size / n)) if n < tensor_size else 1.0
    starts = grid.starts(axis)
    patch, size, offset = grid.patch[axis], grid.volume[axis], grid.offset[axis]
    edges = np.arange(n + 1) * factor
    centres = (np.arange(n) + 0.5) * factor - 0.5
    sigma = grid.sigma_scale * patch
    coverage = np.zeros((len(starts), n))
    blend = np.zeros((len(starts), n))
    distance = np.zeros((len(starts), n))
    for i, start in enumerate(starts):
        lo, hi = offset + start, offset + min(start + patch, size)
        coverage[i] = np.clip(np.minimum(edges[1:], hi) - np.maximum(edges[:-1], lo), 0, None) / factor
        centre = lo + (patch - 1) / 2
        # as MONAI's Gaussian importance map: sigma = sigma_scale * patch, floored at 1e-3
        blend[i] = np.maximum(np.exp(-((centres - centre) ** 2) / (2 * sigma**2)), 1e-3) * coverage[i]
        distance[i] = np.abs(centres - centre)
    # voxels outside every window (padding around the volume) take their nearest window's statistics
    outside = blend.sum(axis=0) == 0
    blend[:, outside] = 0
    blend[distance[:, outside].argmin(axis=0), np.flatnonzero(outside)] = 1
    blend /= blend.sum(axis=0, keepdims=True)
    return torch.from_numpy(coverage.astype(np.float32)), torch.from_numpy(blend.astype(np.float32))


def _binary_ranges(cover: torch.Tensor) -> list[tuple[int, int]] | None:
    """``[lo, hi)`` of each window when ``cover`` ``(I, n)`` is 0/1 and contiguous, else None."""
    if not bool(((cover == 0) | (cover == 1)).all()):
        return None
    ranges = []
    for row in cover:
        inside = torch.nonzero(row).flatten()
        if len(inside) == 0 or int(inside[-1]) - int(inside[0]) + 1 != len(inside):
            return None
        ranges.append((int(inside[0]), int(inside[-1]) + 1))
    return ranges


def window_normalise(
    y: torch.Tensor,
    grid: WindowGrid,
    eps: float = 1e-5,
    weight: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    tensor_shape: Sequence[int] | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Normalise ``y`` ``(B, C, X, Y, Z)`` with window-matched instance statistics.

    Parameters
    ----------
    y : feature map of one normalisation layer
    grid : the sliding-window layout of the network's input
    eps, weight, bias : the layer's epsilon and optional per-channel affine parameters
    tensor_shape : spatial shape of the network's input, which may be the volume padded around
        ``grid.offset``; default ``grid.volume`` (an unpadded input)
    out : where to write the result, of ``y``'s shape and memory format; ``y`` itself works (in
        place); default a new tensor

    Returns
    -------
    ``out``, the normalised feature map.

    Examples
    --------
    With a single window covering the whole volume this is instance normalisation:

    >>> x = torch.randn(1, 2, 8, 8, 8)
    >>> out = window_normalise(x, WindowGrid((8, 8, 8), (8, 8, 8)))
    >>> bool(torch.allclose(out, torch.nn.functional.instance_norm(x), atol=1e-4))
    True
    """
    shape = tuple(tensor_shape) if tensor_shape is not None else tuple(grid.volume)
    spatial = tuple(y.shape[2:])
    (cover_x, blend_x), (cover_y, blend_y), (cover_z, blend_z) = (
        _axis_weights(grid, a, shape[a], spatial[a]) for a in range(3)
    )
    volume = torch.einsum("i,j,k->ijk", cover_x.sum(1), cover_y.sum(1), cover_z.sum(1)).double()
    channels, size_y = y.shape[1], spatial[1]
    z_ranges = _binary_ranges(cover_z)
    cover_zt = cover_z.T.contiguous()  # (Z, K)
    if out is None:
        out = torch.empty_like(y)
    for b in range(y.shape[0]):
        yb, ob = y[b], out[b]
        # channels_last_3d (MedNeXt on the CPU): planes are (Y, Z, C) in memory, so work on that view
        last = not yb.is_contiguous() and yb.permute(1, 2, 3, 0).is_contiguous()
        # moments of y - g, g the channel mean, so that the one-pass variance E[x^2] - E[x]^2 is
        # accurate; g is added back to the window means afterwards
        centre = yb.mean(dim=(1, 2, 3))
        centre_plane = centre.view(1, 1, -1) if last else centre.view(-1, 1, 1)
        # window sums along z plane by plane (the plane stays in the CPU cache for both moments),
        # then along x and y on the small (C, X, Y, K) result
        first = y.new_empty(channels, spatial[0], size_y, cover_zt.shape[1])
        second = torch.empty_like(first)
        for x in range(spatial[0]):
            plane = (yb[:, x].permute(1, 2, 0) if last else yb[:, x]) - centre_plane  # (Y, Z, C) or (C, Y, Z)
            squared = plane.square()
            for target, values in ((first, plane), (second, squared)):
                if last:  # (K, Z) @ (Z, C) per y
                    target[:, x] = torch.matmul(cover_z, values).permute(2, 0, 1)
                elif z_ranges is not None:  # whole voxels: sums over contiguous ranges
                    for k, (lo, hi) in enumerate(z_ranges):
                        target[:, x, :, k] = values[..., lo:hi].sum(-1)
                else:  # fractional coverage (coarse stages): weighted sums
                    target[:, x] = torch.matmul(values, cover_zt)
            del squared, plane
        mean, meansq = (
            torch.einsum(
                "mcxyk,ix,jy->mcijk",
                torch.stack((first, second)).double(),
                cover_x.double(),
                cover_y.double(),
            )
            / volume
        )
        del first, second
        scale = torch.rsqrt((meansq - mean.square()).clamp_min_(0) + eps)
        shift = -(mean + centre.double().view(-1, 1, 1, 1)) * scale
        if weight is not None:  # the layer's affine folded into the maps: no extra pass
            scale = scale * weight.double().view(-1, 1, 1, 1)
            shift = shift * weight.double().view(-1, 1, 1, 1)
        if bias is not None:
            shift = shift + bias.double().view(-1, 1, 1, 1)
        # the blended affine map y * a + b, a and b summed over the windows, built along z per plane
        scale_xy, shift_xy = torch.einsum(
            "mcijk,ix,jy->mcxyk", torch.stack((scale, shift)), blend_x.double(), blend_y.double()
        ).float()
        for x in range(spatial[0]):
            if last:  # maps laid out as the plane, (Y, Z, C)
                plane, target = yb[:, x].permute(1, 2, 0), ob[:, x].permute(1, 2, 0)
                a = torch.einsum("kz,cyk->yzc", blend_z, scale_xy[:, x])
                b_ = torch.einsum("kz,cyk->yzc", blend_z, shift_xy[:, x])
            else:
                plane, target = yb[:, x], ob[:, x]
                a = torch.matmul(scale_xy[:, x], blend_z)
                b_ = torch.matmul(shift_xy[:, x], blend_z)
            torch.addcmul(b_, plane, a, out=target)  # one pass: plane * a + b
    return out


def is_instance_norm(module: nn.Module) -> bool:
    """True for normalisations with per-sample, per-channel statistics: ``InstanceNorm3d``
    without running statistics, and ``GroupNorm`` with one channel per group (MedNeXt's)."""
    if isinstance(module, nn.InstanceNorm3d):
        return not module.track_running_stats
    return isinstance(module, nn.GroupNorm) and module.num_groups == module.num_channels


class WindowMatchedNorm(nn.Module):
    """Drop-in replacement for an instance-like norm that uses window-matched statistics."""

    def __init__(self, norm: nn.Module, grid: WindowGrid, tensor_shape: Sequence[int]):
        super().__init__()
        self.norm, self.grid, self.tensor_shape = norm, grid, tuple(tensor_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        affine = getattr(self.norm, "affine", False)
        return window_normalise(
            x,
            self.grid,
            self.norm.eps,
            self.norm.weight if affine else None,
            self.norm.bias if affine else None,
            self.tensor_shape,
        )


@contextlib.contextmanager
def window_matched_norms(
    network: nn.Module, grid: WindowGrid, tensor_shape: Sequence[int]
) -> Iterator[nn.Module]:
    """Temporarily replace every instance-like norm of ``network`` by a :class:`WindowMatchedNorm`.

    The network is restored when the block exits, also on error.
    """
    swapped: list[tuple[nn.Module, str, nn.Module]] = []
    try:
        for parent in list(network.modules()):
            for name, child in list(parent.named_children()):
                if is_instance_norm(child):
                    setattr(parent, name, WindowMatchedNorm(child, grid, tensor_shape))
                    swapped.append((parent, name, child))
        yield network
    finally:
        for parent, name, child in swapped:
            setattr(parent, name, child)
