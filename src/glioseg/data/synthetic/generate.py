"""Synthetic BraTS-like cases: anatomy from MNI152, glioma phantoms, four MRI contrasts.

The two domains mirror the seed paper's setting:

``adult``  high-quality scans of a large adult-glioma cohort (BraTS GLI-like);
``ssa``    low-quality scans from sub-Saharan Africa (BraTS-Africa-like): thick slices
           resampled to 1 mm, lower SNR, stronger bias field, contrast variation,
           motion and ghosting, and larger tumours at presentation.

Both produce BraTS 2023 naming and canonical labels.  A case is a pure function of
``(seed, index, domain, shape, spacing)``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy.ndimage import distance_transform_edt, gaussian_filter

from glioseg.data.arrays import bounding_box
from glioseg.data.cases import SYNTH_RECORD_SUFFIX
from glioseg.data.io import save_nifti, write_text_atomic
from glioseg.data.labels import ET, NETC, SNFH
from glioseg.data.modalities import MODALITIES
from glioseg.data.synthetic.atlas import CHANNELS, load_atlas
from glioseg.data.synthetic.degrade import (
    LowQualityProfile,
    bias_field,
    degrade_low_quality,
    rician_noise,
    smooth_field,
)
from glioseg.data.synthetic.tumour import Lesion, lesion_summary, render_lesions
from glioseg.data.synthetic.warp import ElasticField, HeadPose, MassEffect, brats_like_affine, sample_atlas

BRATS_SHAPE = (240, 240, 155)

#: Mean intensity of each tissue class per contrast, relative to white matter.
#: ET bright on t1c, NETC dark on t1c, edema bright on t2w/t2f, CSF bright on t2w and dark on t2f.
TISSUE_INTENSITY: dict[str, dict[str, float]] = {
    #         CSF    GM     WM    SNFH   NETC    ET
    "t1n": {"csf": 0.30, "gm": 0.66, "wm": 1.0, "snfh": 0.62, "netc": 0.45, "et": 0.78},
    "t1c": {"csf": 0.30, "gm": 0.68, "wm": 1.0, "snfh": 0.64, "netc": 0.36, "et": 1.65},
    "t2w": {"csf": 2.10, "gm": 1.30, "wm": 1.0, "snfh": 1.75, "netc": 1.95, "et": 1.40},
    "t2f": {"csf": 0.25, "gm": 1.15, "wm": 1.0, "snfh": 1.85, "netc": 1.30, "et": 1.45},
}
_TUMOUR_CLASSES = {"snfh": SNFH, "netc": NETC, "et": ET}


@dataclass(frozen=True)
class DomainProfile:
    """Ranges from which each case's parameters are drawn."""

    name: str
    core_radius_mm: tuple[float, float]
    edema_margin_mm: tuple[float, float]
    rim_mm: tuple[float, float]
    no_enhancement_probability: float
    extra_lesion_probability: float
    satellite_probability: float
    snr: tuple[float, float]
    bias_strength: tuple[float, float]
    tumour_contrast: tuple[float, float]  # 1 = full contrast
    low_quality: LowQualityProfile | None = None
    max_angle_deg: float = 8.0
    elastic_mm: float = 2.5
    intensity_scale: tuple[float, float] = (400.0, 1400.0)
    id_prefix: str = "SynGLI"


DOMAINS: dict[str, DomainProfile] = {
    "adult": DomainProfile(
        name="adult",
        core_radius_mm=(8.0, 22.0),
        edema_margin_mm=(3.0, 18.0),
        rim_mm=(2.0, 6.0),
        no_enhancement_probability=0.08,
        extra_lesion_probability=0.2,
        satellite_probability=0.35,
        snr=(25.0, 45.0),
        bias_strength=(0.03, 0.10),
        tumour_contrast=(0.9, 1.1),
        id_prefix="SynGLI",
    ),
    "ssa": DomainProfile(
        name="ssa",
        core_radius_mm=(11.0, 25.0),
        edema_margin_mm=(5.0, 20.0),
        rim_mm=(2.5, 8.0),
        no_enhancement_probability=0.10,
        extra_lesion_probability=0.2,
        satellite_probability=0.35,
        snr=(7.0, 14.0),  # applied through low_quality
        bias_strength=(0.15, 0.35),
        tumour_contrast=(0.6, 1.0),
        low_quality=LowQualityProfile(),
        max_angle_deg=12.0,
        elastic_mm=3.0,
        id_prefix="SynSSA",
    ),
}


