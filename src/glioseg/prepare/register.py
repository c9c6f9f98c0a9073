"""Grids, rigid mutual-information co-registration (SimpleITK) and resampling.

Conventions
-----------
- Arrays are ``(X, Y, Z)`` in the NIfTI file's voxel order; NIfTI affines map voxels to RAS+ mm
  (nibabel). SimpleITK works in LPS+ mm; :func:`to_sitk` and :func:`grid_affine` convert, so every
  file is read and written with nibabel (sform before qform, as everywhere in glioseg).
- A transform "from A to B" maps **points** of space A to points of space B (ITK's convention:
  resampling an image of B onto a grid of A uses the A-to-B transform).
- The canonical orientation of prepared cases is BraTS's: voxel axes running towards patient
  left, posterior and superior (nibabel axis codes ``L, P, S``; ITK direction = identity), 1 mm.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_LPS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Grid:
    """A voxel grid in LPS+ mm: ``shape`` (voxels), ``spacing`` (mm), ``origin`` (centre of voxel 0),
    ``direction`` (3x3, columns are the voxel axes)."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    def affine(self) -> np.ndarray:
        """Voxel -> RAS+ mm (4x4), for writing with nibabel."""
        d = np.asarray(self.direction).reshape(3, 3) * np.asarray(self.spacing)
        out = np.eye(4)
        out[:3, :3] = _LPS @ d
        out[:3, 3] = _LPS @ np.asarray(self.origin)
        return out

    def reference(self):
        import SimpleITK as sitk

        image = sitk.Image([int(s) for s in self.shape], sitk.sitkUInt8)
        image.SetSpacing([float(s) for s in self.spacing])
        image.SetOrigin([float(o) for o in self.origin])
        image.SetDirection([float(d) for d in self.direction])
        return image

    def to_dict(self) -> dict:
        return {
            "shape": list(self.shape),
            "spacing_mm": list(self.spacing),
            "origin_lps_mm": list(self.origin),
            "direction_lps": list(self.direction),
            "affine_ras": self.affine().tolist(),
        }


