"""Reading an nnU-Net v2 results folder for :func:`glioseg.models.nnunet_import.import_nnunet`.

Finds the trainer folder and the checkpoint of a fold, reads ``plans.json`` and
``dataset.json``, reads the checkpoint with PyTorch's weights-only unpickler (numeric numpy
scalars allowed; see :mod:`glioseg.models.nnunet_import`) and resolves a configuration of the
plans into nnU-Net's network class and ``arch_kwargs``.  nnU-Net itself is not needed.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import torch

from glioseg.data.io import read_json
from glioseg.errors import ConfigError, InputError

#: nnU-Net network classes that glioseg rebuilds -> glioseg model name.
NETWORKS = {"PlainConvUNet": "nnunet", "ResidualEncoderUNet": "nnunet-resenc"}


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


def strip_prefixes(weights: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The weights without the name prefixes that DistributedDataParallel and torch.compile add."""
    out = {}
    for key, value in weights.items():
        for prefix in ("module.", "_orig_mod."):  # DistributedDataParallel, torch.compile
            if key.startswith(prefix):
                key = key[len(prefix) :]
        out[key] = value
    return out


# --------------------------------------------------------------------------- files


def read_result_json(path: Path) -> dict[str, Any]:
    """``plans.json`` or ``dataset.json`` of a results folder (a JSON object)."""
    if not path.is_file():
        raise InputError(path, "file not found (an nnU-Net results folder has plans.json and dataset.json)")
    data = read_json(path, "JSON")
    if not isinstance(data, dict):
        raise InputError(path, "expected a JSON object")
    return data


def locate_checkpoint(source: Path, fold: int | str, checkpoint_name: str) -> tuple[Path, Path]:
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


def resolve_configuration(plans: dict[str, Any], name: str, plans_path: Path) -> dict[str, Any]:
    """Configuration ``name`` of the plans with the entries it inherits (``inherits_from``) filled in."""
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


def network_architecture(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
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
