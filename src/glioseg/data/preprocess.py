"""Preprocessing as nnU-Net does it for BraTS MRI, and its exact inverse.

Forward (:func:`preprocess_case`):

1. crop to the bounding box of voxels that are non-zero in any modality (the skull-stripped brain);
2. z-score each channel over the brain mask (non-zero voxels) and set the outside to 0
   (nnU-Net's ``ZScoreNormalization`` with ``use_mask_for_norm``);
3. optionally resample to a target spacing: images trilinearly, labels through their nested
   region masks (linear interpolation of WT/TC/ET, threshold 0.5), which keeps the nesting.

Inverse (:func:`restore_to_original`): resample region probabilities (or labels) back to the
cropped shape, pad into the original grid, and hand back an array on the input's exact grid, to
be written with the input's affine and header.

Preprocessed cases can be cached on disk (:class:`PreprocessedCache`): ``<ID>_image.npy``
(float32, ``(4, x, y, z)``), ``<ID>_label.npy`` (uint8), ``<ID>_fg.npy`` (sampled tumour
voxel coordinates for foreground oversampling) and ``<ID>.json`` (crop box, spacings, shapes,
affine).  Arrays are memory-mapped when patches are drawn, so the cache may exceed RAM.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from glioseg.data.arrays import bounding_box
from glioseg.data.cases import Case, CaseData, load_case
from glioseg.data.io import atomic_path, write_text_atomic
from glioseg.data.labels import labels_to_regions, regions_to_labels

#: Cap on the number of foreground coordinates stored per region for oversampling.
MAX_FOREGROUND_SAMPLES = 10_000


@dataclass
class PreprocessInfo:
    """Geometry bookkeeping that makes preprocessing invertible.

    Attributes
    ----------
    original_shape : (3,) voxels of the input grid
    original_spacing : (3,) mm
    crop_box : ((start, stop),) * 3, voxel indices of the non-zero bounding box in the input
    cropped_shape : (3,) voxels after cropping
    target_spacing : (3,) mm after resampling (equal to ``original_spacing`` when not resampled)
    shape : (3,) voxels of the preprocessed arrays
    affine : 4x4 list, the input's voxel -> world matrix
    """

    case_id: str
    original_shape: tuple[int, int, int]
    original_spacing: tuple[float, float, float]
    crop_box: tuple[tuple[int, int], tuple[int, int], tuple[int, int]]
    cropped_shape: tuple[int, int, int]
    target_spacing: tuple[float, float, float]
    shape: tuple[int, int, int]
    affine: list[list[float]]
    channel_mean: list[float]
    channel_std: list[float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> PreprocessInfo:
        fields = {k: data[k] for k in cls.__dataclass_fields__}
        for key in ("original_shape", "cropped_shape", "shape"):
            fields[key] = tuple(int(v) for v in fields[key])
        for key in ("original_spacing", "target_spacing"):
            fields[key] = tuple(float(v) for v in fields[key])
        fields["crop_box"] = tuple((int(a), int(b)) for a, b in fields["crop_box"])
        return cls(**fields)

    @property
    def resampled(self) -> bool:
        return not np.allclose(self.original_spacing, self.target_spacing, atol=1e-6)


def nonzero_box(image: np.ndarray) -> tuple[tuple[int, int], ...]:
    """Bounding box ``((x0, x1), (y0, y1), (z0, z1))`` of voxels non-zero in any channel of ``(C, X, Y, Z)``."""
    box = bounding_box(np.any(image != 0, axis=0))
    if box is None:
        return tuple((0, s) for s in image.shape[1:])
    return tuple((s.start, s.stop) for s in box)


def zscore_in_mask(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, list[float], list[float]]:
    """Per-channel z-score over ``mask``; voxels outside the mask become 0. Returns (image, means, stds)."""
    out = np.zeros(image.shape, dtype=np.float32)
    means, stds = [], []
    for c in range(image.shape[0]):
        values = image[c][mask]
        mean = float(values.mean()) if values.size else 0.0
        std = float(values.std()) if values.size else 1.0
        std = max(std, 1e-8)
        out[c][mask] = (image[c][mask] - mean) / std
        means.append(mean)
        stds.append(std)
    return out, means, stds


def target_shape(
    shape: tuple[int, ...], spacing: tuple[float, ...], target_spacing: tuple[float, ...]
) -> tuple[int, ...]:
    """Voxels after resampling a grid of ``shape`` at ``spacing`` to ``target_spacing`` (nnU-Net rounding)."""
    return tuple(
        max(int(round(s * sp / tsp)), 1) for s, sp, tsp in zip(shape, spacing, target_spacing, strict=True)
    )


def resample_channels(array: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Trilinear resampling of ``(C, X, Y, Z)`` float data to ``(C, *shape)`` (corner-aligned grid centres)."""
    if tuple(array.shape[1:]) == tuple(shape):
        return array.astype(np.float32, copy=False)
    tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    out = F.interpolate(tensor, size=tuple(shape), mode="trilinear", align_corners=False)
    return out[0].numpy()


