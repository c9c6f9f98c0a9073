"""BraTS lesion-wise evaluation (``brats2024-ssa`` and ``brats2023`` definitions), exact and fast."""

from glioseg.evaluate.lesionwise import (
    DEFAULT_DEFINITION,
    DEFINITIONS,
    LESION_VOLUME_THRESHOLD,
    MISSED_HD95,
    CaseResult,
    LesionRecord,
    RegionResult,
    evaluate_labels,
)
from glioseg.evaluate.surface import hd95, robust_hausdorff, surface_distances

__all__ = [
    "DEFAULT_DEFINITION",
    "DEFINITIONS",
    "LESION_VOLUME_THRESHOLD",
    "MISSED_HD95",
    "CaseResult",
    "LesionRecord",
    "RegionResult",
    "evaluate_labels",
    "hd95",
    "robust_hausdorff",
    "surface_distances",
]
