"""Radiomic features of the whole tumour: shape, first-order, GLCM texture, image quality.

A focused, dependency-light re-implementation (NumPy, SciPy, scikit-image, cc3d) of the
pyradiomics features the seed paper's fold stratification uses; pyradiomics itself does
not install on current Python.  See ``docs/transfer.md`` for every definition.
"""

from glioseg.data.radiomics.extract import (
    ID_COLUMNS,
    CohortFeatures,
    FeatureRow,
    brain_mask,
    case_features,
    cohort_features,
    feature_names,
    find_label_file,
    iter_case_features,
    zscore_in_brain,
)
from glioseg.data.radiomics.firstorder import DEFAULT_BIN_WIDTH, FIRSTORDER_FEATURES, firstorder_features
from glioseg.data.radiomics.quality import QUALITY_FEATURES, quality_features
from glioseg.data.radiomics.shape import SHAPE_FEATURES, largest_component, shape_features
from glioseg.data.radiomics.texture import DEFAULT_LEVELS, GLCM_FEATURES, glcm_features, quantise

__all__ = [
    "DEFAULT_BIN_WIDTH",
    "DEFAULT_LEVELS",
    "FIRSTORDER_FEATURES",
    "GLCM_FEATURES",
    "ID_COLUMNS",
    "QUALITY_FEATURES",
    "SHAPE_FEATURES",
    "CohortFeatures",
    "FeatureRow",
    "brain_mask",
    "case_features",
    "cohort_features",
    "feature_names",
    "find_label_file",
    "firstorder_features",
    "glcm_features",
    "iter_case_features",
    "largest_component",
    "quality_features",
    "quantise",
    "shape_features",
    "zscore_in_brain",
]
