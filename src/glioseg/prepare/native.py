"""Back to the scanner's grid: a label map on a prepared case's grid, resampled onto the original t1c.

``glioseg predict --native`` uses this so that a segmentation opens over the original t1c in a
clinical viewer or PACS. The prepared grid maps to t1c's space by the record's
``output_to_t1c_lps`` (identity without an atlas, the inverse MNI152 affine with one); each
voxel of the original t1c takes the label of the prepared voxel nearest to its centre (nearest
neighbour: labels are never blended). The file is written with the original t1c's header (the
``<ID>-native-grid.nii.gz`` that prepare keeps), so its grid is the original's exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from glioseg.data.io import AFFINE_TOLERANCE, load_label, read_image, read_json, save_nifti
from glioseg.errors import InputError
from glioseg.prepare.register import grid_of, resample, to_sitk, transform_of


def prepare_record(folder: str | Path, case_id: str) -> dict | None:
    """The ``<ID>-prepare.json`` record of a case folder, or ``None`` when the case was not prepared."""
    path = Path(folder) / f"{case_id}-prepare.json"
    return read_json(path, "prepare record") if path.is_file() else None


def labels_to_native(labels: np.ndarray, affine: np.ndarray, folder: str | Path, record: dict) -> tuple:
    """Resample ``labels`` (on the prepared grid) onto the original t1c grid.

    Parameters
    ----------
    labels : uint8 (X, Y, Z) on the prepared grid (the grid of ``<ID>-t1c.nii.gz``)
    affine : its voxel -> RAS+ matrix (checked against the record's output grid)
    folder : the prepared case folder (holds ``<ID>-native-grid.nii.gz``)
    record : its prepare record

    Returns
    -------
    (native labels as uint8 (X', Y', Z'), the native grid's nibabel image for writing)
    """
    grid_file = Path(folder) / record["native_t1c"]["file"]
    reference = read_image(grid_file)
    expected = np.asarray(record["output_grid"]["affine_ras"])
    if tuple(labels.shape) != tuple(record["output_grid"]["shape"]) or not np.allclose(
        affine, expected, atol=AFFINE_TOLERANCE
    ):
        raise InputError(grid_file, "the segmentation is not on this prepared case's grid")
    t1c_to_output = np.linalg.inv(np.asarray(record["atlas"]["output_to_t1c_lps"]))
    native = grid_of(reference.affine, reference.shape)
    image = to_sitk(labels.astype(np.float32), affine)
    out = resample(image, native, transform_of(t1c_to_output), nearest=True)
    return np.rint(out).astype(np.uint8), reference


def write_native(seg_path: str | Path, folder: str | Path, case_id: str, out_path: str | Path) -> Path:
    """Write the segmentation ``seg_path`` of the prepared case ``folder`` on its original t1c grid."""
    record = prepare_record(folder, case_id)
    if record is None:
        raise InputError(
            Path(folder) / f"{case_id}-prepare.json",
            "not found: --native needs a case made by glioseg prepare",
        )
    labels, image = load_label(seg_path)
    native, reference = labels_to_native(labels, image.affine, folder, record)
    return save_nifti(native, out_path, reference=reference, dtype=np.uint8)
