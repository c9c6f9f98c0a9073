"""Registration recovers a known rigid motion of a real case; labels go back onto the native grid exactly."""

from __future__ import annotations

import numpy as np
import pytest

from glioseg.prepare.native import labels_to_native
from glioseg.prepare.register import (
    Grid,
    centred_grid,
    grid_of,
    matrix_of,
    physical_box,
    resample,
    rigid_register,
    to_sitk,
    transform_of,
)

CASE = "Brats18_CBICA_ABM_1"


@pytest.mark.realdata
def test_a_known_rigid_motion_of_a_real_case_is_recovered(real_data):
    import SimpleITK as sitk

    from glioseg.data.io import load_label, load_volume

    folder = real_data / "brats2018" / CASE
    t1ce, image = load_volume(folder / f"{CASE}_t1ce.nii.gz")
    seg, _ = load_label(folder / f"{CASE}_seg.nii.gz")
    fixed = to_sitk(t1ce, image.affine)
    truth = sitk.Euler3DTransform()  # fixed points -> moving points
    truth.SetCenter(fixed.TransformContinuousIndexToPhysicalPoint([s / 2 for s in fixed.GetSize()]))
    truth.SetRotation(np.radians(6), np.radians(-4), np.radians(5))
    truth.SetTranslation((5.0, -4.0, 6.0))
    tumour = np.argwhere(seg > 0)[::50]
    points = [fixed.TransformContinuousIndexToPhysicalPoint([float(v) for v in p]) for p in tumour]
    thick = Grid((240, 240, 31), (1.0, 1.0, 5.0), (0.0, -239.0, 0.0))  # a moved, 5 mm-slice acquisition
    for name in ("t2", "flair"):
        data, _ = load_volume(folder / f"{CASE}_{name}.nii.gz")
        moved = resample(to_sitk(data, image.affine), thick, truth.GetInverse())
        estimate, _ = rigid_register(fixed, to_sitk(moved, thick.affine()))
        errors = [
            np.linalg.norm(np.subtract(estimate.TransformPoint(p), truth.TransformPoint(p))) for p in points
        ]
        assert np.mean(errors) <= 1.0, (name, np.mean(errors))


def test_registration_is_the_same_on_every_run_and_thread_count():
    """Seeded sampling makes a run reproducible: SimpleITK reads seed 0 as "from the clock", which
    once made the accuracy test above fail at random, so seed 0 is refused."""
    import SimpleITK as sitk

    shape = (48, 48, 40)
    fixed_data = _blobs(shape).astype(np.float32) * 100 + np.random.default_rng(1).normal(0, 5, shape)
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    fixed = to_sitk(fixed_data.astype(np.float32), affine)
    motion = sitk.Euler3DTransform((48.0, 48.0, 40.0), 0.05, -0.04, 0.03, (2.0, -1.5, 1.0))
    moving = resample(fixed, grid_of(affine, shape), motion, nearest=False)
    threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    runs = []
    try:
        for n in (1, 2, 1):
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
            runs.append(rigid_register(fixed, to_sitk(moving, affine), spacing_mm=2.0)[0].GetParameters())
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    assert runs[0] == runs[2]  # bit-identical on a rerun
    assert np.allclose(runs[0], runs[1], atol=1e-6)  # thread count changes only the rounding
    assert not np.allclose(runs[0], 0)  # it moved: the motion was found, not the identity kept
    with pytest.raises(ValueError, match="seed 0"):
        rigid_register(fixed, to_sitk(moving, affine), seed=0)


def _blobs(shape, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    idx = np.indices(shape).transpose(1, 2, 3, 0)
    labels = np.zeros(shape, np.uint8)
    for label in (2, 1, 3):
        centre = rng.uniform(0.3, 0.7, 3) * shape
        labels[np.linalg.norm((idx - centre) / (np.asarray(shape) / 5), axis=-1) < 1] = label
    return labels


@pytest.mark.parametrize("atlas", [False, True])
def test_labels_go_back_onto_the_native_grid_exactly(tmp_path, atlas):
    import nibabel as nib

    shape = (70, 64, 22)
    affine = np.array(
        [[-1.5, 0, 0, 60.0], [0, 1.5, 0, -50.0], [0, 0, 5.0, -40.0], [0, 0, 0, 1]]
    )  # LAS, thick
    native = _blobs(shape)
    grid_file = tmp_path / "C-native-grid.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros(shape, np.uint8), affine), str(grid_file))
    out_to_t1c = np.eye(4)
    if atlas:  # an affine output space: scaled, rotated and shifted against t1c
        import SimpleITK as sitk

        t = sitk.Euler3DTransform((0, 0, 0), 0.05, -0.03, 0.08, (3.0, -2.0, 4.0))
        out_to_t1c = matrix_of(t) @ np.diag([1.05, 0.97, 1.02, 1])
    grid = centred_grid(np.mean(physical_box(grid_of(affine, shape)), axis=0) + [3.3, -2.2, 1.1])
    prepared = resample(
        to_sitk(native.astype(np.float32), affine), grid, transform_of(out_to_t1c), nearest=True
    )
    record = {
        "native_t1c": {"file": grid_file.name},
        "output_grid": {"shape": list(grid.shape), "affine_ras": grid.affine().tolist()},
        "atlas": {"output_to_t1c_lps": out_to_t1c.tolist()},
    }
    back, reference = labels_to_native(np.rint(prepared).astype(np.uint8), grid.affine(), tmp_path, record)
    assert back.shape == shape and np.array_equal(reference.affine, nib.load(str(grid_file)).affine)
    assert np.array_equal(back, native)
