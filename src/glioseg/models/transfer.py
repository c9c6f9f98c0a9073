"""Moving pre-trained weights into a network: UpKern and name/shape-matched transfer.

UpKern (Roy et al., MedNeXt, MICCAI 2023)
    A MedNeXt trained with 3x3x3 kernels initialises the same MedNeXt with 5x5x5 kernels: every
    weight whose spatial kernel grows is resized, everything else is copied.  Two ways to grow a
    kernel (:func:`grow_kernel`):

    ``"trilinear"`` (the paper's)
        trilinear interpolation of the kernel with ``align_corners=True``: the corner taps stay
        where they were, so for 3 -> 5 the old taps land on the even positions
        (``new[..., ::2, ::2, ::2] == old``) and the odd positions are their averages.
    ``"zero_pad"``
        the old kernel centred in a zero kernel.  MONAI's MedNeXt pads every convolution by
        ``kernel // 2`` (plain, strided and transposed alike), so the padded network computes
        exactly the function of the small-kernel network: fine-tuning starts from the
        pre-trained model's own predictions.

Transfer by name and shape (:func:`transfer_state_dict`)
    Copies every pre-trained tensor whose name and shape match the target network and leaves
    the rest as initialised (e.g. output layers when the number of outputs differs, the first
    convolution when the input channels differ), reporting which ones were reinitialised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from glioseg.errors import ConfigError
from glioseg.models import ModelConfig, build_model

GrowMode = Literal["trilinear", "zero_pad"]
#: ``arch_kwargs`` keys that may differ between UpKern source and target (kernel size) or
#: that do not change the parameters (gradient checkpointing).
_KERNEL_KEYS = {"kernel_size", "kernel_sizes"}
_FREE_KEYS = {"gradient_checkpointing"}


def grow_kernel(weight: torch.Tensor, size: tuple[int, ...], mode: GrowMode = "trilinear") -> torch.Tensor:
    """Resize the spatial kernel of a convolution weight ``(O, I, k1, k2, k3)`` to ``size``.

    Parameters
    ----------
    weight : tensor of shape ``(O, I, *kernel)`` (plain or transposed convolution)
    size : target kernel, one entry per spatial axis, each at least the current one
    mode : ``"trilinear"`` (interpolation with ``align_corners=True``) or ``"zero_pad"``
        (centred in zeros; needs an even difference on every axis)

    Returns
    -------
    Tensor of shape ``(O, I, *size)``, same dtype as ``weight``.

    Examples
    --------
    >>> w = torch.ones(2, 1, 3, 3, 3)
    >>> grow_kernel(w, (5, 5, 5), "zero_pad")[0, 0, :, :, 2]
    tensor([[0., 0., 0., 0., 0.],
            [0., 1., 1., 1., 0.],
            [0., 1., 1., 1., 0.],
            [0., 1., 1., 1., 0.],
            [0., 0., 0., 0., 0.]])
    """
    spatial = tuple(int(s) for s in weight.shape[2:])
    size = tuple(int(s) for s in size)
    if len(size) != len(spatial) or any(t < s for t, s in zip(size, spatial, strict=True)):
        raise ValueError(f"cannot grow a kernel of {spatial} to {size}")
    if mode == "zero_pad":
        if any((t - s) % 2 for t, s in zip(size, spatial, strict=True)):
            raise ValueError(
                f"zero padding {spatial} to {size} cannot keep the kernel centred (odd difference)"
            )
        pad: list[int] = []
        for t, s in reversed(list(zip(size, spatial, strict=True))):  # F.pad wants the last axis first
            pad += [(t - s) // 2, (t - s) // 2]
        return F.pad(weight, pad)
    if mode == "trilinear":
        if len(spatial) != 3:
            raise ValueError(f"trilinear kernel growth needs 3-D kernels, got {spatial}")
        grown = F.interpolate(weight.detach().float(), size=size, mode="trilinear", align_corners=True)
        return grown.to(weight.dtype)
    raise ValueError(f"unknown kernel growth mode {mode!r}; expected 'trilinear' or 'zero_pad'")


def _shapes(config: ModelConfig, deep_supervision: bool) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        network = build_model(config, deep_supervision=deep_supervision)
    return {k: tuple(v.shape) for k, v in network.state_dict().items()}


def upkern_state_dict(
    source_state: dict[str, torch.Tensor],
    source_config: ModelConfig,
    target_config: ModelConfig,
    mode: GrowMode = "trilinear",
) -> dict[str, torch.Tensor]:
    """Weights of ``source_config``'s network turned into weights for ``target_config``'s (UpKern).

    The two configurations must describe the same network except for the convolution kernel
    size (MedNeXt ``kernel_size``, nnU-Net ``kernel_sizes``).  Tensors of equal shape are copied;
    convolution weights whose spatial kernel grows are resized by :func:`grow_kernel`.

    Parameters
    ----------
    source_state : state dict of the source network (e.g. ``mednext-m-k3``), with or without
        deep-supervision heads
    source_config, target_config : :class:`~glioseg.models.ModelConfig` of both networks
    mode : ``"trilinear"`` (paper) or ``"zero_pad"`` (the target computes exactly the source's function)

    Returns
    -------
    A new state dict with the target's parameter names and shapes (source tensors are not modified).

    Raises
    ------
    ConfigError
        Different families or architectures, missing or unexpected parameters, or a parameter
        whose shape differs other than by a grown kernel (the message names it).
    """
    if source_config.family != target_config.family:
        raise ConfigError(
            f"UpKern needs one model family, got {source_config.family} -> {target_config.family}"
        )
    for attr in ("in_channels", "out_channels"):
        if getattr(source_config, attr) != getattr(target_config, attr):
            raise ConfigError(
                f"UpKern needs equal {attr}: {getattr(source_config, attr)} -> {getattr(target_config, attr)}"
            )
    src_kw, tgt_kw = source_config.arch_kwargs, target_config.arch_kwargs
    for key in sorted((set(src_kw) | set(tgt_kw)) - _KERNEL_KEYS - _FREE_KEYS):
        if src_kw.get(key) != tgt_kw.get(key):
            raise ConfigError(
                f"UpKern changes only the kernel size, but {key} differs: {src_kw.get(key)!r} -> {tgt_kw.get(key)!r}"
            )
    if mode not in ("trilinear", "zero_pad"):
        raise ConfigError(f"unknown UpKern mode {mode!r}; expected 'trilinear' or 'zero_pad'")
    with_ds = _shapes(target_config, True)
    without_ds = _shapes(target_config, False)
    target = with_ds if set(source_state) == set(with_ds) else without_ds
    missing = sorted(set(target) - set(source_state))
    unexpected = sorted(set(source_state) - set(target))
    if missing or unexpected:
        what = f"missing {missing[0]}" if missing else f"unexpected {unexpected[0]}"
        count = len(missing) + len(unexpected)
        raise ConfigError(
            f"source weights do not belong to {source_config.name} ({what}"
            f"{f' and {count - 1} more' if count > 1 else ''})"
        )
    out: dict[str, torch.Tensor] = {}
    for name, shape in target.items():
        tensor = source_state[name]
        if tuple(tensor.shape) == shape:
            out[name] = tensor.detach().clone()
            continue
        grows = (
            tensor.ndim == len(shape) >= 3
            and tuple(tensor.shape[:2]) == shape[:2]
            and all(t >= s for t, s in zip(shape[2:], tensor.shape[2:], strict=True))
            and (
                mode == "trilinear"
                or all((t - s) % 2 == 0 for t, s in zip(shape[2:], tensor.shape[2:], strict=True))
            )
        )
        if not grows:
            raise ConfigError(
                f"parameter {name} has shape {tuple(tensor.shape)} in the source and {shape} in the target; "
                "UpKern only grows convolution kernels"
            )
        out[name] = grow_kernel(tensor.detach(), shape[2:], mode)
    return out


@dataclass
class TransferReport:
    """What :func:`transfer_state_dict` did.

    Attributes
    ----------
    copied : target entries loaded from the pre-trained weights
    reinitialised : target entries left as initialised (absent from, or shaped differently in,
        the pre-trained weights), with the reason in :attr:`reasons`
    unused : pre-trained entries with no counterpart in the target
    """

    copied: list[str] = field(default_factory=list)
    reinitialised: list[str] = field(default_factory=list)
    unused: list[str] = field(default_factory=list)
    reasons: dict[str, str] = field(default_factory=dict)


def transfer_state_dict(pretrained_state: dict[str, torch.Tensor], target_model: nn.Module) -> TransferReport:
    """Copy every pre-trained tensor whose name and shape match into ``target_model`` (in place).

    Entries of the target's ``state_dict`` (parameters and buffers) that the pre-trained weights
    lack, or hold with another shape, keep their fresh initialisation and are listed in
    :attr:`TransferReport.reinitialised`.  A tensor reachable under two names (nnU-Net's decoder
    keeps a reference to the encoder: ``decoder.encoder.*``) is reported once, by its first name.

    Raises
    ------
    ConfigError
        Nothing at all matches (a different architecture: fine-tuning would silently start
        from scratch).

    Examples
    --------
    >>> from glioseg.models import build_model, model_config
    >>> source = build_model(model_config("nnunet", 3, base_features=4))
    >>> config = model_config("nnunet", 3, base_features=4)
    >>> config.out_channels = 2
    >>> target = build_model(config)
    >>> report = transfer_state_dict(source.state_dict(), target)
    >>> report.reinitialised
    ['decoder.seg_layers.0.weight', 'decoder.seg_layers.0.bias', 'decoder.seg_layers.1.weight', 'decoder.seg_layers.1.bias']
    """
    target_state = target_model.state_dict()
    report = TransferReport()
    update: dict[str, torch.Tensor] = {}
    aliases = _aliases(target_state)
    for name, current in target_state.items():
        if name in aliases:  # the same tensor under a second name: loaded with its first name
            continue
        source = pretrained_state.get(name)
        if source is None:
            report.reinitialised.append(name)
            report.reasons[name] = "not in the pre-trained weights"
        elif tuple(source.shape) != tuple(current.shape):
            report.reinitialised.append(name)
            report.reasons[name] = f"shape {tuple(source.shape)} pre-trained, {tuple(current.shape)} here"
        else:
            update[name] = source.detach().to(dtype=current.dtype, device=current.device)
            report.copied.append(name)
    report.unused = [name for name in pretrained_state if name not in target_state]
    if not update and target_state:
        example = next(iter(target_state))
        raise ConfigError(
            f"no pre-trained tensor matches the target network by name and shape (e.g. {example}); "
            "the weights belong to another architecture"
        )
    target_model.load_state_dict(update, strict=False)
    return report


def _aliases(state: dict[str, torch.Tensor]) -> set[str]:
    """Names that repeat a tensor listed earlier (dynamic-network-architectures' decoder holds
    the encoder, so ``decoder.encoder.*`` repeats ``encoder.*``)."""
    seen: set[tuple] = set()
    repeated: set[str] = set()
    for name, tensor in state.items():
        if tensor.device.type == "meta":
            continue
        key = (tensor.data_ptr(), tuple(tensor.shape), tensor.stride(), tensor.dtype)
        if tensor.numel() and key in seen:
            repeated.add(name)
        seen.add(key)
    return repeated


__all__ = ["GrowMode", "TransferReport", "grow_kernel", "transfer_state_dict", "upkern_state_dict"]
