"""Mapping an nnU-Net v2 model onto glioseg's conventions: axes, channels, outputs and weights.

Used by :func:`glioseg.models.nnunet_import.import_nnunet` (the conventions are described in
:mod:`glioseg.models.nnunet_import`): nnU-Net's network axes become glioseg's voxel axes, its
input channels are matched to t1n, t1c, t2w, t2f by name, its outputs to WT, TC, ET (sigmoid
regions, or softmax classes grouped into regions), and the weights are permuted accordingly.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from glioseg.data.labels import REGIONS
from glioseg.data.modalities import MODALITIES
from glioseg.errors import ConfigError, InputError
from glioseg.models import ModelConfig, build_model

#: Normalised channel names (lower case, letters and digits only) -> glioseg modality.
CHANNEL_ALIASES: dict[str, str] = {
    **dict.fromkeys(["t1", "t1n", "t1w", "t1native", "nativet1", "t1pre", "t1precontrast", "t1wpre"], "t1n"),
    **dict.fromkeys(
        ["t1c", "t1ce", "t1gd", "t1cgd", "t1gad", "t1wce", "t1wgd", "t1contrast", "t1post", "t1postcontrast"],
        "t1c",
    ),
    **dict.fromkeys(["t2", "t2w"], "t2w"),
    **dict.fromkeys(["flair", "t2f", "t2flair", "t2wflair"], "t2f"),
}
#: Normalised softmax label names -> glioseg tissue (labels 1 NETC, 2 SNFH, 3 ET).
TISSUE_ALIASES: dict[str, str] = {
    **dict.fromkeys(
        [
            "netc",
            "ncr",
            "ncrnet",
            "necrosis",
            "necrotic",
            "necroticcore",
            "necrotictumorcore",
            "nonenhancingtumor",
            "nonenhancingtumorcore",
            "necroticnonenhancingtumorcore",
            "net",
        ],
        "NETC",
    ),
    **dict.fromkeys(
        ["snfh", "ed", "edema", "oedema", "peritumoraledema", "surroundingnonenhancingflairhyperintensity"],
        "SNFH",
    ),
    **dict.fromkeys(["et", "enhancing", "enhancingtumor", "enhancingtumorcore"], "ET"),
}
#: Tissues of each region, glioseg's definition (WT = NETC+SNFH+ET, TC = NETC+ET, ET).
_REGION_TISSUES = {"WT": ("NETC", "SNFH", "ET"), "TC": ("NETC", "ET"), "ET": ("ET",)}
#: nnU-Net readers that reverse voxel axes (both do: SimpleITK order z, y, x).
_READERS = {"SimpleITKIO", "NibabelIO"}
_REORIENTING_READERS = {"NibabelIOWithReorient", "SimpleITKIOWithReorient"}
#: State-dict names of the output convolutions (one per deep-supervision level).
SEG_LAYER = re.compile(r"^decoder\.seg_layers\.\d+\.(weight|bias)$")


# --------------------------------------------------------------------------- axes, channels, labels


def network_axes(plans: dict[str, Any], dataset: dict[str, Any], warnings: list[str]) -> list[int]:
    """``perm`` with network axis ``d`` = glioseg (nibabel voxel) axis ``perm[d]``."""
    reader = plans.get("image_reader_writer") or dataset.get("overwrite_image_reader_writer") or "SimpleITKIO"
    if reader in _REORIENTING_READERS:
        warnings.append(
            f"nnU-Net read images with {reader} (reoriented to RAS); glioseg keeps the stored orientation, so "
            "images not stored in RAS reach the network mirrored (axes are matched)"
        )
    elif reader not in _READERS:
        raise ConfigError(
            f"nnU-Net image reader {reader!r} is not supported (expected one of {sorted(_READERS)})"
        )
    forward = [int(a) for a in plans.get("transpose_forward", [0, 1, 2])]
    if sorted(forward) != [0, 1, 2]:
        raise ConfigError(f"plans.json: transpose_forward {forward} is not a permutation of 3 axes")
    return [2 - a for a in forward]


def reorder_axes(values, inverse: list[int]) -> list:
    """``values`` given per network axis, listed per glioseg axis (``inverse[g]`` = network axis of ``g``)."""
    return [values[inverse[g]] for g in range(3)]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower().replace("tumour", "tumor"))


def channel_order(
    dataset: dict[str, Any], channels: list[str] | None, dataset_path: Path
) -> tuple[list[int], list[str]]:
    """(nnU-Net input index of each glioseg modality, nnU-Net channel names)."""
    raw = dataset.get("channel_names") or dataset.get("modality")
    if not isinstance(raw, dict) or not raw:
        raise InputError(dataset_path, "no 'channel_names' (nnU-Net v2 dataset.json)")
    names = [str(raw[k]) for k in sorted(raw, key=int)]
    if len(names) != len(MODALITIES):
        raise ConfigError(
            f"the nnU-Net model takes {len(names)} channel(s) ({', '.join(names)}); glioseg models take "
            f"{len(MODALITIES)} ({', '.join(MODALITIES)})"
        )
    if channels is not None:
        modalities = [c.lower() for c in channels]
        if sorted(modalities) != sorted(MODALITIES):
            raise ConfigError(
                f"channels must list {', '.join(MODALITIES)} once each, in nnU-Net's order; got {channels}"
            )
    else:
        modalities = [CHANNEL_ALIASES.get(_norm(n), "") for n in names]
        if sorted(modalities) != sorted(MODALITIES):
            raise ConfigError(
                f"cannot match nnU-Net channels {names} to {', '.join(MODALITIES)} by name; give the glioseg "
                "modality of each nnU-Net channel in order (--channels, e.g. t2f,t1n,t1c,t2w)"
            )
    return [modalities.index(m) for m in MODALITIES], names


def dataset_labels(
    dataset: dict[str, Any], dataset_path: Path
) -> tuple[list[str], list[frozenset[int]], bool]:
    """(label names, label value sets, whether the model is region-based) from ``dataset.json``."""
    labels = dataset.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise InputError(dataset_path, "no 'labels'")
    names, sets = [], []
    for name, value in labels.items():
        values = value if isinstance(value, list | tuple) else [value]
        try:
            sets.append(frozenset(int(v) for v in values))
        except (TypeError, ValueError):
            raise InputError(dataset_path, f"label {name!r} has a non-integer value {value!r}") from None
        names.append(str(name))
    regions = any(isinstance(v, list | tuple) and len(v) > 1 for v in labels.values())
    return names, sets, regions


def region_rows(names: list[str], sets: list[frozenset[int]]) -> tuple[list[int], dict[str, Any]]:
    """Output rows (nnU-Net region index) of WT, TC, ET for a region-based model."""
    foreground = [(n, s) for n, s in zip(names, sets, strict=True) if s != frozenset({0})]
    chains = []
    for i, (_, wt) in enumerate(foreground):
        for j, (_, tc) in enumerate(foreground):
            for k, (_, et) in enumerate(foreground):
                if len(wt) == 3 and len(tc) == 2 and len(et) == 1 and et < tc < wt and 0 not in wt:
                    chains.append((i, j, k))
    regions = ", ".join(f"{n} {sorted(s)}" for n, s in foreground)
    if len(chains) != 1:
        problem = "no" if not chains else "more than one"
        raise ConfigError(
            f"nnU-Net regions ({regions}) contain {problem} nested triple whole tumour (3 labels) ⊃ tumour core "
            "(2) ⊃ enhancing tumour (1); cannot map the outputs to WT, TC, ET"
        )
    rows = list(chains[0])
    mapping = {
        r: {
            "nnunet_output": rows[i],
            "name": foreground[rows[i]][0],
            "labels": sorted(foreground[rows[i]][1]),
        }
        for i, r in enumerate(REGIONS)
    }
    return rows, mapping


def softmax_regions(
    names: list[str], sets: list[frozenset[int]], tissue_labels: dict[str, int] | None
) -> tuple[int, list[list[int]], dict[str, Any]]:
    """(number of classes, class indices of WT, TC, ET, description) for a softmax model."""
    values = sorted(next(iter(s)) for s in sets)
    if values != list(range(len(values))):
        raise ConfigError(f"nnU-Net softmax labels must be 0..N-1, got {values}")
    if tissue_labels is not None:
        tissues = {str(k).upper(): int(v) for k, v in tissue_labels.items()}
    else:
        tissues = {}
        for name, s in zip(names, sets, strict=True):
            tissue = TISSUE_ALIASES.get(_norm(name))
            if tissue is not None:
                tissues[tissue] = next(iter(s))
    if (
        sorted(tissues) != sorted(_REGION_TISSUES["WT"])
        or len(set(tissues.values())) != 3
        or 0 in tissues.values()
    ):
        labels = ", ".join(f"{n}={next(iter(s))}" for n, s in zip(names, sets, strict=True))
        raise ConfigError(
            f"cannot tell which nnU-Net labels ({labels}) are NETC, SNFH and ET; give them "
            "(--tissue-labels NETC=2,SNFH=1,ET=3)"
        )
    if any(v not in values for v in tissues.values()):
        raise ConfigError(f"tissue labels {tissues} are not all among the model's classes {values}")
    regions = [sorted(tissues[t] for t in _REGION_TISSUES[r]) for r in REGIONS]
    mapping = {r: {"classes": regions[i], "tissues": list(_REGION_TISSUES[r])} for i, r in enumerate(REGIONS)}
    return (
        len(values),
        regions,
        {"softmax_classes": len(values), "tissue_labels": tissues, "regions": mapping},
    )


# --------------------------------------------------------------------------- weights


def input_weight_names(config: ModelConfig, patch: list[int]) -> tuple[list[str], set[str]]:
    """Convolutions that read the network input (found by running it on ``meta``), and every
    state-dict name of their weights (dynamic-network-architectures lists a weight under several
    names: ``encoder.stages...conv.weight``, ``...all_modules.0.weight``, ``decoder.encoder...``)."""
    with torch.device("meta"):
        network = build_model(config, deep_supervision=True)
    x = torch.empty((1, config.in_channels, *patch), device="meta")
    found: list[tuple[str, torch.nn.Module]] = []
    handles = []
    for name, module in network.named_modules():
        if isinstance(module, torch.nn.modules.conv._ConvNd):

            def hook(m, inputs, _name=name):
                if inputs and inputs[0] is x:
                    found.append((_name, m))

            handles.append(module.register_forward_pre_hook(hook))
    try:
        with torch.no_grad():
            network(x)
    finally:
        for h in handles:
            h.remove()
    weights = [m.weight for _, m in found]
    names = {n for n, p in network.named_parameters(remove_duplicate=False) if any(p is w for w in weights)}
    return [n for n, _ in found], names


def convert_weights(
    weights: dict[str, torch.Tensor],
    inverse_axes: list[int],
    channel_index: list[int],
    inputs: set[str],
    rows: list[int] | None,
) -> dict[str, torch.Tensor]:
    """nnU-Net's weights in glioseg's axes, input channel order and output rows (copies)."""
    out: dict[str, torch.Tensor] = {}
    spatial = [2 + inverse_axes[g] for g in range(3)]
    identity = spatial == [2, 3, 4]
    for key, value in weights.items():
        tensor = value.detach().to("cpu")
        if tensor.ndim == 5 and not identity:
            tensor = tensor.permute(0, 1, *spatial)
        if key in inputs:
            tensor = tensor[:, channel_index]
        if rows is not None and SEG_LAYER.match(key):
            tensor = tensor[rows]
        out[key] = tensor.contiguous().clone()
    return out
