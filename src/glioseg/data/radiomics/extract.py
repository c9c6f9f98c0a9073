"""Radiomic features of whole cases and cohorts: the table ``glioseg features`` writes.

Per case, on the largest 26-connected component of the whole tumour (WT = labels
{1, 2, 3}) of the ground truth or of a given label map (e.g. a prediction):

- ``shape_*``: volumes and shape (:mod:`.shape`), in physical units;
- ``firstorder_<modality>_*`` (:mod:`.firstorder`) and ``glcm_<modality>_*``
  (:mod:`.texture`) for t1n, t1c, t2w, t2f, on intensities z-scored inside the brain;
- ``quality_<modality>_snr`` / ``_sharpness`` and the cohort-level summaries
  ``quality_snr`` (median over modalities) and ``quality_sharpness`` (minimum), from the
  raw images (:mod:`.quality`); optional.

Intensity normalisation: each modality is z-scored with the mean and standard deviation
of the brain, the voxels where any modality is non-zero (BraTS images are
skull-stripped), so that scanner scaling does not dominate the intensity features.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from glioseg.data.arrays import bounding_box
from glioseg.data.cases import Case, discover_cases, load_case
from glioseg.data.io import Geometry, load_label, strip_nifti_suffix
from glioseg.data.modalities import MODALITIES
from glioseg.data.radiomics.firstorder import DEFAULT_BIN_WIDTH, FIRSTORDER_FEATURES, firstorder_features
from glioseg.data.radiomics.quality import QUALITY_FEATURES, quality_features
from glioseg.data.radiomics.shape import SHAPE_FEATURES, largest_component, shape_features
from glioseg.data.radiomics.texture import DEFAULT_LEVELS, GLCM_FEATURES, glcm_features
from glioseg.errors import GliosegError, InputError

#: Non-feature columns of a feature table, in order.
ID_COLUMNS: tuple[str, ...] = ("case_id", "label_source")

_LABEL_NAME_RE = r"(?:[-_](?:seg|pred|prediction|label|labels))?"


def feature_names(include_quality: bool = True) -> list[str]:
    """Column names of the features :func:`case_features` returns, in order."""
    names = [f"shape_{n}" for n in SHAPE_FEATURES]
    names += [f"firstorder_{m}_{n}" for m in MODALITIES for n in FIRSTORDER_FEATURES]
    names += [f"glcm_{m}_{n}" for m in MODALITIES for n in GLCM_FEATURES]
    if include_quality:
        names += [f"quality_{m}_{n}" for m in MODALITIES for n in QUALITY_FEATURES]
        names += [f"quality_{n}" for n in QUALITY_FEATURES]
    return names


def brain_mask(image: np.ndarray) -> np.ndarray:
    """Voxels where any channel of ``image`` (C, X, Y, Z) is non-zero, shape (X, Y, Z)."""
    return np.any(np.asarray(image) != 0, axis=0)


def _brain_statistics(image: np.ndarray, brain: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and standard deviation (1 where 0) of the brain voxels of ``image`` (C, X, Y, Z)."""
    mean = np.zeros(image.shape[0], dtype=np.float64)
    std = np.ones(image.shape[0], dtype=np.float64)
    for c in range(image.shape[0]):
        values = image[c][brain].astype(np.float64)
        if values.size:
            mean[c] = values.mean()
            std[c] = values.std() if values.std() > 0 else 1.0
    return mean, std


def zscore_in_brain(image: np.ndarray, brain: np.ndarray | None = None) -> np.ndarray:
    """Z-score each channel of ``image`` (C, X, Y, Z) with the mean and std of its brain voxels.

    The brain is ``brain`` or, by default, :func:`brain_mask`.  Returns float32 of the same
    shape (voxels outside the brain are transformed too); a channel that is constant in
    the brain is only centred.

    Examples
    --------
    >>> img = np.zeros((1, 2, 2, 1)); img[0, :, :, 0] = [[0, 1], [3, 0]]
    >>> zscore_in_brain(img)[0, :, :, 0].tolist()
    [[-2.0, -1.0], [1.0, -2.0]]
    """
    img = np.asarray(image)
    mask = brain_mask(img) if brain is None else np.asarray(brain, dtype=bool)
    mean, std = _brain_statistics(img, mask)
    return ((img.astype(np.float32) - mean[:, None, None, None]) / std[:, None, None, None]).astype(
        np.float32
    )


