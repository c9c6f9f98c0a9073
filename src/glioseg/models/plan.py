"""Dataset fingerprint and training plan (nnU-Net's fingerprint -> plan idea, in plain dataclasses).

The **fingerprint** summarises a dataset: voxel spacings and shapes (from headers), and after
preprocessing the cropped shapes, foreground intensity statistics and tumour volumes.
The **plan** fixes everything the network and the data pipeline need: target spacing, patch
size, batch size, depth and width of the network, normalisation.  It is derived from the
fingerprint and a memory budget, written as JSON, and stored in every checkpoint, so that a
model always travels with the preprocessing it was trained on.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import MISSING, asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from glioseg.data.cases import Case
from glioseg.data.io import Geometry, read_image, write_text_atomic
from glioseg.data.labels import REGIONS
from glioseg.data.modalities import MODALITIES
from glioseg.errors import ConfigError, InputError

#: nnU-Net's BraTS 3d_fullres configuration.
BRATS_PATCH = (128, 128, 128)
BRATS_SPACING = (1.0, 1.0, 1.0)
#: Smallest feature map at the bottom of the U-Net (nnU-Net: 4 voxels), and most down-samplings.
MIN_FEATURE_MAP = 4
MAX_POOLINGS = 5


@dataclass
class Fingerprint:
    """Summary statistics of a dataset (all spacings in mm, shapes in voxels, volumes in mL)."""

    n_cases: int
    spacings: list[list[float]]
    shapes: list[list[int]]
    median_spacing: list[float]
    median_shape: list[float]
    cropped_shapes: list[list[int]] = field(default_factory=list)
    intensity: dict[str, dict[str, float]] = field(default_factory=dict)
    tumour_volume_ml: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")


def header_fingerprint(cases: list[Case]) -> Fingerprint:
    """Spacings and shapes of every case, read from the ``t1n`` headers only (fast)."""
    if not cases:
        raise ConfigError("no cases to fingerprint")
    spacings, shapes = [], []
    for case in cases:
        geometry = Geometry.of(read_image(case.images[MODALITIES[0]]))
        spacings.append([float(s) for s in geometry.spacing])
        shapes.append([int(s) for s in geometry.shape])
    return Fingerprint(
        n_cases=len(cases),
        spacings=spacings,
        shapes=shapes,
        median_spacing=np.median(np.asarray(spacings), axis=0).tolist(),
        median_shape=np.median(np.asarray(shapes), axis=0).tolist(),
    )


def add_preprocessed_statistics(
    fingerprint: Fingerprint, infos: list, images: list, labels: list
) -> Fingerprint:
    """Complete a header fingerprint with cropped shapes, foreground intensities and tumour volumes.

    ``images``/``labels`` are the preprocessed arrays (z-scored images; statistics of the raw
    intensities come from the stored per-channel mean/std).
    """
    fingerprint.cropped_shapes = [list(info.cropped_shape) for info in infos]
    raw_means = np.asarray([info.channel_mean for info in infos])
    raw_stds = np.asarray([info.channel_std for info in infos])
    fingerprint.intensity = {
        m: {
            "median_brain_mean": float(np.median(raw_means[:, i])),
            "median_brain_std": float(np.median(raw_stds[:, i])),
        }
        for i, m in enumerate(MODALITIES)
    }
    volumes = {r: [] for r in REGIONS}
    for info, label in zip(infos, labels, strict=True):
        if label is None:
            continue
        voxel_ml = float(np.prod(info.target_spacing)) / 1000.0
        lab = np.asarray(label)
        volumes["WT"].append(np.count_nonzero(lab) * voxel_ml)
        volumes["TC"].append(np.count_nonzero((lab == 1) | (lab == 3)) * voxel_ml)
        volumes["ET"].append(np.count_nonzero(lab == 3) * voxel_ml)
    fingerprint.tumour_volume_ml = {
        r: {"median": float(np.median(v)), "min": float(np.min(v)), "max": float(np.max(v))}
        for r, v in volumes.items()
        if v
    }
    return fingerprint


@dataclass
class Plan:
    """How to preprocess and which network to train; stored with every checkpoint.

    Attributes
    ----------
    model : registry name (``nnunet``, ``mednext-m-k3``, ...)
    target_spacing : mm per axis the network sees
    patch_size : voxels per axis of a training patch (divisible by ``2 ** (n_stages - 1)``)
    batch_size : patches per step
    n_stages : resolution stages of the U-Net
    base_features : channels of the first stage (nnU-Net: 32), doubled per stage up to ``max_features``
    memory_budget_gib, estimated_memory_gib : planner's budget and its estimate for one training step
    model_config : :class:`glioseg.models.ModelConfig` as a dict
    """

    model: str
    target_spacing: list[float]
    patch_size: list[int]
    batch_size: int
    n_stages: int
    base_features: int
    max_features: int
    memory_budget_gib: float
    estimated_memory_gib: float
    median_shape: list[float]
    model_config: dict[str, Any]
    normalization: str = "zscore-nonzero"
    channels: list[str] = field(default_factory=lambda: list(MODALITIES))
    regions: list[str] = field(default_factory=lambda: list(REGIONS))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str | Path | None = None) -> Plan:
        """The plan stored in ``plan.json`` or a ``model.json`` (unknown keys are ignored).

        With ``source`` (the file it came from) the plan is also checked (:meth:`validate`) and
        a missing or impossible field is an :class:`~glioseg.errors.InputError` naming that file.
        """
        if source is None:
            return cls(**{k: data[k] for k in cls.__dataclass_fields__ if k in data})
        if not isinstance(data, dict):
            raise InputError(source, "model description has no plan")
        required = [
            k
            for k, f in cls.__dataclass_fields__.items()
            if f.default is MISSING and f.default_factory is MISSING
        ]
        missing = [k for k in required if k not in data]
        if missing:
            raise InputError(source, f"plan lacks {', '.join(missing)}")
        plan = cls.from_dict(data)
        plan.validate(source)
        return plan

    def validate(self, source: str | Path) -> None:
        """Check what inference relies on: a positive spacing and patch per axis, glioseg's
        channels, regions and normalisation; an :class:`~glioseg.errors.InputError` names ``source``."""
        spacing = self.target_spacing
        if not spacing or len(spacing) != 3 or any(float(s) <= 0 for s in spacing):
            raise InputError(source, f"plan has no valid target spacing ({spacing})")
        patch = self.patch_size
        if not patch or len(patch) != 3 or any(int(p) < 1 for p in patch):
            raise InputError(source, f"plan has no valid patch size ({patch})")
        if self.normalization != "zscore-nonzero":
            raise InputError(source, f"unsupported normalisation {self.normalization!r}")

    def save(self, path: str | Path) -> None:
        write_text_atomic(path, json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> Plan:
        return cls.from_dict(json.loads(Path(path).read_text()))


def n_stages_for_patch(patch: tuple[int, ...]) -> int:
    """Resolution stages nnU-Net would use: halve until the smallest axis would drop below 4 voxels (at most 5 times)."""
    poolings = min(int(math.floor(math.log2(p / MIN_FEATURE_MAP))) for p in patch)
    return max(1, min(poolings, MAX_POOLINGS)) + 1


def default_memory_budget_gib() -> float:
    """60 % of the GPU's memory when CUDA is available, else 60 % of system RAM."""
    try:
        import torch

        if torch.cuda.is_available():
            return 0.6 * torch.cuda.get_device_properties(0).total_memory / 2**30
    except Exception:  # pragma: no cover - no usable GPU
        pass
    try:
        return 0.6 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError):  # pragma: no cover
        return 8.0


