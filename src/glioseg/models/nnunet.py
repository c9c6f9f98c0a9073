"""nnU-Net's networks from ``dynamic-network-architectures``, configured as nnU-Net configures BraTS.

nnU-Net v2's ``3d_fullres`` plan for BraTS (1 mm, 128^3 patches) is a ``PlainConvUNet`` with 6
stages, features 32-64-128-256-320-320, 3x3x3 kernels, stride 2 between stages, two convolutions
per stage in encoder and decoder, instance norm (eps 1e-5, affine), leaky ReLU (slope 0.01),
convolution bias and deep supervision.  Here depth follows the plan's patch size (halve until
the feature map is 4 voxels) and width follows ``base_features`` / ``max_features``, so small
CPU patches run through the same class.  Architectures are described by nnU-Net's own
``arch_kwargs`` vocabulary so that nnU-Net plans can be imported one-to-one.

An imported nnU-Net model trained with softmax over tissue classes (not regions) keeps its
network unchanged and adds :class:`SoftmaxRegionUNet`, which turns the class logits into region
logits; its ``arch_kwargs`` carry the two extra keys ``softmax_classes`` (number of classes)
and ``softmax_regions`` (class indices of WT, TC and ET).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

#: Name of each ``*_op`` value as written in model JSON (nnU-Net writes dotted import paths).
_OPS: dict[str, type[nn.Module]] = {
    "Conv3d": nn.Conv3d,
    "InstanceNorm3d": nn.InstanceNorm3d,
    "BatchNorm3d": nn.BatchNorm3d,
    "LeakyReLU": nn.LeakyReLU,
    "ReLU": nn.ReLU,
    "Dropout3d": nn.Dropout3d,
}

#: nnU-Net ResEnc presets: residual blocks per encoder stage (M and L share depth; L is wider
#: only through larger patches, which the plan decides).
RESENC_BLOCKS = (1, 3, 4, 6, 6, 6, 6, 6)


def resolve_op(name: str | None) -> type[nn.Module] | None:
    """``"torch.nn.modules.conv.Conv3d"`` or ``"Conv3d"`` -> ``nn.Conv3d``."""
    if name is None:
        return None
    short = name.rsplit(".", 1)[-1]
    try:
        return _OPS[short]
    except KeyError:
        raise ValueError(f"unsupported layer type {name!r}; expected one of {', '.join(_OPS)}") from None


def nnunet_arch_kwargs(
    n_stages: int,
    base_features: int = 32,
    max_features: int = 320,
    strides: list[list[int]] | None = None,
    kernel_sizes: list[list[int]] | None = None,
    residual_encoder: bool = False,
) -> dict[str, Any]:
    """nnU-Net-style ``arch_kwargs`` for a 3-D U-Net with ``n_stages`` resolution stages.

    Examples
    --------
    >>> kw = nnunet_arch_kwargs(6)
    >>> kw["features_per_stage"]
    [32, 64, 128, 256, 320, 320]
    """
    if n_stages < 2:
        raise ValueError(f"a U-Net needs at least 2 stages, got {n_stages}")
    features = [min(base_features * 2**i, max_features) for i in range(n_stages)]
    strides = strides or [[1, 1, 1]] + [[2, 2, 2]] * (n_stages - 1)
    kernel_sizes = kernel_sizes or [[3, 3, 3]] * n_stages
    kwargs: dict[str, Any] = {
        "n_stages": n_stages,
        "features_per_stage": features,
        "conv_op": "torch.nn.modules.conv.Conv3d",
        "kernel_sizes": kernel_sizes,
        "strides": strides,
        "n_conv_per_stage_decoder": [2] * (n_stages - 1),
        "conv_bias": True,
        "norm_op": "torch.nn.modules.instancenorm.InstanceNorm3d",
        "norm_op_kwargs": {"eps": 1e-5, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.modules.activation.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    if residual_encoder:
        kwargs["n_blocks_per_stage"] = list(RESENC_BLOCKS[:n_stages])
    else:
        kwargs["n_conv_per_stage"] = [2] * n_stages
    return kwargs


def build_nnunet(
    arch_kwargs: dict[str, Any], in_channels: int, out_channels: int, deep_supervision: bool = True
) -> nn.Module:
    """Instantiate ``PlainConvUNet`` (or ``ResidualEncoderUNet`` when ``n_blocks_per_stage`` is given).

    Weights are initialised as nnU-Net does (He init with slope 1e-2).
    """
    from dynamic_network_architectures.architectures.unet import PlainConvUNet, ResidualEncoderUNet

    kwargs = dict(arch_kwargs)
    softmax_classes = kwargs.pop("softmax_classes", None)
    softmax_regions = kwargs.pop("softmax_regions", None)
    for key in ("conv_op", "norm_op", "dropout_op", "nonlin"):
        kwargs[key] = resolve_op(kwargs.get(key))
    cls = ResidualEncoderUNet if "n_blocks_per_stage" in kwargs else PlainConvUNet
    heads = int(softmax_classes) if softmax_regions is not None else out_channels
    network = cls(input_channels=in_channels, num_classes=heads, deep_supervision=deep_supervision, **kwargs)
    network.apply(cls.initialize)
    if softmax_regions is not None:
        if len(softmax_regions) != out_channels:
            raise ValueError(f"softmax_regions lists {len(softmax_regions)} regions, expected {out_channels}")
        return SoftmaxRegionUNet(network, softmax_regions)
    return network


class SoftmaxRegionUNet(nn.Module):
    """A softmax U-Net whose outputs are turned into region logits.

    With class logits ``z`` (softmax over classes), the probability of a region ``R`` (a set of
    classes) is ``p_R = sum_{c in R} softmax(z)_c``; its logit is exactly
    ``log p_R - log(1 - p_R) = logsumexp(z[R]) - logsumexp(z[not R])``, so ``sigmoid`` of the
    output reproduces the softmax model's region probabilities without any approximation.

    The wrapped network's ``encoder`` and ``decoder`` become this module's own, so parameter
    names are those of the plain network (``encoder.*``, ``decoder.*``).

    Parameters
    ----------
    network : PlainConvUNet or ResidualEncoderUNet with ``C`` output classes
    regions : one list of class indices (0..C-1) per output region, in output order
    """

    def __init__(self, network: nn.Module, regions: list[list[int]]):
        super().__init__()
        self.encoder = network.encoder
        self.decoder = network.decoder
        n_classes = network.decoder.num_classes
        mask = torch.zeros((len(regions), n_classes), dtype=torch.bool)
        for i, classes in enumerate(regions):
            if (
                not classes
                or any(not 0 <= int(c) < n_classes for c in classes)
                or len(set(classes)) >= n_classes
            ):
                raise ValueError(
                    f"region {i} must be a non-empty, proper subset of classes 0..{n_classes - 1}: {classes}"
                )
            mask[i, [int(c) for c in classes]] = True
        self.register_buffer("region_mask", mask, persistent=False)

    def class_logits(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        """The wrapped network's own output (class logits; a list with deep supervision)."""
        return self.decoder(self.encoder(x))

    def regions_from_classes(self, logits: torch.Tensor) -> torch.Tensor:
        """``(B, C, ...)`` class logits -> ``(B, R, ...)`` region logits."""
        mask = self.region_mask.view(1, *self.region_mask.shape, *([1] * (logits.ndim - 2)))
        z = logits.unsqueeze(1)
        inside = z.masked_fill(~mask, float("-inf")).logsumexp(dim=2)
        outside = z.masked_fill(mask, float("-inf")).logsumexp(dim=2)
        return inside - outside

    def forward(self, x: torch.Tensor) -> torch.Tensor | list[torch.Tensor]:
        out = self.class_logits(x)
        if isinstance(out, list | tuple):
            return [self.regions_from_classes(o) for o in out]
        return self.regions_from_classes(out)

    def compute_conv_feature_map_size(self, input_size) -> int:
        return self.encoder.compute_conv_feature_map_size(
            input_size
        ) + self.decoder.compute_conv_feature_map_size(input_size)


def set_nnunet_deep_supervision(network: nn.Module, enabled: bool) -> None:
    network.decoder.deep_supervision = enabled


@torch.no_grad()
def nnunet_feature_map_voxels(network: nn.Module, patch: tuple[int, int, int]) -> int:
    """nnU-Net's own estimate of the feature-map elements of one forward pass (batch 1)."""
    return int(network.compute_conv_feature_map_size(list(patch)))
