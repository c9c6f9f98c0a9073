"""Spatial transforms of the generator: head pose, elastic deformation and tumour mass effect.

Coordinates: ``q`` is world position in mm (RAS+) of an output voxel; an output
voxel index ``i`` maps to ``q = A[:3, :3] @ i + A[:3, 3]`` with ``A`` the output affine.
Each output voxel samples the atlas at ``pose(q + u_elastic(q) + u_mass(q))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from glioseg.data.synthetic.atlas import Atlas


def brats_like_affine(shape: tuple[int, int, int], spacing: float) -> np.ndarray:
    """Output affine with BraTS/SRI24-like axis directions (x and y flipped), world origin at the grid centre."""
    lin = np.diag([-spacing, -spacing, spacing])
    centre = (np.asarray(shape, dtype=np.float64) - 1) / 2
    affine = np.eye(4)
    affine[:3, :3] = lin
    affine[:3, 3] = -lin @ centre
    return affine


def rotation_matrix(angles_rad: np.ndarray) -> np.ndarray:
    """Rotation about x, then y, then z (radians)."""
    ax, ay, az = angles_rad
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


@dataclass(frozen=True)
class HeadPose:
    """Similarity-plus-scaling transform from output world mm to atlas world mm."""

    rotation: np.ndarray  # (3, 3)
    scale: np.ndarray  # (3,)
    shift_mm: np.ndarray  # (3,)

    @classmethod
    def random(
        cls,
        rng: np.random.Generator,
        max_angle_deg: float,
        scale_range: tuple[float, float],
        max_shift_mm: float,
    ) -> HeadPose:
        angles = np.deg2rad(rng.uniform(-max_angle_deg, max_angle_deg, size=3))
        return cls(
            rotation=rotation_matrix(angles),
            scale=rng.uniform(*scale_range, size=3),
            shift_mm=rng.uniform(-max_shift_mm, max_shift_mm, size=3),
        )


@dataclass(frozen=True)
class MassEffect:
    """Radial push of tissue away from ``centre_mm``: ``u(q) = -strength (q - c) exp(-|q - c|^2 / 2 sigma^2)``.

    ``strength < 1`` keeps the map invertible.
    """

    centre_mm: np.ndarray
    strength: float
    sigma_mm: float


class ElasticField:
    """Smooth random displacement (mm) defined on a coarse control grid over the output field of view."""

    def __init__(
        self,
        rng: np.random.Generator,
        fov_mm: np.ndarray,
        amplitude_mm: float,
        control_spacing_mm: float = 30.0,
    ):
        from scipy.ndimage import gaussian_filter

        n = np.maximum(np.ceil(fov_mm / control_spacing_mm).astype(int) + 1, 2)
        raw = rng.standard_normal((3, *n)).astype(np.float32)
        smooth = np.stack([gaussian_filter(c, sigma=0.7, mode="nearest") for c in raw])
        smooth *= amplitude_mm / max(float(smooth.std()), 1e-6)
        self.control = torch.from_numpy(smooth)[None]  # (1, 3, nx, ny, nz)
        self.fov_mm = fov_mm

    def __call__(self, q_centred: torch.Tensor) -> torch.Tensor:
        """Displacement at points ``q_centred`` (N, 3), world mm relative to the grid centre -> (N, 3)."""
        half = torch.as_tensor(self.fov_mm / 2, dtype=torch.float32)
        norm = (q_centred / half).clamp(-1, 1)
        # grid_sample's last axis is (W, H, D) = (z, y, x) for a (N, C, D=x, H=y, W=z) input
        grid = norm.flip(-1).view(1, -1, 1, 1, 3)
        out = F.grid_sample(self.control, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return out.view(3, -1).T


def sample_atlas(
    atlas: Atlas,
    output_affine: np.ndarray,
    index_box: tuple[slice, slice, slice],
    pose: HeadPose,
    elastic: ElasticField | None,
    mass_effects: list[MassEffect] = (),
    step: int = 1,
) -> np.ndarray:
    """Warp the atlas onto the output voxels inside ``index_box``.

    The deformation is smooth, so with ``step > 1`` it is evaluated every ``step``
    voxels and interpolated trilinearly in between (exact for the linear pose part);
    the atlas itself is always sampled at every voxel.

    Returns
    -------
    ndarray, float32, shape (5, *box shape)
        Atlas channels (see :data:`glioseg.data.synthetic.atlas.CHANNELS`) at each voxel.
    """
    box_shape = tuple(s.stop - s.start for s in index_box)
    n_coarse = tuple(int(np.ceil((n - 1) / step)) + 1 for n in box_shape)
    axes = [
        s.start + step * torch.arange(n, dtype=torch.float32)
        for s, n in zip(index_box, n_coarse, strict=True)
    ]
    ii, jj, kk = torch.meshgrid(*axes, indexing="ij")
    idx = torch.stack([ii.reshape(-1), jj.reshape(-1), kk.reshape(-1)], dim=1)  # (N, 3)
    lin = torch.as_tensor(output_affine[:3, :3], dtype=torch.float32)
    off = torch.as_tensor(output_affine[:3, 3], dtype=torch.float32)
    q = idx @ lin.T + off  # world mm (the output grid's centre is the world origin)
    disp = torch.zeros_like(q)
    if elastic is not None:
        disp += elastic(q)
    for me in mass_effects:
        d = q - torch.as_tensor(me.centre_mm, dtype=torch.float32)
        w = torch.exp(-(d * d).sum(1, keepdim=True) / (2 * me.sigma_mm**2))
        disp -= me.strength * w * d
    q = q + disp
    # output world -> atlas world -> atlas voxel -> grid_sample's normalised coordinates
    atlas_lin_inv = np.linalg.inv(atlas.affine[:3, :3])
    pose_lin = pose.rotation @ np.diag(pose.scale)
    m = atlas_lin_inv @ pose_lin
    b = atlas_lin_inv @ (pose_lin @ pose.shift_mm + atlas.brain_centre - atlas.affine[:3, 3])
    sizes = np.asarray(atlas.channels.shape[1:], dtype=np.float64)
    norm_scale = 2.0 / (sizes - 1)
    m = norm_scale[:, None] * m
    b = norm_scale * b - 1.0
    grid = q @ torch.as_tensor(m.T, dtype=torch.float32) + torch.as_tensor(b, dtype=torch.float32)
    # grid_sample wants (x, y, z) of a (N, C, D, H, W) input as (W, H, D): reverse the last axis
    grid = grid.flip(-1).reshape(*n_coarse, 3)
    if step > 1:
        full = tuple((n - 1) * step + 1 for n in n_coarse)
        grid = F.interpolate(grid.permute(3, 0, 1, 2)[None], size=full, mode="trilinear", align_corners=True)[
            0
        ]
        grid = grid[:, : box_shape[0], : box_shape[1], : box_shape[2]].permute(1, 2, 3, 0)
    src = torch.from_numpy(atlas.channels)[None]
    out = F.grid_sample(
        src, grid.contiguous()[None], mode="bilinear", padding_mode="zeros", align_corners=True
    )
    return out[0].numpy()
