"""Import a trained nnU-Net v2 model as a glioseg model (a pre-trained start for fine-tuning).

nnU-Net v2 keeps a trained model as::

    RESULTS/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres/
        plans.json  dataset.json  fold_K/checkpoint_final.pth (and checkpoint_best.pth)

:func:`import_nnunet` reads these files itself (nnU-Net is not needed), rebuilds the same
network with glioseg's nnU-Net builder from ``plans.json`` (``architecture``:
``network_class_name`` + ``arch_kwargs``; the pre-2.3 plans format is converted the way nnU-Net
converts it), loads the weights and maps them so that the result is an ordinary glioseg model:

Checkpoint
    ``checkpoint_final.pth`` is a ``torch.save`` pickle.  It is read only with
    ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which rebuilds tensors and
    plain containers and refuses every other global.  nnU-Net >= 2.6 also stores numpy scalars
    (``_best_ema`` and the logged losses and pseudo-Dice values are ``numpy.float32``), so the
    exact globals that rebuild a numeric numpy scalar are allowed for this one call:
    ``numpy.core.multiarray.scalar`` (also under its numpy-2 name ``numpy._core.multiarray.scalar``),
    ``numpy.dtype`` and numpy's numeric dtype classes (``Float32DType`` ...).  They create a
    number from a dtype and raw bytes and run no other code.  A file that needs anything else
    is refused with an :class:`~glioseg.errors.InputError` naming the offending global; nothing
    in it is executed.  Only ``network_weights``, ``init_args.configuration``, ``trainer_name``
    and ``current_epoch`` are used.

Axes
    nnU-Net's readers (``SimpleITKIO``, ``NibabelIO``) hand the network arrays in reversed voxel
    order (SimpleITK's z, y, x), and the plans then transpose them by ``transpose_forward``; the
    configuration's ``spacing``, ``patch_size``, ``median_image_size_in_voxels``, ``kernel_sizes``
    and ``strides`` are in that order.  glioseg reads NIfTI voxel axes as stored (nibabel's i, j,
    k).  Network axis ``d`` is therefore glioseg axis ``reversed[transpose_forward[d]]``; spacing,
    patch, median shape, kernel sizes and strides are reordered, and every convolution kernel
    is transposed to match, so that the imported network applied to glioseg's arrays computes
    nnU-Net's function on nnU-Net's arrays (tested to float precision).  ``*WithReorient``
    readers reorient to RAS first; glioseg does not, which is reported as a warning (axes are
    matched, flips are not; nnU-Net trains with mirroring on every axis).

Channels
    ``dataset.json`` ``channel_names`` are matched to glioseg's t1n, t1c, t2w, t2f by name
    (``T1``/``T1n``/``native`` -> t1n, ``T1ce``/``T1c``/``T1Gd`` -> t1c, ``T2``/``T2w`` -> t2w,
    ``FLAIR``/``T2f`` -> t2f; or given with ``channels=``) and the input channels of the first
    convolution are permuted, so the imported model takes glioseg's order.

Outputs
    *Region-based* models (labels given as lists, BraTS style) output one sigmoid logit per
    region.  WT, TC and ET are recognised structurally: three regions ``WT ⊃ TC ⊃ ET`` with 3,
    2 and 1 labels; the rows of every (deep-supervision) output convolution are reordered (and
    any other region dropped).  *Softmax* models (one integer per label) are supported through
    :class:`~glioseg.models.nnunet.SoftmaxRegionUNet`, which computes the exact region logits
    ``logsumexp(z[R]) - logsumexp(z[not R])``; their labels are recognised by name (edema/SNFH,
    necrosis/NCR/NETC, enhancing/ET; or given with ``tissue_labels=``), and any other class
    (e.g. a resection cavity) counts as outside every region.

Preprocessing
    The plan records the configuration's spacing, patch and batch size.  Every channel must use
    nnU-Net's ``ZScoreNormalization``, which is glioseg's ``zscore-nonzero`` when
    ``use_mask_for_norm`` is on (nnU-Net turns it on for skull-stripped brains); otherwise a
    warning says that glioseg will normalise differently.  nnU-Net resamples images with cubic
    splines, glioseg trilinearly.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glioseg.data.io import read_json
from glioseg.data.labels import REGIONS
from glioseg.data.modalities import MODALITIES
from glioseg.errors import ConfigError, InputError
from glioseg.models import ModelConfig, build_model
from glioseg.models.checkpoint import DISCLAIMER, canonical_state_dict
from glioseg.models.nnunet import resolve_op

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
_NETWORKS = {"PlainConvUNet": "nnunet", "ResidualEncoderUNet": "nnunet-resenc"}
_SEG_LAYER = re.compile(r"^decoder\.seg_layers\.\d+\.(weight|bias)$")


@dataclass
class ImportedModel:
    """An nnU-Net model turned into glioseg's form; :meth:`save` writes ``model.safetensors`` + ``model.json``.

    Attributes
    ----------
    state_dict : weights for ``build_model(config)`` (glioseg channel order and axes)
    config : model configuration (family ``nnunet``, nnU-Net's ``arch_kwargs`` in glioseg axes)
    plan : :class:`glioseg.models.plan.Plan` as a dict
    imported_from : provenance (files, checksum, trainer, fold, epoch, channel/output/axis mappings)
    warnings : differences that do not stop the import (one line each)
    metrics : nnU-Net's validation Dice of this fold when ``fold_K/validation/summary.json`` exists
    """

    state_dict: dict[str, torch.Tensor]
    config: ModelConfig
    plan: dict[str, Any]
    imported_from: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The ``model.json`` content (besides format and versions, which ``save_model`` adds)."""

        return {
            "plan": self.plan,
            "model_config": self.config.to_dict(),
            "recipe": None,
            "split": None,
            "seed": None,
            "metrics": self.metrics,
            "imported_from": self.imported_from,
            "warnings": self.warnings,
            "disclaimer": DISCLAIMER,
        }

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``OUT/model.safetensors`` and ``OUT/model.json`` (atomically; a run-folder-like model)."""
        from glioseg.models.checkpoint import save_model

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return save_model(self.state_dict, self.info(), out / "model")


# --------------------------------------------------------------------------- checkpoint


def _numpy_scalar_globals() -> list:
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    scalar = core.multiarray.scalar
    allowed: list = [scalar, np.dtype]
    for alias in ("numpy.core.multiarray.scalar", "numpy._core.multiarray.scalar"):
        allowed.append((scalar, alias))
    dtypes = getattr(np, "dtypes", None)
    names = ["BoolDType", "Float16DType", "Float32DType", "Float64DType"]
    names += [f"{s}Int{b}DType" for s in ("", "U") for b in (8, 16, 32, 64)]
    allowed += [getattr(dtypes, n) for n in names if dtypes is not None and hasattr(dtypes, n)]
    return allowed


def load_nnunet_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read an nnU-Net ``checkpoint_*.pth`` without unpickling arbitrary objects.

    Uses ``torch.load(path, map_location="cpu", weights_only=True)`` with numeric numpy scalars
    allowed (see the module documentation).

    Raises
    ------
    InputError
        File missing, not a PyTorch checkpoint, holding other objects than tensors, plain
        containers and numpy numbers, or without ``network_weights``.
    """
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "checkpoint not found")
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            checkpoint = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError ... for bad files
        text = str(exc)
        found = re.search(r"unsupported (?:global: )?GLOBAL ([\w.]+)", text, re.IGNORECASE) or re.search(
            r"but got <class '([\w.]+)'>", text
        )
        if found:
            raise InputError(
                p,
                f"holds a pickled object ({found.group(1)}) besides weights; only checkpoints that "
                "torch.load(weights_only=True) can read (tensors, plain containers, numpy numbers) are "
                "accepted, nothing else is ever unpickled",
            ) from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        detail = next(
            (line.split(":", 1)[1].strip() for line in lines if line.startswith("WeightsUnpickler error:")),
            lines[0] if lines else "",
        )
        raise InputError(
            p, f"not a readable weights-only PyTorch checkpoint ({type(exc).__name__}: {detail[:200]})"
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("network_weights"), dict):
        raise InputError(p, "not an nnU-Net checkpoint (no 'network_weights' dictionary)")
    weights = checkpoint["network_weights"]
    if not weights or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise InputError(p, "'network_weights' must map parameter names to tensors")
    return checkpoint


