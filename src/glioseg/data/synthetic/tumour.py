"""Glioma phantoms: irregular lesions with an ET rim around a NETC core inside edema.

A lesion is an ellipsoid whose normalised radius ``d(q) = |R^T (q - c) / r|`` is
perturbed by smoothed noise, which gives irregular, lobulated borders:

* tumour core (TC): ``d + a n_1 < 1``;
* NETC (necrosis): ``d + a n_1 < 1 - rim / r`` inside the core (absent for solid lesions);
* ET: the core minus NETC (a rim), or nothing for non-enhancing lesions, which are all NETC;
* SNFH (edema): the same with radii grown by an edema margin ``m`` and stronger noise,
  ``|R^T (q - c) / (r + m)| + a_e n_2 - 0.35 (p_WM - 0.5) < 1`` - edema spreads further
  in white matter - plus a layer of at least 2.5 mm around the core, minus the core.

Everything is confined to the brain.  All sizes are in mm, so the same lesion comes
out at any voxel spacing.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter

from glioseg.data.labels import ET, NETC, SNFH
from glioseg.data.synthetic.warp import rotation_matrix


@dataclass(frozen=True)
class Lesion:
    """Parameters of one lesion (mm, world coordinates of the output grid)."""

    centre_mm: tuple[float, float, float]
    core_radii_mm: tuple[float, float, float]
    angles_rad: tuple[float, float, float]
    rim_mm: float  # ET rim thickness; 0 -> non-enhancing lesion
    necrotic: bool  # has a NETC centre (False + rim > 0 -> solid enhancing lesion)
    edema_margin_mm: float  # how far edema reaches beyond the core
    irregularity: float  # amplitude of the border noise (fraction of the radius)
    kind: str = "main"  # main | satellite

    @property
    def mean_radius(self) -> float:
        return float(np.mean(self.core_radii_mm))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: (np.round(v, 3).tolist() if isinstance(v, tuple) else v) for k, v in d.items()}


def _unit_noise(shape: tuple[int, ...], sigma_vox: float, rng: np.random.Generator) -> np.ndarray:
    noise = gaussian_filter(
        rng.standard_normal(shape).astype(np.float32), sigma=max(sigma_vox, 0.5), mode="reflect"
    )
    return noise / max(float(noise.std()), 1e-6)


def render_lesions(
    lesions: list[Lesion],
    output_affine: np.ndarray,
    box_start: tuple[int, int, int],
    brain: np.ndarray,
    white_matter: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """Paint lesions into a label array on the voxels of a box of the output grid.

    Parameters
    ----------
    lesions : list of Lesion
    output_affine : (4, 4) array
        Voxel -> world mm of the output grid.
    box_start : tuple of int
        Output voxel index of ``brain[0, 0, 0]``.
    brain, white_matter : ndarray, float, shape (X, Y, Z)
        Warped brain mask and white-matter probability on the box.
    rng : numpy Generator

    Returns
    -------
    ndarray of uint8, shape (X, Y, Z): canonical labels (0, 1 NETC, 2 SNFH, 3 ET).
    """
    shape = brain.shape
    labels = np.zeros(shape, dtype=np.uint8)
    spacing = np.abs(np.diag(output_affine[:3, :3]))
    inv = np.linalg.inv(output_affine)
    rank = np.array([0, 2, 1, 3], dtype=np.uint8)  # label -> priority (ET > NETC > SNFH)
    for lesion in lesions:
        centre = np.asarray(lesion.centre_mm)
        radii = np.asarray(lesion.core_radii_mm)
        reach_mm = (radii.max() + lesion.edema_margin_mm) * 1.6 + 4.0
        c_vox = inv[:3, :3] @ centre + inv[:3, 3] - np.asarray(box_start)
        half = np.ceil(reach_mm / spacing).astype(int)
        lo = np.maximum(np.floor(c_vox).astype(int) - half, 0)
        hi = np.minimum(np.floor(c_vox).astype(int) + half + 1, shape)
        if np.any(hi <= lo):
            continue
        sub = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        sub_shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
        grids = np.meshgrid(
            *[np.arange(a, b, dtype=np.float32) for a, b in zip(lo, hi, strict=True)], indexing="ij"
        )
        idx = np.stack([g + s for g, s in zip(grids, box_start, strict=True)], axis=-1)
        q = idx @ output_affine[:3, :3].T.astype(np.float32) + output_affine[:3, 3].astype(np.float32)
        rot = rotation_matrix(np.asarray(lesion.angles_rad)).astype(np.float32)
        local = (q - centre.astype(np.float32)) @ rot  # coordinates in the lesion's own axes
        d = np.sqrt(((local / radii.astype(np.float32)) ** 2).sum(-1))
        sigma_vox = 0.35 * lesion.mean_radius / float(spacing.mean())
        d_core = d + lesion.irregularity * _unit_noise(sub_shape, sigma_vox, rng)
        in_brain = brain[sub] > 0.5
        core = (d_core < 1.0) & in_brain
        wm = white_matter[sub]
        d_outer = np.sqrt(((local / (radii + lesion.edema_margin_mm).astype(np.float32)) ** 2).sum(-1))
        d_edema = (
            d_outer
            + 1.6 * lesion.irregularity * _unit_noise(sub_shape, 1.3 * sigma_vox, rng)
            - 0.35 * (wm - 0.5)
        )
        # a thin oedematous layer surrounds every core, however small the drawn margin
        shell = d_core < 1.0 + min(2.5, lesion.edema_margin_mm) / lesion.mean_radius
        edema = ((d_edema < 1.0) | shell) & in_brain & ~core
        local_labels = np.zeros(sub_shape, dtype=np.uint8)
        local_labels[edema] = SNFH
        if lesion.rim_mm <= 0:
            local_labels[core] = NETC
        elif lesion.necrotic:
            inner = 1.0 - lesion.rim_mm / lesion.mean_radius
            necrosis = core & (d_core < inner)
            local_labels[core] = ET
            local_labels[necrosis] = NETC
        else:
            local_labels[core] = ET
        current = labels[sub]
        take = rank[local_labels] > rank[current]
        current[take] = local_labels[take]
    return labels


def lesion_summary(labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> dict:
    """Region volumes (mL) of a label map, for metadata."""
    voxel_ml = float(np.prod(spacing_mm)) / 1000.0
    wt = int(np.count_nonzero(labels))
    tc = int(np.count_nonzero((labels == NETC) | (labels == ET)))
    et = int(np.count_nonzero(labels == ET))
    return {
        "WT_ml": round(wt * voxel_ml, 2),
        "TC_ml": round(tc * voxel_ml, 2),
        "ET_ml": round(et * voxel_ml, 2),
    }