def case_features(
    image: np.ndarray,
    labels: np.ndarray,
    spacing: tuple[float, float, float],
    include_quality: bool = True,
    bin_width: float = DEFAULT_BIN_WIDTH,
    n_levels: int = DEFAULT_LEVELS,
) -> dict[str, float]:
    """All features of one case.

    Parameters
    ----------
    image : ndarray of float, shape (4, X, Y, Z)
        Raw intensities in the order t1n, t1c, t2w, t2f (skull-stripped, 0 outside the brain).
    labels : ndarray of uint8, shape (X, Y, Z)
        Canonical labels (ground truth or prediction).
    spacing : tuple of 3 float
        Voxel size in mm.
    include_quality : bool
        Add the ``quality_*`` columns.
    bin_width : float
        First-order histogram bin width, in brain standard deviations.
    n_levels : int
        Grey levels of the GLCM quantisation.

    Returns
    -------
    dict
        Keys :func:`feature_names`, values float (NaN where undefined, e.g. texture of an
        empty tumour).
    """
    img = np.asarray(image)
    lab = np.asarray(labels)
    if img.ndim != 4 or img.shape[0] != len(MODALITIES):
        raise ValueError(f"image must be (4, X, Y, Z), got shape {img.shape}")
    if lab.shape != img.shape[1:]:
        raise ValueError(f"labels shape {lab.shape} does not match image {img.shape[1:]}")
    out: dict[str, float] = {f"shape_{k}": v for k, v in shape_features(lab, spacing).items()}
    wt = largest_component(lab > 0, connectivity=26)
    brain = brain_mask(img)
    mean, std = _brain_statistics(img, brain)
    # z-scored intensities are only needed inside the tumour's bounding box
    box = bounding_box(wt)
    wt_box = wt[box] if box is not None else wt[:0, :0, :0]
    for c, modality in enumerate(MODALITIES):
        z = (img[c][box].astype(np.float64) - mean[c]) / std[c] if box is not None else np.zeros(wt_box.shape)
        for k, v in firstorder_features(z[wt_box], bin_width).items():
            out[f"firstorder_{modality}_{k}"] = v
        for k, v in glcm_features(z, wt_box, n_levels).items():
            out[f"glcm_{modality}_{k}"] = v
    if include_quality:
        per_modality = [quality_features(img[c], brain) for c in range(len(MODALITIES))]
        for modality, q in zip(MODALITIES, per_modality, strict=True):
            for k, v in q.items():
                out[f"quality_{modality}_{k}"] = v
        snr = [q["snr"] for q in per_modality if not math.isnan(q["snr"])]
        sharp = [q["sharpness"] for q in per_modality if not math.isnan(q["sharpness"])]
        out["quality_snr"] = float(np.median(snr)) if snr else math.nan
        out["quality_sharpness"] = float(min(sharp)) if sharp else math.nan
    return {name: float(out[name]) for name in feature_names(include_quality)}


def find_label_file(labels_dir: str | Path, case_id: str) -> Path | None:
    """The label map of ``case_id`` in ``labels_dir``, or ``None``.

    Accepted names (``.nii.gz`` or ``.nii``), directly in the folder or in a ``<ID>/``
    sub-folder: ``<ID>``, ``<ID>-seg``, ``<ID>-pred``, ``<ID>_pred``, ``<ID>-prediction``,
    ``<ID>-label`` (``-`` or ``_``).  Several matches raise :class:`InputError`.
    """
    root = Path(labels_dir)
    pattern = re.compile(rf"^{re.escape(case_id)}{_LABEL_NAME_RE}$")
    found = []
    for folder in (root, root / case_id):
        if not folder.is_dir():
            continue
        for path in sorted(folder.iterdir()):
            stem = strip_nifti_suffix(path.name)
            if stem is not None and path.is_file() and pattern.match(stem):
                found.append(path)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise InputError(root, f"case {case_id}: several label maps match ({names})")
    return found[0] if found else None


