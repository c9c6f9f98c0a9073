"""Checkpoints without pickle: tensors in safetensors, everything else in JSON.

Two formats, both readable without executing any code from the file:

* **Model files** (``model.safetensors`` + ``model.json``): the network's ``state_dict`` and a
  JSON document with the plan, model configuration, recipe, split, seed, package versions and
  metrics.  This is what inference and fine-tuning load.
* **Training state** (``checkpoints/last.safetensors``): Lightning's whole checkpoint
  dictionary (weights, optimiser and scheduler states, loop progress, callback states, random
  number generator states), flattened by :func:`encode_tree` into named tensors plus a JSON
  description stored in the safetensors header.  Used by ``--resume``.

:func:`encode_tree` refuses any object it cannot represent as JSON or a tensor, so nothing is
ever silently pickled; :func:`decode_tree` only rebuilds dicts, lists, tuples, numbers, strings,
tensors and arrays.
"""

from __future__ import annotations

import json
import math
import platform
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from glioseg.data.io import atomic_path, read_json, write_text_atomic
from glioseg.errors import InputError

TREE_FORMAT = "glioseg-tree-v1"
MODEL_FORMAT = "glioseg-model-v1"
#: Written into every model description and prediction record.
DISCLAIMER = "Research software. Not a medical device; not for clinical use."


