"""Adaptive post-processing of label maps, tuned for the BraTS lesion-wise metrics.

* :mod:`.operations`: remove small components, keep the largest, redefine a label by volume ratio;
* :mod:`.config`: :class:`PostprocessConfig` (JSON), the ordered operations, optionally per radiomic cluster;
* :mod:`.tune`: the grid search on out-of-fold predictions (``glioseg postprocess tune``), built on
  :mod:`.grid` (the settings tried), :mod:`.scoring` (a case's scores under every setting) and
  :mod:`.selection` (the selection rule and paired statistics).

See ``docs/postprocessing.md``.
"""

from glioseg.postprocess.config import (
    Operation,
    PostprocessConfig,
    apply_operations,
    make_postprocessor,
)
from glioseg.postprocess.operations import (
    DEFAULT_FILL,
    TARGET_LABELS,
    components,
    keep_largest_components,
    redefine_label,
    remove_small_components,
    target_mask,
)

__all__ = [
    "DEFAULT_FILL",
    "TARGET_LABELS",
    "Operation",
    "PostprocessConfig",
    "apply_operations",
    "components",
    "keep_largest_components",
    "make_postprocessor",
    "redefine_label",
    "remove_small_components",
    "target_mask",
]