def _strip_prefixes(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    out = {}
    for key, value in weights.items():
        for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel, torch.compile
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


# --------------------------------------------------------------------------- files


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise InputError(path, "file not found (an nnU-Net results folder has plans.json and dataset.json)")
    data = read_json(path, "JSON")
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def _locate(source: Path, fold: int | str, checkpoint_name: str) -> tuple[Path, Path]:
    """(trainer folder with plans.json, checkpoint file)."""
    if source.is_file():
        for folder in (source.parent.parent, source.parent):
            if (folder / "plans.json").is_file():
                return folder, source
        raise InputError(
            source, "no plans.json beside the checkpoint or one folder up (nnU-Net results layout)"
        )
    if not source.is_dir():
        raise InputError(source, "not found")
    trainer_dir = source
    if not (source / "plans.json").is_file():
        found = sorted(p for p in source.iterdir() if p.is_dir() and (p / "plans.json").is_file())
        if not found:
            raise InputError(source, "not an nnU-Net results folder (no plans.json here or in a sub-folder)")
        if len(found) > 1:
            names = ", ".join(p.name for p in found)
            raise ConfigError(
                f"{source} holds several trained configurations ({names}); pass one of these folders"
            )
        trainer_dir = found[0]
    fold_dir = trainer_dir / f"fold_{fold}"
    checkpoint = fold_dir / checkpoint_name
    if not checkpoint.is_file():
        folds = sorted(p.name for p in trainer_dir.glob("fold_*") if p.is_dir())
        have = sorted(p.name for p in fold_dir.glob("checkpoint_*.pth")) if fold_dir.is_dir() else []
        hint = f"this fold has {', '.join(have)}" if have else f"folds present: {', '.join(folds) or 'none'}"
        raise InputError(checkpoint, f"checkpoint not found ({hint})")
    return trainer_dir, checkpoint


# --------------------------------------------------------------------------- plans


def _resolve_configuration(plans: dict[str, Any], name: str, plans_path: Path) -> dict[str, Any]:
    configurations = plans.get("configurations") or {}
    chain: list[str] = []
    merged: dict[str, Any] = {}
    while True:
        if name not in configurations:
            raise ConfigError(
                f"{plans_path}: configuration {name!r} not found; available: {', '.join(configurations)}"
            )
        if name in chain:
            raise ConfigError(f"{plans_path}: circular 'inherits_from' ({' -> '.join([*chain, name])})")
        chain.append(name)
        merged = {**configurations[name], **merged}
        parent = configurations[name].get("inherits_from")
        if parent is None:
            return merged
        name = parent


def _architecture(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """(network class short name, arch_kwargs); the pre-2.3 plans format is converted as nnU-Net does."""
    if "architecture" in config:
        arch = config["architecture"]
        return str(arch["network_class_name"]).rsplit(".", 1)[-1], json.loads(json.dumps(arch["arch_kwargs"]))
    cls = config["UNet_class_name"]
    n_stages = len(config["n_conv_per_stage_encoder"])
    dim = len(config["patch_size"])
    base, top = config["UNet_base_num_features"], config["unet_max_num_features"]
    kwargs = {
        "n_stages": n_stages,
        "features_per_stage": [min(base * 2**i, top) for i in range(n_stages)],
        "conv_op": f"torch.nn.modules.conv.Conv{dim}d",
        "kernel_sizes": config["conv_kernel_sizes"],
        "strides": config["pool_op_kernel_sizes"],
        ("n_conv_per_stage" if cls == "PlainConvUNet" else "n_blocks_per_stage"): config[
            "n_conv_per_stage_encoder"
        ],
        "n_conv_per_stage_decoder": config["n_conv_per_stage_decoder"],
        "conv_bias": True,
        "norm_op": f"torch.nn.modules.instancenorm.InstanceNorm{dim}d",
        "norm_op_kwargs": {"eps": 1e-05, "affine": True},
        "dropout_op": None,
        "dropout_op_kwargs": None,
        "nonlin": "torch.nn.LeakyReLU",
        "nonlin_kwargs": {"inplace": True},
    }
    return str(cls), json.loads(json.dumps(kwargs))


def _axes(plans: dict[str, Any], dataset: dict[str, Any], warnings: list[str]) -> list[int]:
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


def _reorder(values, inverse: list[int]) -> list:
    return [values[inverse[g]] for g in range(3)]


def _norm(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", str(text).lower().replace("tumour", "tumor"))


def _channel_order(
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


def _label_sets(dataset: dict[str, Any], dataset_path: Path) -> tuple[list[str], list[frozenset[int]], bool]:
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


def _region_rows(names: list[str], sets: list[frozenset[int]]) -> tuple[list[int], dict[str, Any]]:
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


def _softmax_regions(
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


def _input_weight_names(config: ModelConfig, patch: list[int]) -> tuple[list[str], set[str]]:
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


def _convert_weights(
    weights: dict[str, torch.Tensor],
    inverse_axes: list[int],
    channel_index: list[int],
    inputs: set[str],
    rows: list[int] | None,
) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    spatial = [2 + inverse_axes[g] for g in range(3)]
    identity = spatial == [2, 3, 4]
    for key, value in weights.items():
        tensor = value.detach().to("cpu")
        if tensor.ndim == 5 and not identity:
            tensor = tensor.permute(0, 1, *spatial)
        if key in inputs:
            tensor = tensor[:, channel_index]
        if rows is not None and _SEG_LAYER.match(key):
            tensor = tensor[rows]
        out[key] = tensor.contiguous().clone()
    return out


# --------------------------------------------------------------------------- import


def import_nnunet(
    source: str | Path,
    fold: int | str = 0,
    checkpoint_name: str = "checkpoint_final.pth",
    configuration: str | None = None,
    channels: list[str] | None = None,
    tissue_labels: dict[str, int] | None = None,
) -> ImportedModel:
    """Turn a trained nnU-Net v2 model into a glioseg model.

    Parameters
    ----------
    source : the trainer folder (``.../nnUNetTrainer__nnUNetPlans__3d_fullres``), its dataset
        folder when that holds one trainer folder, or a checkpoint file inside ``fold_K``
    fold : fold number or ``"all"`` (ignored when ``source`` is a checkpoint file)
    checkpoint_name : ``checkpoint_final.pth`` or ``checkpoint_best.pth``
    configuration : nnU-Net configuration; default: the one the checkpoint was trained with
    channels : glioseg modality of each nnU-Net input channel, in nnU-Net's order (default: by name)
    tissue_labels : softmax models only: ``{"NETC": i, "SNFH": j, "ET": k}`` (default: by label name)

    Returns
    -------
    :class:`ImportedModel`; ``build_model(result.config)`` loads ``result.state_dict`` and maps
    ``(B, 4, X, Y, Z)`` glioseg inputs to ``(B, 3, X, Y, Z)`` WT, TC, ET logits.

    Raises
    ------
    InputError
        Missing or unreadable files, a checkpoint that is not weights-only loadable.
    ConfigError
        Unsupported network, configuration, normalisation, channels or labels; weights that do
        not fit the architecture in ``plans.json``.

    Examples
    --------
    >>> model = import_nnunet("nnUNet_results/Dataset137_BraTS2021/nnUNetTrainer__nnUNetPlans__3d_fullres",
    ...                       fold=0)  # doctest: +SKIP
    >>> model.save("models/brats-nnunet-fold0")  # doctest: +SKIP
    """
    from glioseg.models.memory import estimate_training_memory
    from glioseg.models.plan import Plan, default_memory_budget_gib

    source = Path(source)
    trainer_dir, checkpoint_path = _locate(source, fold, checkpoint_name)
    plans_path, dataset_path = trainer_dir / "plans.json", trainer_dir / "dataset.json"
    plans, dataset = _read_json(plans_path), _read_json(dataset_path)
    checkpoint = load_nnunet_checkpoint(checkpoint_path)
    weights = _strip_prefixes(checkpoint["network_weights"])
    init_args = checkpoint.get("init_args") if isinstance(checkpoint.get("init_args"), dict) else {}
    trained_configuration = init_args.get("configuration")
    folder_parts = trainer_dir.name.split("__")
    if configuration is None:
        configuration = trained_configuration or (folder_parts[2] if len(folder_parts) == 3 else None)
    if configuration is None:
        raise ConfigError(
            f"cannot tell the nnU-Net configuration of {checkpoint_path}; pass it (--configuration)"
        )
    if trained_configuration and configuration != trained_configuration:
        raise ConfigError(
            f"{checkpoint_path} was trained with configuration {trained_configuration!r}, not {configuration!r}"
        )
    warnings: list[str] = []

    config = _resolve_configuration(plans, configuration, plans_path)
    try:
        class_name, nn_kwargs = _architecture(config)
    except KeyError as exc:
        raise InputError(
            plans_path, f"configuration {configuration!r} has no architecture description ({exc})"
        ) from None
    if class_name not in _NETWORKS:
        raise ConfigError(f"nnU-Net network {class_name} is not supported (only {', '.join(_NETWORKS)})")
    patch_n = [int(p) for p in config["patch_size"]]
    if len(patch_n) != 3 or not str(nn_kwargs.get("conv_op", "")).endswith("Conv3d"):
        raise ConfigError(
            f"configuration {configuration!r} is not 3-D; import a 3d_fullres (or other 3-D) model"
        )
    for key in ("conv_op", "norm_op", "dropout_op", "nonlin"):
        try:
            resolve_op(nn_kwargs.get(key))
        except ValueError as exc:
            raise ConfigError(f"plans.json {configuration}: {exc}") from None

    schemes = list(config.get("normalization_schemes") or [])
    if not schemes or any(s != "ZScoreNormalization" for s in schemes):
        raise ConfigError(
            f"nnU-Net normalisation {schemes} is not supported: glioseg z-scores every channel "
            "(ZScoreNormalization in every channel is required)"
        )
    masked = [bool(m) for m in config.get("use_mask_for_norm") or [False] * len(schemes)]
    if not all(masked):
        warnings.append(
            "nnU-Net z-scored over the whole image (use_mask_for_norm off); glioseg z-scores over non-zero "
            "(brain) voxels, so inputs differ until the model is fine-tuned"
        )

    axes = _axes(plans, dataset, warnings)
    inverse = [axes.index(g) for g in range(3)]
    channel_index, channel_names = _channel_order(dataset, channels, dataset_path)
    label_names, label_sets, region_based = _label_sets(dataset, dataset_path)

    kwargs = dict(nn_kwargs)
    kwargs["kernel_sizes"] = [_reorder(k, inverse) for k in nn_kwargs["kernel_sizes"]]
    kwargs["strides"] = [_reorder(s, inverse) for s in nn_kwargs["strides"]]
    rows: list[int] | None = None
    if region_based:
        rows, outputs = _region_rows(label_names, label_sets)
        n_heads = sum(1 for s in label_sets if s != frozenset({0}))
        output_info: dict[str, Any] = {"kind": "sigmoid regions", "regions": outputs}
    else:
        n_heads, regions, output_info = _softmax_regions(label_names, label_sets, tissue_labels)
        output_info = {"kind": "softmax classes", **output_info}
        kwargs["softmax_classes"] = n_heads
        kwargs["softmax_regions"] = regions
    model_name = _NETWORKS[class_name]
    model_config = ModelConfig(name=model_name, family="nnunet", arch_kwargs=kwargs)

    for key in weights:
        if _SEG_LAYER.match(key) and weights[key].shape[0] != n_heads:
            raise ConfigError(
                f"{checkpoint_path}: output layer {key} has {weights[key].shape[0]} rows, but dataset.json "
                f"describes {n_heads} outputs"
            )
    patch = _reorder(patch_n, inverse)
    input_convs, input_weights = _input_weight_names(model_config, patch)
    if len(input_convs) != 1:
        raise ConfigError(f"expected one convolution reading the input, found {input_convs}")
    state = _convert_weights(weights, inverse, channel_index, input_weights, rows)
    network = build_model(model_config, deep_supervision=True)
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ConfigError(
            f"{checkpoint_path}: weights do not fit the network described in plans.json ({detail}); trainer "
            f"{checkpoint.get('trainer_name')} may build a custom network"
        ) from None
    problems = [f"missing {k}" for k in result.missing_keys] + [
        f"unexpected {k}" for k in result.unexpected_keys
    ]
    if problems:
        raise ConfigError(
            f"{checkpoint_path}: weights do not fit the network described in plans.json ({problems[0]}"
            f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); trainer "
            f"{checkpoint.get('trainer_name')} may build a custom network"
        )

    batch_size = int(config.get("batch_size", 2))
    features = [int(f) for f in kwargs["features_per_stage"]]
    estimate = estimate_training_memory(model_config, tuple(patch), batch_size)
    median = config.get("median_image_size_in_voxels")
    plan = Plan(
        model=model_name,
        target_spacing=[float(s) for s in _reorder(config["spacing"], inverse)],
        patch_size=[int(p) for p in patch],
        batch_size=batch_size,
        n_stages=int(kwargs["n_stages"]),
        base_features=features[0],
        max_features=max(features),
        memory_budget_gib=round(default_memory_budget_gib(), 2),
        estimated_memory_gib=round(estimate.total_gib, 2),
        median_shape=[round(float(s), 1) for s in _reorder(median, inverse)] if median else [],
        model_config=model_config.to_dict(),
    )
    if checkpoint_name != "checkpoint_final.pth":
        warnings.append(f"imported {checkpoint_name}, not the final checkpoint")

    metrics: dict[str, float] = {}
    summary = checkpoint_path.parent / "validation" / "summary.json"
    if summary.is_file():
        try:
            dice = json.loads(summary.read_text())["foreground_mean"]["Dice"]
            metrics["nnunet_val_dice_mean"] = float(dice)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    imported_from = {
        "software": "nnU-Net v2",
        "results_folder": str(trainer_dir.resolve()),
        "checkpoint": str(checkpoint_path.resolve()),
        "checkpoint_sha256": digest.hexdigest(),
        "dataset_name": plans.get("dataset_name"),
        "plans_name": plans.get("plans_name"),
        "configuration": configuration,
        "trainer": checkpoint.get("trainer_name"),
        "fold": init_args.get("fold", fold),
        "epoch": checkpoint.get("current_epoch"),
        "network_class_name": class_name,
        "nnunet_arch_kwargs": nn_kwargs,
        "nnunet_channels": channel_names,
        "channel_source": {m: channel_index[i] for i, m in enumerate(MODALITIES)},
        "outputs": output_info,
        "axes": {
            "image_reader_writer": plans.get("image_reader_writer"),
            "transpose_forward": plans.get("transpose_forward", [0, 1, 2]),
            "network_axis_to_glioseg_axis": axes,
        },
        "nnunet_spacing": list(config["spacing"]),
        "nnunet_patch_size": patch_n,
        "use_mask_for_norm": masked,
    }
    return ImportedModel(
        state_dict={k: v.detach().clone() for k, v in canonical_state_dict(network).items()},
        config=model_config,
        plan=plan.to_dict(),
        imported_from=imported_from,
        warnings=warnings,
        metrics=metrics,
    )


__all__ = ["CHANNEL_ALIASES", "TISSUE_ALIASES", "ImportedModel", "import_nnunet", "load_nnunet_checkpoint"]
