"""Finding and loading trained models for inference: a run, a folder of fold runs, several of those,
or a bundled model by name.

A *member* is one set of weights (``model.safetensors`` + ``model.json``).  A RUN given to
``glioseg predict --model`` is either one member or a folder whose sub-folders hold members
(a fold ensemble), or the name of a bundled model (:mod:`glioseg.models.catalog`), which
brings its ensemble weights and post-processing.  Members are loaded one at a time, used, and
released, so an ensemble never holds more than one network in memory.
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
from glioseg.infer.settings import MODES
from glioseg.models.catalog import (
    BUNDLED_MODELS,
    CARD_NAME,
    ModelCard,
    combined_checksum,
    find_card,
    sha256_file,
    trained_only_on_synthetic,
)
from glioseg.models.plan import Plan


@dataclass
class Member:
    """One trained network: where its files are and what its JSON says."""

    path: Path  # model.safetensors
    info: dict[str, Any]

    @property
    def name(self) -> str:
        return str(self.path.parent.name)

    @property
    def plan(self) -> Plan:
        """The member's :class:`glioseg.models.plan.Plan` (the same object training wrote)."""
        return Plan.from_dict(self.info["plan"])

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

    label: str | None = None  # the name given by a model card; default: the folder's name
    card: ModelCard | None = None  # the bundled model this group belongs to

    @property
    def name(self) -> str:
        return self.label or self.source.name

    @property
    def synthetic(self) -> bool:
        """Whether the group was trained on glioseg phantoms only (its card says so, or every member's split)."""
        if self.card is not None:
            return self.card.synthetic
        return bool(self.members) and all(trained_only_on_synthetic(m.info) for m in self.members)

    def checksum(self) -> str:
        """SHA-256 over the members' weight and description files (the card's checksum for a bundled model)."""
        if self.card is not None:
            return self.card.checksum
        return combined_checksum(
            sha256_file(p) for m in self.members for p in (m.path, m.path.with_suffix(".json"))
        )

    def provenance(self) -> dict[str, Any]:
        """What an output's sidecar and report say about this model."""
        doc: dict[str, Any] = {
            "name": self.name,
            "source": str(self.source),
            "members": len(self.members),
            "checksum_sha256": self.checksum(),
            "trained_on_synthetic_only": self.synthetic,
        }
        if self.card is not None:
            doc.update(bundle=self.card.name, version=self.card.version)
        return doc


def _check_member(path: Path, info: dict[str, Any]) -> None:
    plan = Plan.from_dict(info.get("plan"), source=path)
    config = info.get("model_config") or {}
    channels = config.get("channel_names") or plan.channels
    if list(channels or []) != list(MODALITIES):
        raise InputError(path, f"model expects channels {channels}, glioseg provides {list(MODALITIES)}")
    outputs = config.get("output_names") or plan.regions
    if list(outputs or []) != list(REGIONS):
        raise InputError(path, f"model outputs {outputs}, expected region logits {list(REGIONS)}")
    if int(config.get("in_channels", -1)) != len(MODALITIES) or int(config.get("out_channels", -1)) != len(
        REGIONS
    ):
        raise InputError(path, "model configuration must have 4 input and 3 output channels")


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
        candidates = sorted(
            p / "model.safetensors" for p in src.iterdir() if (p / "model.safetensors").exists()
        )
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


@dataclass
class ResolvedModels:
    """The ``--model`` arguments of one ``glioseg predict``, resolved to groups.

    ``weights``, ``postprocess`` and ``mode`` come from a bundled model's card when it is the
    only ``--model``; otherwise they are ``None`` (equal weights, no post-processing) and
    ``default`` unless the user gives them.
    """

    groups: list[ModelGroup]
    weights: list[list[float]] | None = None
    postprocess: Path | None = None
    cards: list[ModelCard] = field(default_factory=list)
    mode: str = "default"


def resolve_models(specs: list[str | Path], catalog: str | Path = BUNDLED_MODELS) -> ResolvedModels:
    """Resolve each ``--model`` argument: an existing folder or file first, else a bundled model's name.

    ``catalog`` is the folder of bundled models (the package's own by default).

    A bundled model is checked against its card's checksums before use.

    Raises
    ------
    InputError
        No argument, a name that is neither a path nor a bundled model, a bundle whose files
        changed, or a member that does not fit glioseg's inputs and outputs.
    """
    if not specs:
        raise InputError("--model", "at least one --model is needed")
    resolved = ResolvedModels(groups=[])
    for spec in specs:
        if Path(spec).exists():
            resolved.groups.append(find_members(spec))
            continue
        card = find_card(str(spec), catalog)
        card.verify()
        resolved.cards.append(card)
        for name, folder in card.group_paths():
            group = find_members(folder)
            group.label, group.card = name, card
            resolved.groups.append(group)
    if len(specs) == 1 and resolved.cards:
        card = resolved.cards[0]
        resolved.weights = card.weights()
        resolved.postprocess = card.postprocess_path()
        if card.default_mode not in MODES:
            raise InputError(
                card.root / CARD_NAME,
                f"default_mode {card.default_mode!r} is not a mode (expected one of {', '.join(MODES)})",
            )
        resolved.mode = card.default_mode
    return resolved
