"""Network registry: a model name -> a configured network with 4 input channels and 3 region outputs.

Names
-----
``nnunet``
    nnU-Net's ``PlainConvUNet`` (dynamic-network-architectures), BraTS 3d_fullres configuration.
``nnunet-resenc``
    nnU-Net's residual-encoder U-Net (ResEnc presets' block counts).
``mednext-{s,b,m,l}-k{3,5}``
    MONAI's MedNeXt with the paper's size presets and kernel 3 or 5.

Every network maps ``(B, 4, X, Y, Z)`` inputs (t1n, t1c, t2w, t2f) to ``(B, 3, X, Y, Z)`` region
logits (WT, TC, ET); in training mode with deep supervision it returns a list whose first
element is full resolution, followed by successively coarser outputs.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from torch import nn

from glioseg.data.labels import REGIONS
from glioseg.data.modalities import MODALITIES
from glioseg.errors import ConfigError
from glioseg.models.mednext import MEDNEXT_PRESETS, build_mednext, mednext_arch_kwargs
from glioseg.models.nnunet import build_nnunet, nnunet_arch_kwargs, set_nnunet_deep_supervision

_MEDNEXT_RE = re.compile(r"^mednext-(?P<size>[sbml])-k(?P<kernel>[35])$")


def available_models() -> list[str]:
    """Every model name the registry accepts."""
    names = ["nnunet", "nnunet-resenc"]
    names += [f"mednext-{s}-k{k}" for s in MEDNEXT_PRESETS for k in (3, 5)]
    return names


@dataclass
class ModelConfig:
    """Everything needed to rebuild a network (stored in every checkpoint's JSON)."""

    name: str
    family: str  # "nnunet" | "mednext"
    arch_kwargs: dict[str, Any]
    in_channels: int = len(MODALITIES)
    out_channels: int = len(REGIONS)
    channel_names: list[str] = field(default_factory=lambda: list(MODALITIES))
    output_names: list[str] = field(default_factory=lambda: list(REGIONS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    @property
    def n_stages(self) -> int:
        if self.family == "nnunet":
            return int(self.arch_kwargs["n_stages"])
        return len(self.arch_kwargs["blocks_down"]) + 1


def model_config(name: str, n_stages: int, base_features: int = 32, max_features: int = 320) -> ModelConfig:
    """Configuration of model ``name`` for a plan with ``n_stages`` resolution stages.

    Raises
    ------
    ConfigError
        Unknown name (the message lists the available ones).
    """
    if name in ("nnunet", "nnunet-resenc"):
        kwargs = nnunet_arch_kwargs(
            n_stages, base_features, max_features, residual_encoder=name == "nnunet-resenc"
        )
        return ModelConfig(name=name, family="nnunet", arch_kwargs=kwargs)
    match = _MEDNEXT_RE.match(name)
    if match:
        kwargs = mednext_arch_kwargs(match["size"], int(match["kernel"]), min(n_stages, 5), base_features)
        return ModelConfig(name=name, family="mednext", arch_kwargs=kwargs)
    raise ConfigError(f"unknown model {name!r}; available: {', '.join(available_models())}")


def build_model(config: ModelConfig, deep_supervision: bool = True) -> nn.Module:
    """Instantiate the network of ``config`` (freshly initialised)."""
    if config.family == "nnunet":
        return build_nnunet(config.arch_kwargs, config.in_channels, config.out_channels, deep_supervision)
    if config.family == "mednext":
        return build_mednext(config.arch_kwargs, config.in_channels, config.out_channels, deep_supervision)
    raise ConfigError(f"unknown model family {config.family!r}")


def set_deep_supervision(model: nn.Module, config: ModelConfig, enabled: bool) -> None:
    """Switch deep-supervision outputs on or off (MedNeXt emits them only in training mode anyway)."""
    if config.family == "nnunet":
        set_nnunet_deep_supervision(model, enabled)
    else:
        model.do_ds = enabled


def prefers_channels_last(family: str, device: str) -> bool:
    """Whether a network of ``family`` runs faster in the ``channels_last_3d`` memory format on ``device``.

    Decision (measurements in docs/performance.md, "channels_last"): on the CPU, MedNeXt, whose
    blocks are depth-wise and 1x1x1 convolutions, is faster in ``channels_last_3d`` for inference
    and for training; nnU-Net's dense 3x3x3 convolutions are slower.  On other devices the default
    layout is kept.  Inference (:mod:`glioseg.infer.ensemble`) and training
    (:class:`glioseg.train.module.SegmentationModule`) both follow this rule.

    >>> prefers_channels_last("mednext", "cpu"), prefers_channels_last("nnunet", "cpu")
    (True, False)
    """
    return family == "mednext" and str(device) == "cpu"


__all__ = [
    "ModelConfig",
    "available_models",
    "build_model",
    "model_config",
    "prefers_channels_last",
    "set_deep_supervision",
]
