"""A memory-lean inference forward for nnU-Net's ``PlainConvUNet``: the same function, fewer live tensors.

The module's own forward keeps every encoder output alive until the decoder has finished,
allocates a new tensor for each instance normalisation and concatenates skip and up-sampled
features into a third tensor; on top of that, oneDNN copies each convolution's input into its
blocked layout.  For one pass over a whole brain crop at 1 mm (146 x 194 x 151 voxels),
each full-resolution 32-channel float32 tensor is 550 MB, so these copies decide the peak
memory of ``--window whole``.  :func:`lean_forward`

- normalises (instance norm) and activates (LeakyReLU/ReLU) each convolution's output in place,
  taking the statistics from a sum and a 2-norm (``torch.var_mean`` is ~10x slower on the CPU),
  or window-matched statistics (:mod:`glioseg.infer.window_norm`) when given a grid;
- releases every tensor as soon as its last consumer has run (each skip right after the
  decoder convolution that reads it; the caller's input after the first convolution);
- never builds the concatenation of skip and up-sampled features: the first decoder
  convolution is split into its two input halves, ``conv(cat(up, skip)) = conv_up(up) +
  conv_skip(skip)``;
- computes only the final segmentation head (no deep-supervision outputs);
- accepts any spatial size, cropping each up-sampled tensor to its skip, so the crop needs no
  padding to multiples of 32 (which would add 34 % voxels to that crop).

For sizes the module accepts, outputs equal the module's to float32 rounding (tested against
``network(x)``).  It lowers the peak memory of a whole-crop pass at about the same speed, and
the crop at its own size is also faster; convolving large tensors in slabs was tried and dropped
(slower for little memory).  The measurements: docs/performance.md, "The memory-lean forward"
(``benchmarks/cpu_inference.py``, ``fast+module`` / ``fast+padded`` / ``fast``).  Networks with
another structure, or with normalisations that use running statistics, fall back to
``network(x)``; see :func:`supports_lean_forward`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from torch import nn
from torch.nn import functional as F

from glioseg.infer.window_norm import WindowGrid, window_matched_norms, window_normalise


def supports_lean_forward(network: nn.Module) -> bool:
    """True for a ``PlainConvUNet`` whose blocks are conv -> [dropout] -> norm -> nonlinearity
    and whose decoder stages are stacks of such blocks."""
    try:
        from dynamic_network_architectures.architectures.unet import PlainConvUNet
        from dynamic_network_architectures.building_blocks.simple_conv_blocks import (
            ConvDropoutNormReLU,
            StackedConvBlocks,
        )
    except ImportError:  # pragma: no cover - dynamic-network-architectures is a dependency
        return False
    if not isinstance(network, PlainConvUNet):
        return False
    if not all(isinstance(stage, StackedConvBlocks) for stage in network.decoder.stages):
        return False
    blocks = [m for m in network.modules() if isinstance(m, ConvDropoutNormReLU)]
    return bool(blocks) and all(_block_parts(b) is not None for b in blocks)


def lean_forward(network: nn.Module, x: torch.Tensor, grid: WindowGrid | None = None) -> torch.Tensor:
    """Logits of the final head for ``x`` ``(B, C, X, Y, Z)``; call under ``torch.inference_mode()``.

    With a ``grid`` every instance norm uses window-matched statistics
    (:mod:`glioseg.infer.window_norm`): the sliding windows of ``grid`` over ``x``.

    Equivalent to ``network(x)`` with deep supervision off.  Unlike the module's forward, any
    spatial size works: where a size is not divisible by the network's total down-sampling
    factor, each up-sampled tensor is cropped at the far end to its skip's size (as U-Nets
    without padding do), so a brain crop needs no padding to multiples of 32.  For divisible
    sizes the result equals ``network(x)``.

    Examples
    --------
    >>> from glioseg.models import build_model, model_config
    >>> net = build_model(model_config("nnunet", 3, 4), deep_supervision=False).eval()
    >>> x = torch.randn(1, 4, 32, 32, 32)
    >>> with torch.inference_mode():
    ...     bool(torch.allclose(lean_forward(net, x), net(x), atol=1e-4))
    True
    """
    if not supports_lean_forward(network):
        if grid is None:
            return network(x)
        with window_matched_norms(network, grid, x.shape[2:]):
            return network(x)
    norm_ = partial(_normalise_and_activate_, grid=grid, tensor_shape=tuple(x.shape[2:]))
    encoder, decoder = network.encoder, network.decoder
    skips: list[torch.Tensor] = []
    holder = [x]
    del x
    for stage in encoder.stages:
        skips.append(_run(stage, holder, norm_))
        holder = [skips[-1]]
    below = skips.pop()
    del holder
    for transpconv, stage in zip(decoder.transpconvs, decoder.stages, strict=True):
        # a StackedConvBlocks of reproducible blocks (checked by supports_lean_forward)
        skip = skips.pop()
        first, *rest = stage.convs
        conv, norm, act = _block_parts(first)
        # conv(cat(up, skip)) == conv_up(up) + conv_skip(skip): no concatenated copy is made
        n_up = transpconv.out_channels
        weight_up, weight_skip = conv.weight[:, :n_up].contiguous(), conv.weight[:, n_up:].contiguous()
        up = _match(transpconv(below), skip)
        del below
        y = _conv(conv, up, weight_up, conv.bias)
        del up
        _conv(conv, skip, weight_skip, None, out=y)
        del skip
        holder = [norm_(y, norm, act)]
        del y
        below = _run_all(rest, holder, norm_)
    head = decoder.seg_layers[-1]
    return _conv(head, below, head.weight, head.bias)


def _match(up: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
    """``up`` cropped at the far end of each axis to ``skip``'s size (a no-op for sizes divisible
    by the down-sampling factor).

    A stride-2 convolution maps ``n`` voxels to ``ceil(n / 2)``, with output ``i`` centred on
    input ``2 i``; the transposed convolution maps them back to ``2 ceil(n / 2)``, of which the
    first ``n`` line up with the skip.
    """
    size = tuple(skip.shape[2:])
    if tuple(up.shape[2:]) == size:
        return up
    return up[(..., *(slice(0, s) for s in size))].contiguous()


def _block_parts(block: nn.Module) -> tuple[nn.Module, nn.Module, nn.Module] | None:
    """(conv, norm, nonlinearity) of a block that the in-place path reproduces exactly, else None."""
    ops = [m for m in block.all_modules if not isinstance(m, nn.modules.dropout._DropoutNd)]
    if len(ops) != 3:
        return None
    conv, norm, act = ops
    if not isinstance(conv, nn.Conv3d) or not isinstance(norm, nn.InstanceNorm3d):
        return None
    if (
        conv.padding_mode != "zeros"
        or norm.track_running_stats
        or not isinstance(act, nn.LeakyReLU | nn.ReLU)
    ):
        return None
    return conv, norm, act


def _run(module: nn.Module, holder: list[torch.Tensor], norm_: Callable) -> torch.Tensor:
    """Apply ``module`` to the tensor in ``holder``, emptying it so the input can be freed early;
    ``norm_(y, norm, act)`` normalises and activates in place."""
    from dynamic_network_architectures.building_blocks.simple_conv_blocks import (
        ConvDropoutNormReLU,
        StackedConvBlocks,
    )

    if isinstance(module, ConvDropoutNormReLU):  # reproducible: checked by supports_lean_forward
        conv, norm, act = _block_parts(module)
        return norm_(_conv(conv, holder.pop(), conv.weight, conv.bias), norm, act)
    children = module.convs if isinstance(module, StackedConvBlocks) else module
    if isinstance(children, nn.Sequential):
        return _run_all(children, holder, norm_)
    return module(holder.pop())


def _run_all(modules, holder: list[torch.Tensor], norm_: Callable) -> torch.Tensor:
    """Apply ``modules`` in turn to the tensor in ``holder`` (emptied), dropping each input when used."""
    x = holder.pop()
    for module in modules:
        inner = [x]
        del x
        x = _run(module, inner, norm_)
    return x


def _conv(
    conv: nn.Conv3d,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """``conv3d(x)`` with ``conv``'s geometry and the given weights; added into ``out`` when given."""
    y = F.conv3d(x, weight, bias, conv.stride, conv.padding, conv.dilation, conv.groups)
    return y if out is None else out.add_(y)