@dataclass
class SyntheticCase:
    """One generated case.

    Attributes
    ----------
    case_id : str
    image : ndarray, float32, shape (4, X, Y, Z)
        ``t1n, t1c, t2w, t2f``, skull-stripped (zero outside the brain), integer-valued.
    label : ndarray, uint8, shape (X, Y, Z)
        Canonical labels.
    affine : ndarray, shape (4, 4)
    metadata : dict
        Every drawn parameter (lesions, SNR, degradations, volumes).
    """

    case_id: str
    image: np.ndarray
    label: np.ndarray
    affine: np.ndarray
    metadata: dict = field(default_factory=dict)


def case_id_for(domain: str, seed: int, index: int) -> str:
    """Deterministic case ID, e.g. ``SynSSA-s7-0003``."""
    return f"{DOMAINS[domain].id_prefix}-s{seed}-{index:04d}"


def _choose_lesions(
    rng: np.random.Generator,
    profile: DomainProfile,
    coarse_wm: np.ndarray,
    coarse_brain: np.ndarray,
    coarse_affine: np.ndarray,
    coarse_spacing: float,
) -> list[Lesion]:
    """Place main lesions in white matter away from the brain surface, then satellites."""
    brain = coarse_brain > 0.5
    depth_mm = distance_transform_edt(brain) * coarse_spacing
    enhancing = rng.random() >= profile.no_enhancement_probability
    n_main = 1
    if rng.random() < profile.extra_lesion_probability:
        n_main = 2 if rng.random() < 0.8 else 3
    lesions: list[Lesion] = []
    for k in range(n_main):
        r = float(rng.uniform(*profile.core_radius_mm)) * (1.0 if k == 0 else float(rng.uniform(0.35, 0.7)))
        candidates = np.argwhere((coarse_wm > 0.45) & (depth_mm >= min(r, 0.35 * depth_mm.max()) + 4.0))
        if len(candidates) == 0:
            candidates = np.argwhere(depth_mm >= 0.5 * depth_mm.max())
        # keep separate lesions apart: at least the sum of their edema reaches
        for _ in range(50):
            idx = candidates[rng.integers(len(candidates))]
            c = coarse_affine[:3, :3] @ idx + coarse_affine[:3, 3]
            if all(
                np.linalg.norm(c - np.asarray(o.centre_mm)) > o.mean_radius + o.edema_margin_mm + 2 * r + 10
                for o in lesions
            ):
                break
        radii = r * rng.uniform(0.75, 1.25, size=3)
        rim = float(rng.uniform(*profile.rim_mm)) if enhancing else 0.0
        lesions.append(
            Lesion(
                centre_mm=tuple(float(v) for v in c),
                core_radii_mm=tuple(float(v) for v in radii),
                angles_rad=tuple(float(v) for v in rng.uniform(-math.pi, math.pi, 3)),
                rim_mm=min(rim, 0.6 * r),
                necrotic=bool(r > 7.0 and rng.random() < 0.9),
                edema_margin_mm=float(rng.uniform(*profile.edema_margin_mm)) * (1.0 if k == 0 else 0.6),
                irregularity=float(rng.uniform(0.08, 0.22)),
                kind="main",
            )
        )
    if rng.random() < profile.satellite_probability:
        main = lesions[0]
        for _ in range(int(rng.integers(1, 4))):
            direction = rng.standard_normal(3)
            direction /= np.linalg.norm(direction)
            distance = main.mean_radius * float(rng.uniform(1.3, 2.6)) + float(rng.uniform(3, 15))
            centre = np.asarray(main.centre_mm) + direction * distance
            idx = np.round(np.linalg.inv(coarse_affine[:3, :3]) @ (centre - coarse_affine[:3, 3])).astype(int)
            if np.any(idx < 0) or np.any(idx >= np.asarray(brain.shape)) or depth_mm[tuple(idx)] < 4.0:
                continue
            r = float(rng.uniform(1.5, 4.5))
            lesions.append(
                Lesion(
                    centre_mm=tuple(float(v) for v in centre),
                    core_radii_mm=tuple(float(v) for v in r * rng.uniform(0.8, 1.2, size=3)),
                    angles_rad=tuple(float(v) for v in rng.uniform(-math.pi, math.pi, 3)),
                    rim_mm=r if enhancing else 0.0,
                    necrotic=False,
                    edema_margin_mm=float(rng.uniform(0.0, 6.0)),
                    irregularity=0.1,
                    kind="satellite",
                )
            )
    return lesions


def _soft(mask: np.ndarray, sigma_vox: float) -> np.ndarray:
    return gaussian_filter(mask.astype(np.float32), sigma=sigma_vox, mode="constant")