def make_plan(
    fingerprint: Fingerprint,
    model: str,
    target_spacing: tuple[float, float, float] | None = None,
    patch_size: tuple[int, int, int] | None = None,
    batch_size: int = 2,
    base_features: int = 32,
    max_features: int = 320,
    memory_budget_gib: float | None = None,
) -> Plan:
    """Derive a plan.

    Target spacing defaults to the dataset's median spacing.  Without ``patch_size`` the
    planner starts from the largest power of two that fits the smallest (cropped) image at
    that spacing, capped at 128 per axis (nnU-Net's BraTS patch), and halves the largest axis
    until a training step fits the memory budget.  A given ``patch_size`` is checked, not changed.

    Raises
    ------
    ConfigError
        Unknown model, a patch not divisible by the network's down-sampling factor, or a
        plan whose estimated training memory exceeds the budget.
    """
    from glioseg.models import model_config
    from glioseg.models.memory import estimate_training_memory

    budget = float(memory_budget_gib) if memory_budget_gib is not None else default_memory_budget_gib()
    spacing = tuple(float(s) for s in (target_spacing or fingerprint.median_spacing))
    shapes = np.asarray(fingerprint.cropped_shapes or fingerprint.shapes, dtype=float)
    spacings = np.asarray(fingerprint.spacings, dtype=float)
    median_shape = np.median(shapes * spacings / np.asarray(spacing), axis=0)
    model_config(model, 2)  # fail early on an unknown name
    if batch_size < 1:
        raise ConfigError(f"batch size must be at least 1, got {batch_size}")

    def evaluate(patch: tuple[int, int, int]):
        stages = n_stages_for_patch(patch)
        config = model_config(model, stages, base_features, max_features)
        return stages, config, estimate_training_memory(config, patch, batch_size)

    if patch_size is not None:
        patch = tuple(int(p) for p in patch_size)
        stages = n_stages_for_patch(patch)
        factor = 2 ** (stages - 1)
        if any(p % factor for p in patch) or min(patch) < 8:
            raise ConfigError(
                f"patch {_fmt(patch)} must be at least 8 and divisible by {factor} on every axis "
                f"(the network down-samples {stages - 1} times)"
            )
        stages, config, estimate = evaluate(patch)
        if estimate.total_gib > budget:
            raise ConfigError(
                f"plan needs about {estimate.total_gib:.1f} GiB per training step ({model}, patch {_fmt(patch)}, "
                f"batch {batch_size}), more than the memory budget of {budget:.1f} GiB; use a smaller --patch or "
                f"--batch-size, fewer --base-features, or raise --memory-budget"
            )
    else:
        smallest = np.min(shapes * spacings / np.asarray(spacing), axis=0)
        start = [int(min(128, max(16, 2 ** math.floor(math.log2(max(s, 16)))))) for s in smallest]
        patch = tuple(start)
        while True:
            stages, config, estimate = evaluate(patch)
            if estimate.total_gib <= budget:
                break
            largest = int(np.argmax(patch))
            if patch[largest] <= 16:
                raise ConfigError(
                    f"even a 16-voxel patch of {model} needs about {estimate.total_gib:.1f} GiB, more than the "
                    f"memory budget of {budget:.1f} GiB; lower --base-features or raise --memory-budget"
                )
            patch = tuple(p // 2 if i == largest else p for i, p in enumerate(patch))
    return Plan(
        model=model,
        target_spacing=list(spacing),
        patch_size=list(patch),
        batch_size=int(batch_size),
        n_stages=int(stages),
        base_features=int(base_features),
        max_features=int(max_features),
        memory_budget_gib=round(budget, 2),
        estimated_memory_gib=round(estimate.total_gib, 2),
        median_shape=[round(float(s), 1) for s in median_shape],
        model_config=config.to_dict(),
    )


def _fmt(values) -> str:
    return "x".join(str(int(v)) for v in values)
