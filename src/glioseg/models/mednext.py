"""MedNeXt (Roy et al., MICCAI 2023) from MONAI, with the paper's size presets.

The paper defines four sizes by expansion ratio and number of blocks in each of its nine
stages (4 encoder, bottleneck, 4 decoder), with 32 initial filters and kernel 3 or 5:

====  ===========================  ===========================
size  expansion ratio per stage    blocks per stage
====  ===========================  ===========================
S     2 2 2 2 2 2 2 2 2            2 2 2 2 2 2 2 2 2
B     2 3 4 4 4 4 4 3 2            2 2 2 2 2 2 2 2 2
M     2 3 4 4 4 4 4 3 2            3 4 4 4 4 4 4 4 3
L     3 4 8 8 8 8 8 4 3            3 4 8 8 8 8 8 4 3
====  ===========================  ===========================

All use residual connections, group norm and deep supervision.  For small CPU patches the
plan may use fewer down-sampling stages (the outer stages of the presets are kept) and fewer
initial filters; the full configuration is the same code with the paper's numbers.
Gradient checkpointing (recompute each block in the backward pass) is on for M and L.
"""

from __future__ import annotations

import types
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F
from torch.utils.checkpoint import checkpoint

MEDNEXT_PRESETS: dict[str, dict[str, list[int]]] = {
    "s": {"expansion": [2, 2, 2, 2, 2, 2, 2, 2, 2], "blocks": [2, 2, 2, 2, 2, 2, 2, 2, 2]},
    "b": {"expansion": [2, 3, 4, 4, 4, 4, 4, 3, 2], "blocks": [2, 2, 2, 2, 2, 2, 2, 2, 2]},
    "m": {"expansion": [2, 3, 4, 4, 4, 4, 4, 3, 2], "blocks": [3, 4, 4, 4, 4, 4, 4, 4, 3]},
    "l": {"expansion": [3, 4, 8, 8, 8, 8, 8, 4, 3], "blocks": [3, 4, 8, 8, 8, 8, 8, 4, 3]},
}


def mednext_arch_kwargs(
    size: str, kernel_size: int, n_stages: int = 5, init_filters: int = 32
) -> dict[str, Any]:
    """MONAI ``MedNeXt`` keyword arguments for a preset with ``n_stages`` resolution levels (2-5).

    Examples
    --------
    >>> kw = mednext_arch_kwargs("m", 3)
    >>> kw["blocks_down"], kw["blocks_bottleneck"], kw["blocks_up"]
    ([3, 4, 4, 4], 4, [4, 4, 4, 3])
    """
    size = size.lower()
    if size not in MEDNEXT_PRESETS:
        raise ValueError(f"unknown MedNeXt size {size!r}; expected one of s, b, m, l")
    if not 2 <= n_stages <= 5:
        raise ValueError(f"MedNeXt supports 2 to 5 resolution stages, got {n_stages}")
    preset = MEDNEXT_PRESETS[size]
    down = n_stages - 1  # encoder stages kept: the outermost ones
    exp, blocks = preset["expansion"], preset["blocks"]
    return {
        "init_filters": init_filters,
        "encoder_expansion_ratio": exp[:down],
        "decoder_expansion_ratio": exp[9 - down :],
        "bottleneck_expansion_ratio": exp[4],
        "kernel_size": kernel_size,
        "blocks_down": blocks[:down],
        "blocks_bottleneck": blocks[4],
        "blocks_up": blocks[9 - down :],
        "use_residual_connection": True,
        "norm_type": "group",
        "global_resp_norm": False,
        "gradient_checkpointing": size in ("m", "l"),
    }


def _checkpointed_forward(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``block``'s own forward, recomputed in the backward pass while training (bound to each block
    as a method, so that a copy of the network binds it to the copied block)."""
    original = type(block).forward
    if block.training and torch.is_grad_enabled():
        return checkpoint(original, block, x, use_reentrant=False)
    return original(block, x)


class ContiguousConvTranspose3d(nn.ConvTranspose3d):
    """A transposed convolution computed in the default memory format and returned in the input's.

    Same parameters and state-dict keys as :class:`torch.nn.ConvTranspose3d`; swapped in as the
    class of existing modules (so copies and pickles of a network keep working).
    """

    def forward(self, x: torch.Tensor, output_size: list[int] | None = None) -> torch.Tensor:
        output_padding = self._output_padding(
            x, output_size, self.stride, self.padding, self.kernel_size, 3, self.dilation
        )
        out = F.conv_transpose3d(
            x.contiguous(),
            self.weight.contiguous(),
            self.bias,
            self.stride,
            self.padding,
            output_padding,
            self.groups,
            self.dilation,
        )
        if x.is_contiguous(memory_format=torch.channels_last_3d) and not x.is_contiguous():
            out = out.contiguous(memory_format=torch.channels_last_3d)
        return out


def build_mednext(
    arch_kwargs: dict[str, Any], in_channels: int, out_channels: int, deep_supervision: bool = True
) -> nn.Module:
    """Instantiate MONAI's MedNeXt; parameter names are MONAI's, whatever the checkpointing.

    The depth-wise transposed convolutions of the up-sampling blocks always run in the default
    memory format, even when the network runs in ``channels_last_3d``
    (:func:`glioseg.models.prefers_channels_last`): PyTorch's CPU kernel for them is several
    times slower in ``channels_last_3d`` (docs/performance.md, "MedNeXt up-sampling"); the
    result is the same convolution, returned in the input's memory format.
    """
    from monai.networks.nets import MedNeXt

    kwargs = dict(arch_kwargs)
    use_checkpointing = bool(kwargs.pop("gradient_checkpointing", False))
    network = MedNeXt(
        spatial_dims=3,
        in_channels=in_channels,
        out_channels=out_channels,
        deep_supervision=deep_supervision,
        **kwargs,
    )
    for module in network.modules():  # the up-sampling blocks' depth-wise transposed convolutions
        if type(module) is nn.ConvTranspose3d and module.groups > 1:
            module.__class__ = ContiguousConvTranspose3d
    if use_checkpointing:
        stages = [*network.enc_stages, network.bottleneck, *network.dec_stages]
        for stage in stages:
            for block in stage:
                block.forward = types.MethodType(_checkpointed_forward, block)
    return network