def _synthesise_contrasts(
    channels: np.ndarray,
    labels: np.ndarray,
    profile: DomainProfile,
    rng: np.random.Generator,
    spacing: float,
) -> tuple[np.ndarray, dict]:
    """Four contrasts (relative units, WM = 1 before degradation) on a box of the output grid."""
    t1, gm, wm, csf, brain = (channels[CHANNELS.index(c)] for c in CHANNELS)
    mask = (brain > 0.5).astype(np.float32)
    total = np.maximum(gm + wm + csf, 1e-3)
    gm, wm, csf = gm / total, wm / total, csf / total
    shape = labels.shape
    texture = smooth_field(shape, rng, control_points=max(4, int(round(40 / spacing)))) * 0.5
    texture += smooth_field(shape, rng, control_points=12) * 0.5
    # tumour soft masks and heterogeneity only where there is tumour
    tumour_box = bounding_box(labels > 0, margin=3)
    soft: dict[str, np.ndarray] = {}
    hetero = None
    if tumour_box is not None:
        sub = labels[tumour_box]
        sigma = max(0.6 / spacing, 0.3)
        for name, value in _TUMOUR_CLASSES.items():
            soft[name] = _soft(sub == value, sigma)
        hetero = gaussian_filter(
            rng.standard_normal(sub.shape).astype(np.float32), sigma=max(1.5 / spacing, 0.5)
        )
        hetero /= max(float(hetero.std()), 1e-6)
    contrast = float(rng.uniform(*profile.tumour_contrast))
    images = np.empty((len(MODALITIES), *shape), dtype=np.float32)
    record: dict = {"tumour_contrast": round(contrast, 3), "modalities": {}}
    for m_index, modality in enumerate(MODALITIES):
        mu = TISSUE_INTENSITY[modality]
        img = gm * mu["gm"] + wm * mu["wm"] + csf * mu["csf"]
        if modality in ("t1n", "t1c"):
            img = 0.55 * img + 0.45 * t1 * mu["wm"]
        img *= 1.0 + 0.04 * texture
        if tumour_box is not None:
            region = img[tumour_box]
            weight_sum = np.zeros(region.shape, dtype=np.float32)
            blend = np.zeros(region.shape, dtype=np.float32)
            for name, w in soft.items():
                level = mu["wm"] + contrast * (mu[name] - mu["wm"])
                spread = {"snfh": 0.05, "netc": 0.12, "et": 0.10}[name]
                blend += w * level * (1.0 + spread * hetero)
                weight_sum += w
            weight_sum = np.minimum(weight_sum, 1.0)
            img[tumour_box] = region * (1.0 - weight_sum) + blend
        img *= mask
        modality_record: dict = {}
        if profile.low_quality is not None:
            img, modality_record = degrade_low_quality(img, spacing, rng, profile.low_quality, mask=mask)
        else:
            strength = float(rng.uniform(*profile.bias_strength))
            img = img * bias_field(shape, rng, strength)
            snr = float(rng.uniform(*profile.snr))
            img = rician_noise(img, 1.0 / snr, rng, mask > 0)
            modality_record = {"bias_strength": round(strength, 3), "snr": round(snr, 2)}
        scale = float(rng.uniform(*profile.intensity_scale))
        images[m_index] = np.rint(np.clip(img * scale, 0, 32000))
        modality_record["scale"] = round(scale, 1)
        record["modalities"][modality] = modality_record
    return images, record