def grid_of(affine: np.ndarray, shape: tuple[int, ...]) -> Grid:
    """The :class:`Grid` of a NIfTI image (RAS+ affine, shape)."""
    m = _LPS @ np.asarray(affine, dtype=np.float64)[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    direction = m / spacing
    origin = _LPS @ np.asarray(affine, dtype=np.float64)[:3, 3]
    return Grid(
        tuple(int(s) for s in shape[:3]),
        tuple(float(s) for s in spacing),
        tuple(float(o) for o in origin),
        tuple(float(d) for d in direction.ravel()),
    )


def to_sitk(data: np.ndarray, affine: np.ndarray):
    """A SimpleITK image (float32) of an ``(X, Y, Z)`` array on the grid of a RAS+ affine."""
    import SimpleITK as sitk

    image = sitk.GetImageFromArray(
        np.ascontiguousarray(np.asarray(data, dtype=np.float32).transpose(2, 1, 0))
    )
    g = grid_of(affine, data.shape)
    image.SetSpacing(g.spacing)
    image.SetOrigin(g.origin)
    image.SetDirection(g.direction)
    return image


def to_array(image) -> np.ndarray:
    """``(X, Y, Z)`` array of a SimpleITK image."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(image).transpose(2, 1, 0)


def physical_box(grid: Grid) -> tuple[np.ndarray, np.ndarray]:
    """LPS bounding box (min corner, max corner, mm) of the voxel centres of ``grid``."""
    corners = np.array(np.meshgrid(*[[0, s - 1] for s in grid.shape], indexing="ij")).reshape(3, -1)
    d = np.asarray(grid.direction).reshape(3, 3) * np.asarray(grid.spacing)
    points = d @ corners + np.asarray(grid.origin)[:, None]
    return points.min(axis=1), points.max(axis=1)


def canonical_grid(lo: np.ndarray, hi: np.ndarray, spacing: float = 1.0) -> Grid:
    """An LPS-identity grid (BraTS orientation) of ``spacing`` mm covering the box ``lo``..``hi``."""
    shape = tuple(int(np.floor((h - lo_) / spacing)) + 1 for lo_, h in zip(lo, hi, strict=True))
    return Grid(shape, (spacing,) * 3, tuple(float(x) for x in lo))


def centred_grid(
    centre: np.ndarray, shape: tuple[int, int, int] = (240, 240, 155), spacing: float = 1.0
) -> Grid:
    """An LPS-identity grid of ``shape`` voxels centred on the LPS point ``centre`` (whole-mm origin)."""
    origin = np.round(np.asarray(centre) - (np.asarray(shape) - 1) * spacing / 2)
    return Grid(tuple(shape), (spacing,) * 3, tuple(float(o) for o in origin))


def matrix_of(transform) -> np.ndarray:
    """4x4 LPS matrix of a SimpleITK matrix-offset transform (rigid, affine, identity)."""
    import SimpleITK as sitk

    t = transform
    if isinstance(t, sitk.CompositeTransform) and t.GetNumberOfTransforms() == 1:
        t = t.GetNthTransform(0)
    if t.GetName() == "IdentityTransform":
        return np.eye(4)
    if type(t) is sitk.Transform:
        t = t.Downcast()
    matrix = np.asarray(t.GetMatrix()).reshape(3, 3)
    centre = np.asarray(t.GetCenter())
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = np.asarray(t.GetTranslation()) + centre - matrix @ centre
    return out


def transform_of(matrix: np.ndarray):
    """SimpleITK affine transform of a 4x4 LPS matrix (inverse of :func:`matrix_of`)."""
    import SimpleITK as sitk

    m = np.asarray(matrix, dtype=np.float64)
    t = sitk.AffineTransform(3)
    t.SetMatrix(m[:3, :3].ravel().tolist())
    t.SetTranslation(m[:3, 3].tolist())
    return t


def describe(matrix: np.ndarray) -> dict:
    """Rotation (degrees, about the axes) and translation (mm) of a rigid 4x4 LPS matrix."""
    r = np.asarray(matrix)[:3, :3]
    angle = float(np.degrees(np.arccos(np.clip((np.trace(r) - 1) / 2, -1, 1))))
    return {"rotation_deg": round(angle, 3), "translation_mm": [round(float(v), 3) for v in matrix[:3, 3]]}


def rigid_register(fixed, moving, seed: int = 1, spacing_mm: float = 2.0, min_step: float = 1e-3):
    """Rigid (6 parameters) registration of ``moving`` to ``fixed`` by Mattes mutual information.

    Both images are SimpleITK images in their own physical space (scanner coordinates of one
    session, so the identity is the start). The fixed image is resampled to an isotropic
    ``spacing_mm`` grid first (thick slices otherwise make the pyramid uneven); the moving one is
    interpolated linearly by the metric. Two levels (4 and 2 mm), 15% random samples with a fixed
    positive ``seed`` (SimpleITK reads 0 as "seed from the clock"), so a run is reproducible and
    independent of the number of threads. The optimiser runs down to a ``min_step`` of 0.001
    rather than the atlas step's 0.01, which recovers a known motion of a thick-slice contrast
    more closely (measured in docs/prepare.md, "Registration accuracy").

    Returns
    -------
    (transform, info)
        A ``sitk.Euler3DTransform`` from fixed points to moving points, and the optimiser's final
        metric value, iterations and stop condition.
    """
    import SimpleITK as sitk

    lo, hi = physical_box(grid_of_sitk(fixed))
    iso = canonical_grid(lo, hi, spacing_mm)
    fixed_iso = sitk.Resample(
        fixed, iso.reference(), sitk.Transform(), sitk.sitkLinear, 0.0, sitk.sitkFloat32
    )
    initial = sitk.Euler3DTransform()
    initial.SetCenter(((lo + hi) / 2).tolist())
    method = mutual_information_method(
        seed, shrink_factors=(2, 1), gradient_tolerance=1e-6, min_step=min_step
    )
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed_iso, sitk.Cast(moving, sitk.sitkFloat32))
    rigid = sitk.Euler3DTransform(
        result.GetNthTransform(0) if isinstance(result, sitk.CompositeTransform) else result
    )
    return rigid, optimiser_record(method)


def mutual_information_method(
    seed: int, shrink_factors: tuple[int, int], gradient_tolerance: float = 1e-4, min_step: float = 0.01
):
    """The registration set-up shared by the rigid and the atlas steps: Mattes mutual information
    (32 bins, 15 % random samples with ``seed``, which must be positive), linear interpolation,
    regular-step gradient descent (step 2.0 -> ``min_step``, 150 iterations, relaxation 0.6) with
    physical-shift scales, two levels shrunk by ``shrink_factors`` and smoothed by 2 and 1 mm.
    The caller sets the initial transform."""
    import SimpleITK as sitk

    if seed == sitk.sitkWallClock:  # SimpleITK reads seed 0 as "seed from the clock": never reproducible
        raise ValueError("registration seed 0 means a wall-clock seed in SimpleITK; use a positive seed")
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.15, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0,
        minStep=min_step,
        numberOfIterations=150,
        relaxationFactor=0.6,
        gradientMagnitudeTolerance=gradient_tolerance,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(list(shrink_factors))
    method.SetSmoothingSigmasPerLevel([2.0, 1.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def optimiser_record(method) -> dict:
    """What a finished :func:`mutual_information_method` reports, for the prepare record."""
    return {
        "metric": "Mattes mutual information (32 bins, 15% random samples)",
        "final_metric": float(method.GetMetricValue()),
        "iterations": int(method.GetOptimizerIteration()),
        "stop": method.GetOptimizerStopConditionDescription(),
    }


def grid_of_sitk(image) -> Grid:
    """The :class:`Grid` of a SimpleITK image."""
    return Grid(
        tuple(int(s) for s in image.GetSize()),
        tuple(float(s) for s in image.GetSpacing()),
        tuple(float(o) for o in image.GetOrigin()),
        tuple(float(d) for d in image.GetDirection()),
    )


def resample(image, grid: Grid, transform=None, nearest: bool = False) -> np.ndarray:
    """``image`` resampled onto ``grid`` through ``transform`` (grid points -> image points), as ``(X, Y, Z)``.

    Linear interpolation for intensities, nearest neighbour for labels (``nearest=True``, values
    kept exactly); outside the image the value is 0.
    """
    import SimpleITK as sitk

    interpolator = sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear
    pixel = image.GetPixelID() if nearest else sitk.sitkFloat32
    t = transform if transform is not None else sitk.Transform()
    return to_array(sitk.Resample(image, grid.reference(), t, interpolator, 0.0, pixel))


def compose(*transforms):
    """One transform applying ``transforms[0]`` first, then ``transforms[1]`` ... (points)."""
    import SimpleITK as sitk

    composite = sitk.CompositeTransform(3)
    for t in reversed(transforms):  # ITK applies the last added transform first
        composite.AddTransform(t)
    return composite
