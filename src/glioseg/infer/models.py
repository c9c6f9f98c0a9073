"""Finding and loading trained models for inference: a run, a folder of fold runs, or several of those.

A *member* is one set of weights (``model.safetensors`` + ``model.json``).  A RUN given to
``glioseg predict --model`` is either one member or a folder whose sub-folders hold members
(a fold ensemble).  Members are loaded one at a time, used, and released, so an ensemble
never holds more than one network in memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from glioseg.data.io import read_json
from glioseg.data.labels import REGIONS
from glioseg.data.modalities import MODALITIES
from glioseg.errors import InputError


@dataclass
class Member:
    """One trained network: where its files are and what its JSON says."""

    path: Path  # model.safetensors
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.path.parent.name)

    @property
    def plan(self) -> dict[str, Any]:
        return self.info["plan"]

    @property
    def config(self):
        """The network's :class:`glioseg.models.ModelConfig`."""
        from glioseg.models import ModelConfig

        return ModelConfig.from_dict(self.info["model_config"])

    def load(self, device: str = "cpu") -> nn.Module:
        """Build the network, load its weights (any stored float dtype), switch to inference mode."""
        from glioseg.models import build_model, set_deep_supervision
        from glioseg.models.checkpoint import load_weights, read_model_files

        state, _ = read_model_files(self.path)
        config = self.config
        network = build_model(config, deep_supervision=True)  # the heads exist in every checkpoint
        load_weights(network, state, self.path)
        set_deep_supervision(network, config, False)
        return network.to(device).eval()


@dataclass
class ModelGroup:
    """The members of one ``--model`` argument (one run, or the folds of a cross-validation)."""

    source: Path
    members: list[Member] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.source.name


def _check_member(path: Path, info: dict[str, Any]) -> None:
    plan = info.get("plan") or {}
    config = info.get("model_config") or {}
    channels = config.get("channel_names") or plan.get("channels")
    if list(channels or []) != list(MODALITIES):
        raise InputError(path, f"model expects channels {channels}, glioseg provides {list(MODALITIES)}")
    outputs = config.get("output_names") or plan.get("regions")
    if list(outputs or []) != list(REGIONS):
        raise InputError(path, f"model outputs {outputs}, expected region logits {list(REGIONS)}")
    if int(config.get("in_channels", -1)) != len(MODALITIES) or int(config.get("out_channels", -1)) != len(REGIONS):
        raise InputError(path, "model configuration must have 4 input and 3 output channels")
    spacing = plan.get("target_spacing")
    if not spacing or len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
        raise InputError(path, f"plan has no valid target spacing ({spacing})")
    patch = plan.get("patch_size")
    if not patch or len(patch) != 3 or any(int(p) < 1 for p in patch):
        raise InputError(path, f"plan has no valid patch size ({patch})")
    if plan.get("normalization", "zscore-nonzero") != "zscore-nonzero":
        raise InputError(path, f"unsupported normalisation {plan.get('normalization')!r}")


def find_members(source: str | Path) -> ModelGroup:
    """Members under ``source``: its own ``model.safetensors`` or those of its sub-folders (folds).

    Raises
    ------
    InputError
        No model found, or a member whose description does not fit glioseg's inputs/outputs.
    """
    from glioseg.models.checkpoint import read_model_files  # noqa: F401  (validates format lazily below)

    src = Path(source)
    if src.is_file():
        candidates = [src.with_suffix(".safetensors")]
    elif (src / "model.safetensors").exists():
        candidates = [src / "model.safetensors"]
    elif src.is_dir():
        candidates = sorted(p / "model.safetensors" for p in src.iterdir() if (p / "model.safetensors").exists())
    else:
        raise InputError(src, "model not found")
    if not candidates:
        raise InputError(src, "no model.safetensors here or in its sub-folders (is training finished?)")
    group = ModelGroup(source=src)
    for path in candidates:
        doc = path.with_suffix(".json")
        if not doc.exists():
            raise InputError(doc, "model description missing (model.safetensors needs its model.json)")
        info = read_json(doc, "model description")
        _check_member(doc, info)
        group.members.append(Member(path=path, info=info))
    return group