def generate_case(
    seed: int,
    index: int = 0,
    domain: str = "adult",
    shape: tuple[int, int, int] = BRATS_SHAPE,
    spacing: float = 1.0,
) -> SyntheticCase:
    """Generate one synthetic case.

    Parameters
    ----------
    seed, index : int
        Together they fix every random draw (same inputs -> same case, bit for bit).
    domain : {"adult", "ssa"}
    shape : tuple of int
        Output grid in voxels (BraTS: 240 x 240 x 155).
    spacing : float
        Isotropic voxel size in mm (BraTS: 1).  Use e.g. ``shape=(64, 64, 64), spacing=3``
        for small, fast test data; anatomy and tumour sizes are in mm, so they scale.

    Returns
    -------
    SyntheticCase

    Examples
    --------
    >>> case = generate_case(seed=0, domain="ssa", shape=(48, 48, 48), spacing=4.0)
    >>> case.image.shape, case.label.dtype
    ((4, 48, 48, 48), dtype('uint8'))
    """
    if domain not in DOMAINS:
        raise ValueError(f"unknown domain {domain!r}; expected one of {', '.join(DOMAINS)}")
    if len(shape) != 3 or min(shape) < 8:
        raise ValueError(f"shape must be three sizes of at least 8 voxels, got {shape}")
    if not (0.5 <= spacing <= 8.0):
        raise ValueError(f"spacing must be between 0.5 and 8 mm, got {spacing}")
    profile = DOMAINS[domain]
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(index), list(DOMAINS).index(domain)]))
    atlas = load_atlas()
    shape = tuple(int(s) for s in shape)
    affine = brats_like_affine(shape, spacing)
    fov = np.asarray(shape) * spacing
    pose = HeadPose.random(rng, profile.max_angle_deg, (0.92, 1.04), 4.0)
    elastic = ElasticField(rng, fov, profile.elastic_mm)

    # coarse pass: where is the brain, where is white matter
    coarse_spacing = max(4.0, spacing)
    coarse_shape = tuple(max(int(np.ceil(f / coarse_spacing)), 2) for f in fov)
    coarse_affine = brats_like_affine(coarse_shape, coarse_spacing)
    coarse = sample_atlas(atlas, coarse_affine, tuple(slice(0, s) for s in coarse_shape), pose, elastic)
    coarse_brain = coarse[CHANNELS.index("brain")]
    lesions = _choose_lesions(
        rng, profile, coarse[CHANNELS.index("wm")], coarse_brain, coarse_affine, coarse_spacing
    )
    mass = [
        MassEffect(np.asarray(les.centre_mm), float(rng.uniform(0.2, 0.45)), 1.3 * les.mean_radius)
        for les in lesions
        if les.kind == "main"
    ]

    # fine pass, restricted to the brain's bounding box (plus margin for warping)
    coarse_box = bounding_box(coarse_brain > 0.05, margin=1)
    if coarse_box is None:
        raise ValueError(f"field of view {fov} mm does not contain the brain; use a larger shape or spacing")
    inv = np.linalg.inv(affine)
    corners = []
    for cx in (coarse_box[0].start, coarse_box[0].stop):
        for cy in (coarse_box[1].start, coarse_box[1].stop):
            for cz in (coarse_box[2].start, coarse_box[2].stop):
                world = coarse_affine[:3, :3] @ np.array([cx, cy, cz]) + coarse_affine[:3, 3]
                corners.append(inv[:3, :3] @ world + inv[:3, 3])
    corners = np.asarray(corners)
    lo = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    hi = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, shape)
    box = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    channels = sample_atlas(atlas, affine, box, pose, elastic, mass, step=max(1, int(round(4.0 / spacing))))
    brain = channels[CHANNELS.index("brain")]
    box_labels = render_lesions(
        lesions, affine, tuple(int(v) for v in lo), brain, channels[CHANNELS.index("wm")], rng
    )
    box_images, contrast_record = _synthesise_contrasts(channels, box_labels, profile, rng, spacing)

    image = np.zeros((len(MODALITIES), *shape), dtype=np.float32)
    label = np.zeros(shape, dtype=np.uint8)
    image[(slice(None), *box)] = box_images
    label[box] = box_labels
    spacing3 = (float(spacing),) * 3
    metadata = {
        "generator": "glioseg.data.synthetic",
        "synthetic": True,
        "domain": domain,
        "seed": int(seed),
        "index": int(index),
        "shape": list(shape),
        "spacing_mm": float(spacing),
        "lesions": [les.to_dict() for les in lesions],
        "volumes": lesion_summary(label, spacing3),
        "acquisition": contrast_record,
    }
    return SyntheticCase(case_id_for(domain, seed, index), image, label, affine, metadata)


def write_case(case: SyntheticCase, out_dir: str | Path) -> Path:
    """Write a case in BraTS 2023 naming: ``OUT/<ID>/<ID>-{t1n,t1c,t2w,t2f,seg}.nii.gz`` + ``<ID>-synth.json``.

    Images are stored as int16 (as BraTS distributes them), labels as uint8.  Every file
    is written atomically.  Returns the case folder.
    """
    folder = Path(out_dir) / case.case_id
    folder.mkdir(parents=True, exist_ok=True)
    for m_index, modality in enumerate(MODALITIES):
        save_nifti(
            case.image[m_index].astype(np.int16),
            folder / f"{case.case_id}-{modality}.nii.gz",
            affine=case.affine,
        )
    save_nifti(case.label, folder / f"{case.case_id}-seg.nii.gz", affine=case.affine)
    write_text_atomic(
        folder / f"{case.case_id}{SYNTH_RECORD_SUFFIX}", json.dumps(case.metadata, indent=2) + "\n"
    )
    return folder


def generate_cohort(
    out_dir: str | Path,
    n_cases: int,
    domain: str = "adult",
    seed: int = 0,
    shape: tuple[int, int, int] = BRATS_SHAPE,
    spacing: float = 1.0,
    start_index: int = 1,
) -> list[Path]:
    """Generate and write ``n_cases`` cases (indices ``start_index ...``); returns their folders."""
    folders = []
    for index in range(start_index, start_index + n_cases):
        folders.append(write_case(generate_case(seed, index, domain, shape, spacing), out_dir))
    return folders
