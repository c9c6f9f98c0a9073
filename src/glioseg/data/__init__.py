"""Data layer: case discovery, validation, NIfTI I/O, label conventions, synthetic cases."""

from glioseg.data.cases import Case, CaseData, DiscoveryResult, discover_cases, load_case
from glioseg.data.io import load_label, load_volume, save_nifti
from glioseg.data.labels import (
    REGION_LABELS,
    REGIONS,
    labels_to_regions,
    probabilities_to_labels,
    regions_to_labels,
    to_canonical,
)
from glioseg.data.modalities import MODALITIES

__all__ = [
    "MODALITIES",
    "REGIONS",
    "REGION_LABELS",
    "Case",
    "CaseData",
    "DiscoveryResult",
    "discover_cases",
    "labels_to_regions",
    "load_case",
    "load_label",
    "load_volume",
    "probabilities_to_labels",
    "regions_to_labels",
    "save_nifti",
    "to_canonical",
]
