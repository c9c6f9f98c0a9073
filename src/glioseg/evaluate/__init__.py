"""BraTS lesion-wise evaluation (``brats2024-ssa`` and ``brats2023`` definitions), exact and fast.

* :func:`evaluate_labels` scores two label arrays;
* :func:`evaluate` pairs prediction and ground-truth files or folders by case ID and scores
  them (in parallel with ``jobs``), :func:`write_outputs` writes the CSV / JSON tables.

See ``docs/evaluation.md`` for the definitions and the parity check against the official
challenge scripts.
"""

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
from glioseg.evaluate.matching import Matching, Pair, match_cases
from glioseg.evaluate.runner import (
    CaseFailure,
    EvaluationRun,
    evaluate,
    evaluate_pair,
    load_checked_pair,
    read_labels,
    summarize,
    write_outputs,
)
from glioseg.evaluate.surface import hd95, robust_hausdorff, surface_distances

__all__ = [
    "DEFAULT_DEFINITION",
    "DEFINITIONS",
    "LESION_VOLUME_THRESHOLD",
    "MISSED_HD95",
    "CaseFailure",
    "CaseResult",
    "EvaluationRun",
    "LesionRecord",
    "Matching",
    "Pair",
    "RegionResult",
    "evaluate",
    "evaluate_labels",
    "evaluate_pair",
    "hd95",
    "load_checked_pair",
    "match_cases",
    "read_labels",
    "robust_hausdorff",
    "summarize",
    "surface_distances",
    "write_outputs",
]
