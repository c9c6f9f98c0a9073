"""The one-call API: a case and a model in, a BraTS label map out (``glioseg.segment``).

It sits above inference and post-processing because a bundled model's recommended pipeline
uses both: the ensemble with its weights, then its tuned post-processing.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np

from glioseg.data.cases import Case, CaseData, discover_cases, load_case
from glioseg.errors import InputError
from glioseg.infer.batch import resolve_device
from glioseg.infer.ensemble import segment_case
from glioseg.infer.models import ModelGroup, resolve_models
from glioseg.infer.settings import InferenceSettings
from glioseg.postprocess.config import PostprocessConfig, make_postprocessor


def segment(
    case: str | Path | Case | CaseData,
    models: str | Path | ModelGroup | Sequence[str | Path | ModelGroup],
    weights: Sequence | None = None,
    settings: InferenceSettings | None = None,
) -> nib.Nifti1Image:
    """Segment one case and return the BraTS label map (1 NETC, 2 SNFH, 3 ET) on the input's grid.

    Parameters
    ----------
    case : a case folder, a :class:`~glioseg.data.cases.Case` or loaded :class:`CaseData`
    models : a bundled model's name, one run folder (or a folder of fold runs), or a list of
        those (a model ensemble); a bundled model brings its own weights and post-processing
    weights : per model, one number or (WT, TC, ET); default equal (or the bundle's)
    settings : :class:`~glioseg.infer.settings.InferenceSettings` (default: a bundled model's
        recommended mode, as ``glioseg predict`` without ``--mode``; else the ``default`` mode)

    Returns
    -------
    nibabel.Nifti1Image (uint8) with the input's affine and header.

    Examples
    --------
    >>> from glioseg import segment                            # doctest: +SKIP
    >>> seg = segment("data/BraTS-SSA-00002-000", "brats-2mm")  # doctest: +SKIP
    >>> seg.shape                                                 # doctest: +SKIP
    (240, 240, 155)
    """
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
    groups = [m for m in models if isinstance(m, ModelGroup)]
    resolved = (
        resolve_models([m for m in models if not isinstance(m, ModelGroup)])
        if len(groups) < len(models)
        else None
    )
    if resolved is not None:
        groups = resolved.groups if not groups else [*groups, *resolved.groups]
        if weights is None and len(models) == 1:
            weights = resolved.weights
    if settings is None:
        recommended = resolved.mode if resolved is not None and len(models) == 1 else "default"
        settings = InferenceSettings.for_mode(recommended)
    prediction = segment_case(data, groups, weights, settings.with_(device=resolve_device(settings.device)))
    labels = prediction.labels
    if resolved is not None and len(models) == 1 and resolved.postprocess is not None:
        labels = make_postprocessor(PostprocessConfig.load(resolved.postprocess))(labels, data)
    header = data.reference.header.copy()
    header.set_data_dtype(np.uint8)
    image = nib.Nifti1Image(labels.astype(np.uint8), data.reference.affine, header=header)
    image.header.set_slope_inter(1.0, 0.0)
    return image