def _normalise_and_activate_(
    y: torch.Tensor,
    norm: nn.InstanceNorm3d,
    act: nn.Module,
    grid: WindowGrid | None = None,
    tensor_shape: tuple[int, ...] | None = None,
) -> torch.Tensor:
    """Instance normalisation (biased variance, as PyTorch) and the activation, in place on ``y``;
    window-matched statistics when a ``grid`` is given."""
    if grid is not None:
        window_normalise(
            y,
            grid,
            norm.eps,
            norm.weight if norm.affine else None,
            norm.bias if norm.affine else None,
            tensor_shape,
            out=y,
        )
        return _activate_(y, act)
    # centre in place, then the variance is the squared 2-norm: two fast reductions instead of
    # torch.var_mean, which is much slower on the CPU (docs/performance.md, "Levers measured")
    dims = tuple(range(2, y.ndim))
    y.sub_(y.mean(dim=dims, keepdim=True))
    var = torch.linalg.vector_norm(y, dim=dims, keepdim=True).square_().div_(y[0, 0].numel())
    scale = torch.rsqrt(var + norm.eps)
    if norm.affine:
        shape = (1, -1) + (1,) * (y.ndim - 2)
        y.mul_(scale * norm.weight.view(shape)).add_(norm.bias.view(shape))
    else:
        y.mul_(scale)
    return _activate_(y, act)


def _activate_(y: torch.Tensor, act: nn.Module) -> torch.Tensor:
    if isinstance(act, nn.LeakyReLU):
        return F.leaky_relu_(y, act.negative_slope)
    return F.relu_(y)
