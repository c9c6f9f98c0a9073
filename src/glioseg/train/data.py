"""Training data: random patches with foreground oversampling and nnU-Net-style augmentation.

Every sample is a pure function of ``(seed, epoch, index)``: the case, the patch position and
every augmentation draw come from a generator seeded with those three numbers.  A resumed
run therefore sees exactly the batches an uninterrupted run would have seen, whatever the
number of data-loader workers.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from glioseg.data.labels import labels_to_regions
from glioseg.data.preprocess import PreprocessedCache
from glioseg.data.synthetic.degrade import LowQualityProfile, degrade_low_quality


def extract_patch(array: np.ndarray, start: Sequence[int], size: Sequence[int]) -> np.ndarray:
    """Copy ``array[..., start:start+size]`` (last three axes), zero-padding where it leaves the array."""
    spatial = array.shape[-3:]
    out = np.zeros((*array.shape[:-3], *size), dtype=array.dtype)
    src, dst = [], []
    for s, n, dim in zip(start, size, spatial, strict=True):
        lo, hi = max(s, 0), min(s + n, dim)
        if hi <= lo:
            return out
        src.append(slice(lo, hi))
        dst.append(slice(lo - s, hi - s))
    lead = (slice(None),) * (array.ndim - 3)
    out[(*lead, *dst)] = array[(*lead, *src)]
    return out


def patch_start(
    shape: Sequence[int], patch: Sequence[int], rng: np.random.Generator, centre: Sequence[int] | None = None
) -> list[int]:
    """Corner of a patch: around ``centre`` when given (clamped to stay inside), else uniformly inside."""
    start = []
    for axis, (dim, size) in enumerate(zip(shape, patch, strict=True)):
        if centre is None:
            start.append(int(rng.integers(0, max(dim - size, 0) + 1)))
        else:
            s = int(centre[axis]) - size // 2
            start.append(int(min(max(s, 0), max(dim - size, 0))))
    return start


def normalised_low_quality(
    image: np.ndarray,
    spacing: float,
    rng: np.random.Generator,
    profile: LowQualityProfile = LowQualityProfile(),
) -> np.ndarray:
    """Apply the synthetic ``ssa`` degradation to a z-scored patch ``(C, X, Y, Z)``.

    Each channel is shifted to non-negative values inside its brain mask, degraded with
    :func:`glioseg.data.synthetic.degrade.degrade_low_quality`, and z-scored again.
    """
    out = image.copy()
    for c in range(image.shape[0]):
        channel = image[c]
        mask = channel != 0
        if mask.sum() < 10:
            continue
        shifted = np.where(mask, channel - channel[mask].min() + 1e-3, 0).astype(np.float32)
        degraded, _ = degrade_low_quality(shifted, spacing, rng, profile, mask=mask.astype(np.float32))
        values = degraded[mask]
        out[c] = np.where(mask, (degraded - values.mean()) / max(values.std(), 1e-6), 0)
    return out


def nnunet_augmentation(patch_size: Sequence[int]):
    """MONAI transforms with nnU-Net v2's default augmentation parameters (dict keys image/label)."""
    from monai.transforms import (
        Compose,
        RandAdjustContrastd,
        RandAffined,
        RandFlipd,
        RandGaussianNoised,
        RandGaussianSmoothd,
        RandScaleIntensityd,
        RandScaleIntensityFixedMeand,
        RandSimulateLowResolutiond,
    )

    rot = np.pi / 6
    return Compose(
        [
            RandAffined(
                keys=("image", "label"),
                prob=0.2,
                rotate_range=(rot, rot, rot),
                scale_range=(0.3, 0.3, 0.3),
                mode=("bilinear", "nearest"),
                padding_mode="zeros",
                spatial_size=tuple(patch_size),
            ),
            RandGaussianNoised(keys="image", prob=0.1, std=0.1),
            RandGaussianSmoothd(
                keys="image", prob=0.2, sigma_x=(0.5, 1.0), sigma_y=(0.5, 1.0), sigma_z=(0.5, 1.0)
            ),
            RandScaleIntensityd(keys="image", factors=0.25, prob=0.15),
            RandScaleIntensityFixedMeand(keys="image", factors=0.25, prob=0.15),
            RandSimulateLowResolutiond(keys="image", prob=0.25, zoom_range=(0.5, 1.0)),
            RandAdjustContrastd(
                keys="image", prob=0.1, gamma=(0.7, 1.5), invert_image=True, retain_stats=True
            ),
            RandAdjustContrastd(
                keys="image", prob=0.3, gamma=(0.7, 1.5), invert_image=False, retain_stats=True
            ),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=0),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=1),
            RandFlipd(keys=("image", "label"), prob=0.5, spatial_axis=2),
        ]
    )