@dataclass
class FeatureRow:
    """Features of one case and where its tumour mask came from."""

    case_id: str
    label_source: str
    features: dict[str, float]


@dataclass
class CohortFeatures:
    """Feature rows of the good cases and the errors of the others."""

    rows: list[FeatureRow] = field(default_factory=list)
    errors: list[GliosegError] = field(default_factory=list)

    def to_frame(self):
        """A pandas DataFrame with columns :data:`ID_COLUMNS` + features, sorted by case ID."""
        import pandas as pd

        records = [{"case_id": r.case_id, "label_source": r.label_source, **r.features} for r in self.rows]
        frame = pd.DataFrame.from_records(records)
        if frame.empty:
            return frame
        return frame.sort_values("case_id", kind="stable").reset_index(drop=True)


def _case_labels(case: Case, truth: np.ndarray | None, labels_dir: Path | None, source: str, reference):
    """Pick the tumour mask of a case: ``(labels, origin)`` following ``source`` (see :func:`cohort_features`)."""
    if source in ("auto", "truth") and truth is not None:
        return truth, "truth"
    if source == "truth":
        raise InputError(case.folder, f"case {case.case_id} has no ground-truth segmentation")
    if labels_dir is None:
        raise InputError(
            case.folder, f"case {case.case_id} has no segmentation; give a label folder (--labels)"
        )
    path = find_label_file(labels_dir, case.case_id)
    if path is None:
        raise InputError(labels_dir, f"no label map for case {case.case_id}")
    labels, image = load_label(path)
    problem = Geometry.of(reference).mismatch(Geometry.of(image), "the images")
    # Header affines of third-party predictions sometimes differ on the same voxel grid; the
    # voxels are what matters for features, so only shape and spacing must agree.
    if problem and not problem.startswith("affine"):
        raise InputError(path, problem)
    return labels, "labels"


def iter_case_features(
    cases: list[Case],
    labels_dir: str | Path | None = None,
    source: str = "auto",
    **options,
) -> Iterator[tuple[Case, FeatureRow | None, GliosegError | None]]:
    """Yield ``(case, row, None)`` or ``(case, None, error)`` for each case; one bad case never stops the others.

    ``options`` go to :func:`case_features`.
    """
    if source not in ("auto", "truth", "labels"):
        raise ValueError(f"label source must be auto, truth or labels, got {source!r}")
    labels_path = Path(labels_dir) if labels_dir is not None else None
    if labels_path is not None and not labels_path.is_dir():
        raise InputError(labels_path, "label folder not found")
    for case in cases:
        try:
            data = load_case(case, with_label=source != "labels")
            labels, origin = _case_labels(case, data.label, labels_path, source, data.reference)
            features = case_features(data.image, labels, data.spacing, **options)
            yield case, FeatureRow(case.case_id, origin, features), None
        except GliosegError as exc:
            yield case, None, exc


def cohort_features(
    data: str | Path,
    labels_dir: str | Path | None = None,
    source: str = "auto",
    **options,
) -> CohortFeatures:
    """Features of every case under ``data`` (any layout :func:`discover_cases` knows).

    Parameters
    ----------
    data : path
        A case folder, a folder of cases or an nnU-Net raw dataset.
    labels_dir : path, optional
        Folder of label maps (e.g. predictions) named after the case IDs, see
        :func:`find_label_file`.
    source : {"auto", "truth", "labels"}
        ``auto``: the ground truth when the case has one, else the map in ``labels_dir``;
        ``truth``: ground truth only; ``labels``: always the map in ``labels_dir``.
    **options
        Passed to :func:`case_features`.

    Returns
    -------
    CohortFeatures
        Rows of the cases that worked and the errors (discovery errors included) of the others.
    """
    found = discover_cases(data)
    result = CohortFeatures(errors=list(found.errors))
    for _, row, error in iter_case_features(found.cases, labels_dir, source, **options):
        if error is not None:
            result.errors.append(error)
        else:
            result.rows.append(row)
    return result