def resample_labels(labels: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resample a canonical label map through its nested region masks (linear, threshold 0.5)."""
    if tuple(labels.shape) == tuple(shape):
        return labels
    regions = labels_to_regions(labels).astype(np.float32)
    return regions_to_labels(resample_channels(regions, shape) > 0.5)


def preprocess_case(
    data: CaseData, target_spacing: tuple[float, float, float] | None = None
) -> tuple[np.ndarray, np.ndarray | None, PreprocessInfo]:
    """Crop, normalise and (optionally) resample a loaded case.

    Parameters
    ----------
    data : CaseData
        ``image`` of shape ``(4, X, Y, Z)``.
    target_spacing : three floats in mm, optional
        ``None`` keeps the original spacing.

    Returns
    -------
    image : float32 ``(4, x, y, z)``, z-scored inside the brain, 0 outside
    label : uint8 ``(x, y, z)`` or None
    info : PreprocessInfo
    """
    spacing = tuple(float(s) for s in data.spacing)
    box = nonzero_box(data.image)
    slices = tuple(slice(a, b) for a, b in box)
    cropped = data.image[(slice(None), *slices)]
    mask = np.any(cropped != 0, axis=0)
    image, means, stds = zscore_in_mask(cropped, mask)
    label = data.label[slices] if data.label is not None else None
    tsp = tuple(float(s) for s in (target_spacing or spacing))
    shape = target_shape(image.shape[1:], spacing, tsp)
    if shape != tuple(image.shape[1:]):
        image = resample_channels(image, shape)
        if label is not None:
            label = resample_labels(label, shape)
    info = PreprocessInfo(
        case_id=data.case_id,
        original_shape=tuple(int(s) for s in data.image.shape[1:]),
        original_spacing=spacing,
        crop_box=box,
        cropped_shape=tuple(int(s) for s in cropped.shape[1:]),
        target_spacing=tsp,
        shape=tuple(int(s) for s in image.shape[1:]),
        affine=np.asarray(data.affine).tolist(),
        channel_mean=means,
        channel_std=stds,
    )
    return image.astype(np.float32, copy=False), label, info


def restore_to_original(array: np.ndarray, info: PreprocessInfo, is_labels: bool = False) -> np.ndarray:
    """Put a preprocessed-space array back on the input grid (the exact inverse of the geometry steps).

    Parameters
    ----------
    array : ``(C, x, y, z)`` float probabilities, or ``(x, y, z)`` labels when ``is_labels``
    info : PreprocessInfo of the case

    Returns
    -------
    ``(C, X, Y, Z)`` float32 (zero outside the crop) or ``(X, Y, Z)`` uint8 labels on the original grid.
    """
    if is_labels:
        restored = resample_labels(np.asarray(array, dtype=np.uint8), info.cropped_shape)
        out = np.zeros(info.original_shape, dtype=np.uint8)
        out[tuple(slice(a, b) for a, b in info.crop_box)] = restored
        return out
    restored = resample_channels(np.asarray(array, dtype=np.float32), info.cropped_shape)
    out = np.zeros((array.shape[0], *info.original_shape), dtype=np.float32)
    out[(slice(None), *(slice(a, b) for a, b in info.crop_box))] = restored
    return out


def foreground_samples(label: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Up to :data:`MAX_FOREGROUND_SAMPLES` voxel coordinates per region, as rows ``(region, x, y, z)`` (int32)."""
    rows = []
    for region_index, mask in enumerate(labels_to_regions(label)):
        coords = np.argwhere(mask)
        if len(coords) > MAX_FOREGROUND_SAMPLES:
            coords = coords[rng.choice(len(coords), MAX_FOREGROUND_SAMPLES, replace=False)]
        rows.append(np.column_stack([np.full(len(coords), region_index), coords]))
    return np.concatenate(rows).astype(np.int32) if rows else np.zeros((0, 4), np.int32)


class PreprocessedCache:
    """Preprocessed cases on disk under ``root/<key>/``, where ``key`` depends on the target spacing.

    A cached case is reused while its source files keep their size and modification time.
    """

    VERSION = 1

    def __init__(self, root: str | Path, target_spacing: tuple[float, float, float] | None):
        spacing_key = "native" if target_spacing is None else "x".join(f"{s:g}" for s in target_spacing)
        self.target_spacing = None if target_spacing is None else tuple(float(s) for s in target_spacing)
        self.folder = Path(root) / f"v{self.VERSION}-{spacing_key}"

    @staticmethod
    def _source_stamp(case: Case) -> str:
        parts = []
        for path in [*case.images.values(), *([case.label] if case.label else [])]:
            stat = Path(path).stat()
            parts.append(f"{Path(path).resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
        return hashlib.sha256("|".join(parts).encode()).hexdigest()[:16]

    def paths(self, case_id: str) -> dict[str, Path]:
        return {
            "image": self.folder / f"{case_id}_image.npy",
            "label": self.folder / f"{case_id}_label.npy",
            "fg": self.folder / f"{case_id}_fg.npy",
            "meta": self.folder / f"{case_id}.json",
        }

    def is_current(self, case: Case) -> bool:
        meta = self.paths(case.case_id)["meta"]
        if not meta.exists():
            return False
        try:
            stored = json.loads(meta.read_text())
        except (OSError, json.JSONDecodeError):
            return False
        return stored.get("source_stamp") == self._source_stamp(case)

    def ensure(self, case: Case, seed: int = 0) -> PreprocessInfo:
        """Preprocess ``case`` into the cache unless an up-to-date copy is there; return its info."""
        if self.is_current(case):
            return self.info(case.case_id)
        data = load_case(case)
        image, label, info = preprocess_case(data, self.target_spacing)
        paths = self.paths(case.case_id)
        self.folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(paths["image"], suffix=".npy") as tmp:
            np.save(tmp, image, allow_pickle=False)
        has_label = label is not None
        if has_label:
            with atomic_path(paths["label"], suffix=".npy") as tmp:
                np.save(tmp, label, allow_pickle=False)
            rng = np.random.default_rng(
                [seed, int(hashlib.sha256(case.case_id.encode()).hexdigest()[:8], 16)]
            )
            with atomic_path(paths["fg"], suffix=".npy") as tmp:
                np.save(tmp, foreground_samples(label, rng), allow_pickle=False)
        record = {**info.to_dict(), "has_label": has_label, "source_stamp": self._source_stamp(case)}
        write_text_atomic(paths["meta"], json.dumps(record, indent=1))
        return info

    def info(self, case_id: str) -> PreprocessInfo:
        return PreprocessInfo.from_dict(json.loads(self.paths(case_id)["meta"].read_text()))

    def has_label(self, case_id: str) -> bool:
        return bool(json.loads(self.paths(case_id)["meta"].read_text()).get("has_label"))

    def load(
        self, case_id: str, mmap: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """``(image, label, foreground rows)``; arrays memory-mapped read-only when ``mmap``."""
        paths = self.paths(case_id)
        mode = "r" if mmap else None
        image = np.load(paths["image"], mmap_mode=mode, allow_pickle=False)
        label = (
            np.load(paths["label"], mmap_mode=mode, allow_pickle=False) if paths["label"].exists() else None
        )
        fg = np.load(paths["fg"], allow_pickle=False) if paths["fg"].exists() else None
        return image, label, fg
