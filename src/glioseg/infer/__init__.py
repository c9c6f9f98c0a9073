"""Inference: sliding windows, mirroring TTA, fold and model ensembles, BraTS label maps.

The one-call API is :func:`segment`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.cases import Case, CaseData, discover_cases, load_case
from glioseg.errors import InputError
from glioseg.infer.ensemble import Prediction, segment_case
from glioseg.infer.models import ModelGroup, find_members


def segment(
    case: str | Path | Case | CaseData,
    models: str | Path | ModelGroup | Sequence[str | Path | ModelGroup],
    weights: Sequence | None = None,
    tta: str = "flip",
    overlap: float = 0.5,
    device: str = "auto",
    thresholds: tuple[float, float, float] = (0.5, 0.5, 0.5),
) -> nib.Nifti1Image:
    """Segment one case and return the BraTS label map (1 NETC, 2 SNFH, 3 ET) on the input's grid.

    Parameters
    ----------
    case : a case folder, a :class:`~glioseg.data.cases.Case` or loaded :class:`CaseData`
    models : one run folder (or a folder of fold runs), or a list of them (a model ensemble)
    weights : per model, one number or (WT, TC, ET); default equal
    tta : ``none`` | ``flip`` (left-right) | ``full`` (8 mirrorings)
    overlap : sliding-window overlap in [0, 1)
    device : ``auto``, ``cpu`` or ``cuda``

    Returns
    -------
    nibabel.Nifti1Image (uint8) with the input's affine and header.

    Examples
    --------
    >>> from glioseg.infer import segment                       # doctest: +SKIP
    >>> seg = segment("data/BraTS-SSA-00002-000", "runs/nnunet")  # doctest: +SKIP
    >>> seg.shape                                                 # doctest: +SKIP
    (240, 240, 155)
    """
    from glioseg.infer.batch import resolve_device
    from glioseg.runtime import request_huge_pages

    request_huge_pages()  # effective if torch has not yet made a large allocation in this process
    if isinstance(case, str | Path):
        found = discover_cases(case)
        if len(found.cases) != 1:
            raise (
                found.errors[0]
                if found.errors
                else InputError(case, f"expected one case, found {len(found.cases)}")
            )
        case = found.cases[0]
    data = load_case(case, with_label=False) if isinstance(case, Case) else case
    if isinstance(models, str | Path | ModelGroup):
        models = [models]
    groups = [m if isinstance(m, ModelGroup) else find_members(m) for m in models]
    prediction = segment_case(data, groups, weights, tta, overlap, resolve_device(device), thresholds)
    header = data.reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(prediction.labels.astype(np.uint8), data.reference.affine, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    return image


__all__ = ["ModelGroup", "Prediction", "find_members", "segment", "segment_case"]