class PatchDataset(Dataset):
    """Random training patches from preprocessed cases.

    Parameters
    ----------
    cache : PreprocessedCache
    case_ids : cases to draw from (each must be cached with a label)
    patch_size : voxels per axis
    samples_per_epoch : ``iterations per epoch x batch size``
    batch_size : used for nnU-Net's oversampling rule: in each batch the last
        ``batch_size - round(batch_size * (1 - oversample))`` samples are centred on tumour
    seed : base seed
    augment : apply :func:`nnunet_augmentation`
    low_quality_probability : chance per sample of :func:`normalised_low_quality`
    processes : processes of a multi-process (DDP) run; Lightning's distributed sampler deals
        sample ``i`` to process ``i % processes``, so a process's batches are made of every
        ``processes``-th index and the oversampling rule counts positions in those batches

    Items are dicts with ``image`` ``(4, *patch)`` float32 and ``target`` ``(3, *patch)`` float32
    (WT, TC, ET masks).
    """

    def __init__(
        self,
        cache: PreprocessedCache,
        case_ids: Sequence[str],
        patch_size: Sequence[int],
        samples_per_epoch: int,
        batch_size: int,
        seed: int = 0,
        oversample: float = 0.33,
        augment: bool = True,
        low_quality_probability: float = 0.0,
        processes: int = 1,
    ):
        self.cache = cache
        self.case_ids = list(case_ids)
        self.patch_size = tuple(int(p) for p in patch_size)
        self.samples_per_epoch = int(samples_per_epoch)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.oversample = float(oversample)
        self.low_quality_probability = float(low_quality_probability)
        self.processes = max(1, int(processes))
        self.epoch = 0
        self.transforms = nnunet_augmentation(self.patch_size) if augment else None
        self.spacing = float(np.mean(cache.info(self.case_ids[0]).target_spacing)) if self.case_ids else 1.0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return self.samples_per_epoch

    def forces_foreground(self, index: int) -> bool:
        position = index // self.processes % self.batch_size
        return position >= round(self.batch_size * (1 - self.oversample))

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.epoch, int(index)])
        case_id = self.case_ids[int(rng.integers(len(self.case_ids)))]
        image, label, fg = self.cache.load(case_id, mmap=True)
        centre = None
        if self.forces_foreground(index) and fg is not None and len(fg):
            regions = np.unique(fg[:, 0])
            region = regions[int(rng.integers(len(regions)))]
            rows = fg[fg[:, 0] == region]
            centre = rows[int(rng.integers(len(rows))), 1:]
        start = patch_start(image.shape[1:], self.patch_size, rng, centre)
        img = extract_patch(image, start, self.patch_size).astype(np.float32)
        lab = extract_patch(label, start, self.patch_size)
        if self.low_quality_probability and rng.random() < self.low_quality_probability:
            img = normalised_low_quality(img, self.spacing, rng)
        if self.transforms is not None:
            from monai.data import set_track_meta

            set_track_meta(False)
            self.transforms.set_random_state(seed=int(rng.integers(2**31 - 1)))
            sample = self.transforms(
                {"image": torch.from_numpy(img), "label": torch.from_numpy(lab[None].astype(np.float32))}
            )
            img = np.asarray(sample["image"], dtype=np.float32)
            lab = np.rint(np.asarray(sample["label"])[0]).astype(np.uint8)
        target = labels_to_regions(lab).astype(np.float32)
        return {"image": torch.from_numpy(np.ascontiguousarray(img)), "target": torch.from_numpy(target)}


class CaseDataset(Dataset):
    """Whole preprocessed cases for validation: ``image`` ``(4, x, y, z)``, ``target`` ``(3, x, y, z)``."""

    def __init__(self, cache: PreprocessedCache, case_ids: Sequence[str]):
        self.cache = cache
        self.case_ids = list(case_ids)

    def __len__(self) -> int:
        return len(self.case_ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        image, label, _ = self.cache.load(self.case_ids[index], mmap=False)
        return {
            "image": torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)),
            "target": torch.from_numpy(labels_to_regions(label).astype(np.float32)),
        }