def encode_tree(obj: Any, tensors: dict[str, torch.Tensor], path: str = "root") -> Any:
    """Turn a nested structure into JSON-able data, moving tensors/arrays into ``tensors``.

    Raises
    ------
    TypeError
        For any object that is not a dict, list, tuple, str, int, float, bool, None,
        torch.Tensor or numpy array/scalar (naming where in the structure it sits).
    """
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        tensors[key] = obj.detach().to("cpu").contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        key = f"t{len(tensors)}"
        tensors[key] = torch.from_numpy(np.ascontiguousarray(obj).copy())
        return {"__ndarray__": key}
    if isinstance(obj, np.generic):
        return encode_tree(obj.item(), tensors, path)
    if isinstance(obj, bool) or obj is None or isinstance(obj, str | int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else {"__float__": repr(obj)}
    if isinstance(obj, tuple):
        return {"__tuple__": [encode_tree(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [encode_tree(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if isinstance(obj, dict):
        if all(isinstance(k, str) for k in obj) and not any(
            k.startswith("__") and k.endswith("__") for k in obj
        ):
            return {k: encode_tree(v, tensors, f"{path}.{k}") for k, v in obj.items()}
        return {
            "__items__": [
                [encode_tree(k, tensors, path), encode_tree(v, tensors, f"{path}[{k!r}]")]
                for k, v in obj.items()
            ]
        }
    raise TypeError(f"cannot store {type(obj).__name__} at {path} in a checkpoint without pickle")


def decode_tree(data: Any, tensors: dict[str, torch.Tensor]) -> Any:
    """Inverse of :func:`encode_tree`."""
    if isinstance(data, list):
        return [decode_tree(v, tensors) for v in data]
    if isinstance(data, dict):
        if "__tensor__" in data:
            return tensors[data["__tensor__"]]
        if "__ndarray__" in data:
            return tensors[data["__ndarray__"]].numpy()
        if "__float__" in data:
            return float(data["__float__"])
        if "__tuple__" in data:
            return tuple(decode_tree(v, tensors) for v in data["__tuple__"])
        if "__items__" in data:
            return {_hashable(decode_tree(k, tensors)): decode_tree(v, tensors) for k, v in data["__items__"]}
        return {k: decode_tree(v, tensors) for k, v in data.items()}
    return data


def _hashable(key: Any) -> Any:
    return tuple(key) if isinstance(key, list) else key


def save_tree(tree: Any, path: str | Path) -> Path:
    """Write a nested structure as one safetensors file (structure in the header), atomically."""
    tensors: dict[str, torch.Tensor] = {}
    structure = encode_tree(tree, tensors)
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": TREE_FORMAT, "structure": json.dumps(structure)})
    return Path(path)


def load_tree(path: str | Path, map_location: str | torch.device | None = None) -> Any:
    """Read a file written by :func:`save_tree` (never unpickles)."""
    p = Path(path)
    header = _header(p)
    if header.get("format") != TREE_FORMAT:
        raise InputError(p, f"not a glioseg training-state file (format {header.get('format')!r})")
    device = str(map_location) if map_location is not None and not callable(map_location) else "cpu"
    tensors = load_file(str(p), device=device)
    return decode_tree(json.loads(header["structure"]), tensors)


def _header(path: Path) -> dict[str, str]:
    if not path.exists():
        raise InputError(path, "file not found")
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except Exception as exc:  # safetensors raises its own error types for corrupt headers
        raise InputError(path, f"not a readable safetensors file ({type(exc).__name__}: {exc})") from None


def canonical_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters and buffers of ``model``, each tensor once under its first name.

    ``state_dict()`` of dynamic-network-architectures' U-Nets lists most tensors two or three
    times (the decoder keeps the encoder; ``all_modules`` repeats ``conv``/``norm``); storing the
    aliases would triple the file size.
    """
    persistent = model.state_dict(keep_vars=True)
    named = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    return {name: tensor for name, tensor in named.items() if name in persistent}


def load_weights(model: torch.nn.Module, state: dict[str, torch.Tensor], source: str | Path) -> None:
    """Load ``state`` (canonical or full) into ``model``; aliases need not be present.

    Raises
    ------
    InputError
        Missing, unexpected or mis-shaped tensors, naming ``source`` and the first offender.
    """
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise InputError(source, f"weights do not match the model configuration ({detail})") from None
    canonical = set(canonical_state_dict(model))
    missing = [k for k in result.missing_keys if k in canonical]
    problems = [f"missing {k}" for k in missing] + [f"unexpected {k}" for k in result.unexpected_keys]
    if problems:
        more = f" and {len(problems) - 1} more" if len(problems) > 1 else ""
        raise InputError(source, f"weights do not match the model configuration ({problems[0]}{more})")


def package_versions() -> dict[str, str]:
    """Versions of the packages that determine a model's behaviour."""
    out = {"python": platform.python_version()}
    for name in ("glioseg", "torch", "monai", "dynamic-network-architectures", "lightning", "numpy"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def save_model(
    state_dict: dict[str, torch.Tensor], info: dict[str, Any], stem: str | Path
) -> tuple[Path, Path]:
    """Write ``<stem>.safetensors`` (weights) and ``<stem>.json`` (``info`` + format and versions)."""
    stem = Path(stem)
    weights = stem.with_suffix(".safetensors")
    doc = {"format": MODEL_FORMAT, "versions": package_versions(), **info}
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in state_dict.items()}
    with atomic_path(weights, suffix=".safetensors") as tmp:
        save_file(tensors, str(tmp), metadata={"format": MODEL_FORMAT})
    write_text_atomic(stem.with_suffix(".json"), json.dumps(doc, indent=1) + "\n")
    return weights, stem.with_suffix(".json")


def half_precision(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state_dict`` with every floating-point tensor rounded to float16 (integer buffers kept)."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state_dict.items()}


def store_float16(path: str | Path) -> bool:
    """Round the weights of a finished run (or ``model.safetensors``) to float16 in place, as
    released models are stored; ``model.json`` records ``weights_dtype`` and the versions it was
    trained with.  Returns False, changing nothing, when they already are float16.
    """
    stem = Path(path) / "model" if Path(path).is_dir() else Path(path).with_suffix("")
    if read_json(stem.with_suffix(".json"), "model description").get("weights_dtype") == "float16":
        return False  # decided from the description alone: a resumed run calls this for every model
    state, info = read_model_files(stem.with_suffix(".safetensors"))
    kept = {k: v for k, v in info.items() if k not in ("format", "versions")}
    kept.setdefault("trained_with_versions", info.get("versions"))
    save_model(half_precision(state), {**kept, "weights_dtype": "float16"}, stem)
    return True


def read_model_files(path: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Load weights and description from ``model.safetensors`` (or its ``.json``, or a run folder).

    Raises
    ------
    InputError
        Missing files, a JSON or safetensors file that is not a glioseg model.
    """
    p = Path(path)
    if p.is_dir():
        p = p / "model.safetensors"
    weights, doc_path = p.with_suffix(".safetensors"), p.with_suffix(".json")
    for required in (weights, doc_path):
        if not required.exists():
            raise InputError(
                required, "model file not found (a model is <name>.safetensors with <name>.json)"
            )
    doc = read_json(doc_path, "model description")
    if doc.get("format") != MODEL_FORMAT:
        raise InputError(doc_path, f"not a glioseg model description (format {doc.get('format')!r})")
    if _header(weights).get("format") != MODEL_FORMAT:
        raise InputError(weights, "not a glioseg model weights file")
    return load_file(str(weights)), doc
