"""Synthetic BraTS-like data: MNI152 anatomy, glioma phantoms, ``adult`` and ``ssa`` domains."""

from glioseg.data.synthetic.degrade import LowQualityProfile, degrade_low_quality
from glioseg.data.synthetic.generate import (
    BRATS_SHAPE,
    DOMAINS,
    SyntheticCase,
    case_id_for,
    generate_case,
    generate_cohort,
    write_case,
)

__all__ = [
    "BRATS_SHAPE",
    "DOMAINS",
    "LowQualityProfile",
    "SyntheticCase",
    "case_id_for",
    "degrade_low_quality",
    "generate_case",
    "generate_cohort",
    "write_case",
]
